import Foundation
import OffloadCore
import OffloadImageGenerator
import OffloadNamespace
import SplitMix

/// `offloadfs-bench --namespace-reads [--namespace-files N]`: format 2's namespace
/// (`VolumeNamespace`) in-process, without FUSE and the kernel's caches, on an image of N
/// files (default 1,000,000; bench-scale's layout, 1,000 files a directory) on disk
/// (`OFFLOADFS_BENCH_DIR`, else /var/tmp), opened as a mount opens it. What a stat of a
/// file the kernel has not cached costs the daemon: a lookup of the file's name in its
/// directory, then the FORGET of that reference.
///   - lookups a second on one thread and on two at once (the namespace lock serialises
///     them when reads hold it alone; this machine has two cores);
///   - the latency of those lookups on one thread, idle, and while another thread creates
///     files at a steady 2,000 a second in a directory of its own and a third runs the
///     maintenance's commit every 0.2 s (bench-scale's stat latency phases, in-process):
///     p50, p99, p99.9 and max, and the loaded p99.9 as a multiple of the idle one.
/// Prints one Markdown table.
func runNamespaceReadsBenchmark(files: Int) throws {
    let (root, directory) = try diskBenchDirectory("namespace-reads")
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("image").path
    let layout = GeneratedLayout(files: files, filesPerDirectory: 1000)
    var rng = SplitMix64(seed: UInt64(files))
    try FormatTwoImage.make(path: path, layout: layout, capacityBytes: FormatTwoImage.defaultCapacity(files: files),
                            imageID: 1 + rng.next() % 1_000_000, nameHashKey: SipHash24(key0: rng.next(), key1: rng.next()))
    let fileSystem = try VolumeFileSystem.open(storage: try FileImageStorage(path: path), capacity: .kept(default: 0),
                                               memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
    let namespace = fileSystem.namespace
    // The directories' inodes, looked up once (the kernel keeps its dentries for them).
    var directories: [String: InodeNumber] = [:]
    for index in stride(from: 0, to: files, by: 1000) {
        let name = layout.location(ofFile: index).directory
        directories[name] = try namespace.lookup(parent: .root, name: FileName(name)).inode
    }
    let subject = NamespaceReadsSubject(namespace: namespace, layout: layout, files: files, directories: directories)

    let single = try subject.lookupRate(threads: 1, seconds: 2)
    let double = try subject.lookupRate(threads: 2, seconds: 2)
    let idle = try subject.latencies(seconds: 4, loaded: false)
    let loaded = try subject.latencies(seconds: 4, loaded: true)
    try fileSystem.close(meter: nil)

    func micros(_ nanoseconds: UInt64) -> String { String(format: "%.1f", Double(nanoseconds) / 1000) }
    print("## Format 2 namespace reads in-process (\(files) files, release build, image in \(root))\n")
    print("| lookups/s, 1 thread | lookups/s, 2 threads | 2 threads / 1 | latency idle p50 / p99 / p99.9 / max (us) | under creates and commits p50 / p99 / p99.9 / max (us) | loaded p99.9 / idle p99.9 | creates, commits meanwhile |")
    print("|---:|---:|---:|---|---|---:|---|")
    print("| \(Int(single)) | \(Int(double)) | \(String(format: "%.2f", double / single)) "
        + "| \(idle.percentiles.map(micros).joined(separator: " / ")) "
        + "| \(loaded.percentiles.map(micros).joined(separator: " / ")) "
        + "| \(String(format: "%.2f", Double(loaded.percentiles[2]) / Double(idle.percentiles[2])))x "
        + "| \(loaded.creates) creates, \(loaded.commits) commits |")
}

/// The namespace under measurement and how to name its files.
final class NamespaceReadsSubject: @unchecked Sendable {
    // @unchecked: the namespace is thread-safe; the rest is read only.
    let namespace: VolumeNamespace
    let layout: GeneratedLayout
    let files: Int
    let directories: [String: InodeNumber]

    init(namespace: VolumeNamespace, layout: GeneratedLayout, files: Int, directories: [String: InodeNumber]) {
        self.namespace = namespace
        self.layout = layout
        self.files = files
        self.directories = directories
    }

    /// One stat's work for the daemon: the lookup of a random file and its FORGET.
    @inline(__always)
    func lookupOne(_ rng: inout SplitMix64) throws {
        let (directory, name) = layout.location(ofFile: Int(rng.next() % UInt64(files)))
        let found = try namespace.lookup(parent: directories[directory]!, name: FileName(name))
        namespace.forget(inode: found.inode, lookups: 1)
    }

    /// Lookups a second over `threads` threads for `seconds`.
    func lookupRate(threads: Int, seconds: Double) throws -> Double {
        let counts = PthreadMutex([Int]())
        let failure = PthreadMutex<String?>(nil)
        let start = now(), deadline = start + UInt64(seconds * 1e9)
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            var rng = SplitMix64(seed: UInt64(thread + 1) &* 0x9E37_79B9)
            var done = 0
            do {
                while now() < deadline {
                    for _ in 0..<64 { try lookupOne(&rng) }
                    done += 64
                }
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
            counts.withLock { $0.append(done) }
        }
        if let message = failure.withLock({ $0 }) { throw FSError.io("lookup failed: \(message)") }
        return Double(counts.withLock { $0.reduce(0, +) }) / (Double(now() - start) / 1e9)
    }

    /// Lookup latencies on this thread for `seconds`; loaded: with a creating thread and
    /// a committing thread meanwhile.
    func latencies(seconds: Double, loaded: Bool) throws -> (percentiles: [UInt64], creates: Int, commits: Int) {
        let stop = PthreadMutex(false)
        let made = PthreadMutex((creates: 0, commits: 0))
        let group = DispatchGroup()
        if loaded {
            let parent = try namespace.mkdir(parent: .root, name: FileName("load-\(now())"), mode: 0o755,
                                             context: RequestContext(uid: 0, gid: 0))
            DispatchQueue.global().async(group: group) { [namespace] in
                let start = now()
                var count = 0
                while !stop.withLock({ $0 }) {
                    guard let (attributes, handle) = try? namespace.create(
                        parent: parent.inode, name: FileName("l\(count)"), mode: 0o644, flags: O_CREAT | O_WRONLY,
                        context: RequestContext(uid: 0, gid: 0)) else { break }
                    namespace.release(inode: attributes.inode, handle: handle)
                    namespace.forget(inode: attributes.inode, lookups: 1)
                    count += 1
                    let due = start + UInt64(count) * 500_000  // 2,000 a second
                    let current = now()
                    if due > current { usleep(UInt32((due - current) / 1000)) }
                }
                made.withLock { $0.creates = count }
            }
            DispatchQueue.global().async(group: group) { [namespace] in
                var count = 0
                while !stop.withLock({ $0 }) {
                    usleep(200_000)
                    if (try? namespace.commitIfChanged()) != nil { count += 1 }
                }
                made.withLock { $0.commits = count }
            }
            usleep(500_000)  // the load settles
        }
        var samples: [UInt64] = []
        samples.reserveCapacity(1 << 20)
        var rng = SplitMix64(seed: loaded ? 2 : 1)
        let deadline = now() + UInt64(seconds * 1e9)
        while true {
            let before = now()
            if before > deadline { break }
            try lookupOne(&rng)
            samples.append(now() - before)
        }
        stop.withLock { $0 = true }
        group.wait()
        samples.sort()
        let pick = { (q: Double) in samples[min(samples.count - 1, Int((q * Double(samples.count)).rounded(.up)) - 1)] }
        let counts = made.withLock { $0 }
        return ([pick(0.5), pick(0.99), pick(0.999), samples.last ?? 0], counts.creates, counts.commits)
    }
}
