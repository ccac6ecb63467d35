import Foundation
import OffloadCore
import OffloadNamespace
import SplitMix

/// `offloadfs-bench --namespace-ops [--ops-files N] [--ops-writes N] [--ops-rounds R]`: the
/// daemon's own CPU an operation, format 2 against format 1, in-process: the requests the
/// kernel sends for each workload, made on each format's namespace (`MountedImages.open`,
/// a new image on disk in `OFFLOADFS_BENCH_DIR`, else /var/tmp, with the mount's
/// maintenance running), without FUSE and the kernel, whose share is the same for both
/// formats and swings with whatever shares the machine. Issue 11's "no slower than
/// today" row, measured where format 2 differs.
///
/// Workloads (the request sequences `offloadfs status` counts through a mount):
///   - create: LOOKUP (not found), CREATE, FLUSH, RELEASE and GETATTR of the directory,
///     for each of N new files in one directory;
///   - stat: LOOKUP and GETATTR of each file;
///   - unlink: UNLINK of each file, then its FORGET;
///   - copy: what `cp -a` sends for each of N new files of 8 KiB, on a second new image:
///     LOOKUP (not found), CREATE, GETXATTR of security.capability (the kernel asks
///     before a write; none), WRITE, SETXATTR of system.posix_acl_access (the ACL its
///     mode makes), SETATTR (owner and times), FLUSH, RELEASE, GETATTR;
///   - write: 4 KiB writes at random block offsets of a 256 MiB file laid out first and
///     left for longer than a maintenance interval (committed, on format 2), on a third
///     new image (the others closed: their commits done).
/// Per operation: the CPU of the thread making the requests (`CLOCK_THREAD_CPUTIME_ID`:
/// the request path, what a request's latency holds), the process's CPU (every thread,
/// `getrusage`) from the workload's start to 1 s after its end (the maintenance's commits
/// count; format 1's checkpoint, every 5 s or at the close, mostly does not, and neither
/// does its sync), and the wall time of the requests. The formats alternate within each
/// round; the table gives the median over the rounds. Prints one Markdown table.
func runNamespaceOpsBenchmark(files: Int, writes: Int, rounds: Int) throws {
    let (root, directory) = try diskBenchDirectory("namespace-ops")
    defer { try? FileManager.default.removeItem(at: directory) }
    var results: [ImageFormat: [String: [NamespaceOpsSubject.Figures]]] = [:]
    for round in 0..<rounds {
        for format in round % 2 == 0 ? [ImageFormat.one, .two] : [.two, .one] {
            let measured = try NamespaceOpsSubject.measure(format: format, directory: directory, files: files, writes: writes,
                                                           seed: UInt64(round + 1))
            // Each round's figures on stderr, so that a run's spread can be seen.
            let line = NamespaceOpsSubject.workloads.compactMap { (workload, _) -> String? in
                measured[workload].map { "\(workload) \(String(format: "%.1f", $0.requests * 1e6)) us" }
            }
            FileHandle.standardError.write(Data("round \(round + 1), format \(format == .one ? 1 : 2): \(line.joined(separator: ", "))\n".utf8))
            for (workload, figures) in measured { results[format, default: [:]][workload, default: []].append(figures) }
        }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    func micros(_ seconds: Double) -> String { String(format: "%.1f", seconds * 1e6) }
    print("## The daemon's CPU an operation in-process, format 2 against format 1 "
        + "(\(files) files, \(writes) writes, median of \(rounds) rounds, images in \(root))\n")
    print("| workload (requests an operation) | request path, format 1 / format 2 (us) | format 2 / format 1 "
        + "| whole process with 1 s after, format 1 / format 2 (us) | format 2 / format 1 | wall, format 1 / format 2 (us) |")
    print("|---|---:|---:|---:|---:|---:|")
    for (workload, label) in NamespaceOpsSubject.workloads {
        guard let one = results[.one]?[workload], let two = results[.two]?[workload] else { continue }
        let request1 = median(one.map(\.requests)), request2 = median(two.map(\.requests))
        let process1 = median(one.map(\.process)), process2 = median(two.map(\.process))
        print("| \(label) | \(micros(request1)) / \(micros(request2)) | \(String(format: "%.2f", request2 / request1)) "
            + "| \(micros(process1)) / \(micros(process2)) | \(String(format: "%.2f", process2 / process1)) "
            + "| \(micros(median(one.map(\.wall)))) / \(micros(median(two.map(\.wall)))) |")
    }
}

/// One format's namespace under measurement.
enum NamespaceOpsSubject {
    static let workloads = [
        ("create", "create: LOOKUP, CREATE, FLUSH, RELEASE, GETATTR of the directory"),
        ("stat", "stat: LOOKUP, GETATTR"),
        ("unlink", "unlink: UNLINK, FORGET"),
        ("copy", "copy: LOOKUP, CREATE, GETXATTR, WRITE 8 KiB, SETXATTR, SETATTR, FLUSH, RELEASE, GETATTR"),
        ("write", "write 4 KiB at a random offset of a 256 MiB file"),
    ]

    /// The figures of each workload on a new image of `format`.
    /// Seconds an operation: the CPU of the thread making the requests (the request
    /// path), the process's CPU over the workload and the second after it (every thread:
    /// the maintenance's commits too), and the wall time of the requests.
    struct Figures {
        var requests: Double
        var process: Double
        var wall: Double
    }

    /// Images go to `directory` (each opened `fresh`: a round starts over the last one's).
    static func measure(format: ImageFormat, directory: URL, files: Int, writes: Int,
                        seed: UInt64) throws -> [String: Figures] {
        func mounted(_ name: String) throws -> any MountedImage {
            let image = try MountedImages.open(path: directory.appendingPathComponent(name).path,
                                               capacity: .set(4 << 30), fresh: true, newFormat: format,
                                               memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
            image.startMaintenance(interval: 5, journalBytes: nil, onWrite: nil, onError: { _ in })
            return image
        }
        var image = try mounted("names")
        var fs = image.operations
        var figures: [String: Figures] = [:]
        func timed(_ workload: String, operations: Int, _ body: () throws -> Void) throws {
            let cpu = processCPUSeconds(), thread = threadCPUSeconds(), started = now()
            try body()
            let wall = Double(now() - started) / 1e9, requests = threadCPUSeconds() - thread
            Thread.sleep(forTimeInterval: 1)
            let count = Double(operations)
            figures[workload] = Figures(requests: requests / count, process: (processCPUSeconds() - cpu) / count,
                                        wall: wall / count)
        }

        let parent = try fs.mkdir(parent: .root, name: FileName("files"), mode: 0o755, context: .root).inode
        let names = try (0..<files).map { try FileName(String(format: "f%07d", $0)) }
        var inodes: [InodeNumber] = []
        inodes.reserveCapacity(files)
        try timed("create", operations: files) {
            for name in names {
                let (attributes, handle) = try lookUpAndCreate(fs, parent, name)
                try fs.flush(inode: attributes.inode, handle: handle)
                fs.release(inode: attributes.inode, handle: handle)
                _ = try fs.getattr(inode: parent)
                inodes.append(attributes.inode)
            }
        }
        try timed("stat", operations: files) {
            for name in names {
                let attributes = try fs.lookup(parent: parent, name: name)
                _ = try fs.getattr(inode: attributes.inode)
            }
        }
        // Each file's kernel references: one from its CREATE, one from its LOOKUP above.
        try timed("unlink", operations: files) {
            for (name, inode) in zip(names, inodes) {
                try fs.unlink(parent: parent, name: name)
                fs.forget(inode: inode, lookups: 2)
            }
        }

        // The copy on an image of its own, as the writes below: the commits of the removes
        // (every file's drop, over several commits on format 2) would run on into it.
        try image.close(meter: nil)
        image = try mounted("copies")
        fs = image.operations
        let copies = try fs.mkdir(parent: .root, name: FileName("copies"), mode: 0o755, context: .root).inode
        let contents = [UInt8](repeating: 0x3c, count: 8 << 10)
        // A file's ACL as its mode 0644 makes it: the version, then user::rw-, group::r--, other::r--.
        var acl: [UInt8] = [2, 0, 0, 0]
        for (tag, permissions) in [(0x01, 6), (0x04, 4), (0x20, 4)] as [(UInt16, UInt16)] {
            acl += [UInt8(tag & 0xff), UInt8(tag >> 8), UInt8(permissions), 0, 0xff, 0xff, 0xff, 0xff]
        }
        let capability = Array("security.capability".utf8), aclName = Array("system.posix_acl_access".utf8)
        let stamp = AttributeChanges(uid: 0, gid: 0, accessTime: .set(Timestamp(seconds: 1_700_000_000, nanoseconds: 0)),
                                     modificationTime: .set(Timestamp(seconds: 1_700_000_000, nanoseconds: 0)))
        try timed("copy", operations: files) {
            for name in names {
                let (attributes, handle) = try lookUpAndCreate(fs, copies, name)
                do throws(FSError) {
                    _ = try fs.getxattr(inode: attributes.inode, name: capability)
                } catch .noAttribute {}
                _ = try contents.withUnsafeBytes { bytes in
                    try fs.write(inode: attributes.inode, handle: handle, offset: 0, data: bytes)
                }
                try fs.setxattr(inode: attributes.inode, name: aclName, value: acl, mode: .createOrReplace)
                _ = try fs.setattr(inode: attributes.inode, changes: stamp, context: .root)
                try fs.flush(inode: attributes.inode, handle: handle)
                fs.release(inode: attributes.inode, handle: handle)
                _ = try fs.getattr(inode: attributes.inode)
            }
        }

        // The writes on an image of their own: the commits of the removes above (drops
        // of every file, over several commits on format 2) ran on into the writes, and
        // made format 2's write figure vary from 7.6 to 19.6 us between runs at 20,000
        // files; so would the copy's commits.
        try image.close(meter: nil)
        image = try mounted("data")
        fs = image.operations
        let fileBytes = 256 << 20
        let (file, handle) = try fs.create(parent: .root, name: FileName("data"), mode: 0o644, flags: O_RDWR | O_CREAT,
                                           context: .root)
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        for offset in stride(from: 0, to: fileBytes, by: chunk.count) {
            _ = try chunk.withUnsafeBytes { bytes in
                try fs.write(inode: file.inode, handle: handle, offset: UInt64(offset), data: bytes)
            }
        }
        // Longer than the maintenance's interval (5 s), so that a tick has committed the
        // layout (format 2) or synced it (format 1) before the writes, as in a mount whose
        // file was written earlier.
        Thread.sleep(forTimeInterval: 6)
        var rng = SplitMix64(seed: seed)
        let block = [UInt8](repeating: 0xa5, count: 4096)
        try timed("write", operations: writes) {
            for _ in 0..<writes {
                let offset = (rng.next() % UInt64(fileBytes / 4096)) * 4096
                _ = try block.withUnsafeBytes { bytes in
                    try fs.write(inode: file.inode, handle: handle, offset: offset, data: bytes)
                }
            }
        }
        fs.release(inode: file.inode, handle: handle)
        try image.close(meter: nil)
        return figures
    }

    /// What the kernel sends for a new file: a LOOKUP that finds nothing, then CREATE.
    static func lookUpAndCreate(_ fs: any FileSystemOperations, _ parent: InodeNumber,
                                _ name: FileName) throws(FSError) -> (attributes: Attributes, handle: OffloadNamespace.FileHandle) {
        do throws(FSError) {
            _ = try fs.lookup(parent: parent, name: name)
        } catch .notFound {}
        return try fs.create(parent: parent, name: name, mode: 0o644, flags: O_WRONLY | O_CREAT | O_EXCL, context: .root)
    }

    /// CPU seconds the process has used, every thread (user and system).
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// CPU seconds the calling thread has used.
    static func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
