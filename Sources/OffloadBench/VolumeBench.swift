import Foundation
import OffloadCore
import OffloadImageGenerator
import SplitMix

/// `offloadfs-bench --volume [--volume-sizes 10000,1000000]`: format 2's image engine
/// (`TreeVolume`: commit slots, block space, filesystem tree, delta, journal) at scale,
/// below the namespace and without FUSE. For each size an image of that many files (the
/// `GeneratedLayout` of scripts/bench-scale: 1,000 files a directory) is bulk-loaded on
/// disk (`OFFLOADFS_BENCH_DIR`, else /var/tmp: the cold column needs a page cache to
/// drop), then opened anew (the slots, the two roots, the journal's replay and a commit)
/// and measured: the process's anonymous memory added by opening, a commit of 100 and
/// one of 100,000 chmods of random files (performed first, journaled; the volume commits
/// by itself every 20,000 changed objects meanwhile, so the second figure is the commit
/// of what is left; the punch an automatic commit started and its own punch, both run
/// after their commits return, are timed apart), and path lookups
/// (the directory's name, the file's name, its inode: what a stat of `dNNNNNN/fNNNNNNNN`
/// asks) warm and after the image's pages left the page cache (the volume closed, so that
/// its mapping lets them go, then posix_fadvise DONTNEED, then a new volume).
func runVolumeBenchmark(sizes: [Int]) throws {
    let (root, directory) = try diskBenchDirectory("volume")
    defer { try? FileManager.default.removeItem(at: directory) }
    print("## Format 2 engine at scale (TreeVolume, release build, images in \(root))\n")
    print("| files | image (MiB) | bulk load (s) | open (ms) | RssAnon added by open (MiB) | commit of 100 chmods (ms) | earlier punch still running (ms) | commit of 100,000 chmods (ms) | its punch, after (ms) | path lookup, warm | path lookup, cold |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for files in sizes {
        let path = directory.appendingPathComponent("volume\(files)").path
        defer { unlink(path) }
        let layout = GeneratedLayout(files: files, filesPerDirectory: 1000)
        let capacity = FormatTwoImage.defaultCapacity(files: files)
        var rng = SplitMix64(seed: UInt64(files))
        let loadStart = now()
        try FormatTwoImage.make(path: path, layout: layout, capacityBytes: capacity, imageID: 1 + rng.next() % 1_000_000,
                                nameHashKey: SipHash24(key0: rng.next(), key1: rng.next()))
        let loadSeconds = Double(now() - loadStart) / 1e9
        let imageMiB = Double(try FileImageStorage(path: path, readOnly: true).diskBytes) / 1048576

        func lookups(_ count: Int, in volume: TreeVolume) throws -> Double {
            let reader = try volume.reader()
            return try measure(count) { rng in
                let (directoryName, name) = layout.location(ofFile: Int(rng.next() % UInt64(files)))
                guard let directory = try reader.lookup(directory: 1, name: Array(directoryName.utf8)),
                      let entry = try reader.lookup(directory: directory.child, name: Array(name.utf8)),
                      try reader.inode(entry.child) != nil else { fatalError("\(directoryName)/\(name) missing") }
            }
        }

        let (openMillis, anonAdded, small, large, warm): (Double, Double, (commit: Double, punch: Double, earlierPunch: Double), (commit: Double, punch: Double, earlierPunch: Double), Double) = try {
            let anonBefore = residentAnonymousBytes()
            let openStart = now()
            let volume = try TreeVolume.open(try FileImageStorage(path: path))
            let openMillis = Double(now() - openStart) / 1e6
            let anonAdded = Double(residentAnonymousBytes() - anonBefore) / 1048576
            let items = GeneratedTreeItems(layout: layout, hashes: volume.filesystem.hashes)

            func chmodAndCommit(_ count: Int) throws -> (commit: Double, punch: Double, earlierPunch: Double) {
                for _ in 0..<count {
                    let inode = items.fileInode(Int(rng.next() % UInt64(files)))
                    // A reader per request: one kept across the commits these start would
                    // keep every node they replace (a reader epoch), as a long read
                    // transaction does.
                    guard var item = try volume.reader().inode(inode) else { fatalError("file inode \(inode) missing") }
                    item.permissions = item.permissions == 0o644 ? 0o600 : 0o644
                    try volume.perform([.attributes(inode: inode, item)])
                }
                // The punch the last automatic commit started, if still running (the
                // commit would wait for it first): timed apart.
                let waitStart = now()
                volume.waitForPunches()
                let start = now()
                try volume.commit()
                let committed = now()
                // Its punch runs after it returns (the next commit waits for it): timed
                // apart, as an unmount that waited for it would.
                volume.waitForPunches()
                return (Double(committed - start) / 1e6, Double(now() - committed) / 1e6, Double(start - waitStart) / 1e6)
            }
            let small = try chmodAndCommit(100)
            let large = try chmodAndCommit(100_000)
            let warm = min(try lookups(100_000, in: volume), try lookups(100_000, in: volume))
            return (openMillis, anonAdded, small, large, warm)
        }()
        // Cold: the volume closed (its mapping gone: the kernel keeps mapped pages in the
        // page cache), the image's pages dropped, a new volume opened.
        try dropFromPageCache(path)
        let reopened = try TreeVolume.open(try FileImageStorage(path: path))
        // Opening's commit starts a punch of the last commit's frees: finished first, so
        // that the lookups do not share the disk with its discards.
        reopened.waitForPunches()
        let cold = try lookups(2_000, in: reopened)
        print("| \(files) | \(String(format: "%.0f", imageMiB)) | \(String(format: "%.2f", loadSeconds)) | \(String(format: "%.1f", openMillis)) | \(String(format: "%.1f", anonAdded)) | \(String(format: "%.1f", small.commit)) | \(String(format: "%.0f", large.earlierPunch)) | \(String(format: "%.0f", large.commit)) | \(String(format: "%.0f", large.punch)) | \(format(warm)) | \(format(cold)) |")
    }
    print("")
}

/// A new folder for the images of a format 2 benchmark, on disk (`OFFLOADFS_BENCH_DIR`,
/// else /var/tmp: cold reads need a page cache to drop); the caller removes it.
func diskBenchDirectory(_ name: String) throws -> (root: String, directory: URL) {
    let root = ProcessInfo.processInfo.environment["OFFLOADFS_BENCH_DIR"] ?? "/var/tmp"
    let directory = URL(fileURLWithPath: root).appendingPathComponent("offloadfs-\(name)-bench-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return (root, directory)
}

/// RssAnon of this process, in bytes (`ProcessMemory`; 0 when /proc cannot be read).
func residentAnonymousBytes() -> UInt64 {
    ProcessMemory.anonymousResidentBytes() ?? 0
}

/// Writes the file's dirty pages back and drops its pages from the page cache.
func dropFromPageCache(_ path: String) throws {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { throw FSError.system(errno: errno, call: "open \(path)") }
    defer { close(fd) }
    fdatasync(fd)
    let rc = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
    guard rc == 0 else { throw FSError.system(errno: rc, call: "posix_fadvise") }
}
