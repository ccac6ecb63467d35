// offloadfs-bench: how the extent engine's cost grows with the number of extents;
// with `--tree`, the metadata tree engine's (TreeBench.swift); with `--volume`, format 2's
// image engine at scale (VolumeBench.swift); with `--upgrade`, the version 1 upgrade and
// format 2's check at scale (UpgradeBench.swift); with `--namespace-reads`, format 2's
// namespace lookups on one and two threads and their latency under creates and commits
// (NamespaceReadsBench.swift); with `--namespace-ops`, the daemon's CPU an operation on
// format 2 against format 1, in-process (NamespaceOpsBench.swift).
//
// Run with `scripts/bench-core` (release build). Prints a Markdown table for
// docs/BENCHMARKS.md. Not a test: it asserts nothing, it measures.
import Foundation
import OffloadCore
import SplitMix

let blockSize = 4096

/// Nanoseconds of monotonic time.
@inline(__always) func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}


// Images go to tmpfs (/dev/shm) unless OFFLOADFS_BENCH_DIR says otherwise: this measures
// the engine, and disk writeback would only add noise.
let benchRoot = ProcessInfo.processInfo.environment["OFFLOADFS_BENCH_DIR"] ?? "/dev/shm"
let directory = URL(fileURLWithPath: benchRoot).appendingPathComponent("offloadfs-bench-\(getpid())")
try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
/// Ends the run: the images' folder goes first (a top-level `defer` does not run at
/// `exit`, and each early exit below left an empty folder in /dev/shm).
func finish() -> Never {
    try? FileManager.default.removeItem(at: directory)
    exit(0)
}
defer { try? FileManager.default.removeItem(at: directory) }
var imageNumber = 0
@MainActor func makeStore(_ capacity: UInt64) throws -> BackingStore {
    imageNumber += 1
    return try BackingStore(path: directory.appendingPathComponent("image\(imageNumber)").path, capacityBytes: capacity)
}
let limiter = MemoryLimiter(limitBytes: 0)

func format(_ ns: Double) -> String { String(format: "%.0f ns", ns) }

if CommandLine.arguments.contains("--tree") {
    try runTreeBenchmark(directory: directory)
    finish()
}

if CommandLine.arguments.contains("--upgrade") {
    let sizes = CommandLine.arguments.firstIndex(of: "--upgrade-sizes").map { CommandLine.arguments[$0 + 1] }
        .map { $0.split(separator: ",").compactMap { Int($0) } } ?? [10_000, 1_000_000]
    try runUpgradeBenchmark(sizes: sizes)
    finish()
}

if CommandLine.arguments.contains("--namespace-reads") {
    let files = CommandLine.arguments.firstIndex(of: "--namespace-files").flatMap { Int(CommandLine.arguments[$0 + 1]) } ?? 1_000_000
    try runNamespaceReadsBenchmark(files: files)
    finish()
}

if CommandLine.arguments.contains("--namespace-ops") {
    func option(_ name: String, _ fallback: Int) -> Int {
        CommandLine.arguments.firstIndex(of: name).flatMap { Int(CommandLine.arguments[$0 + 1]) } ?? fallback
    }
    try runNamespaceOpsBenchmark(files: option("--ops-files", 20_000), writes: option("--ops-writes", 100_000),
                                 rounds: option("--ops-rounds", 3))
    finish()
}

if CommandLine.arguments.contains("--volume") {
    let sizes = CommandLine.arguments.firstIndex(of: "--volume-sizes").map { CommandLine.arguments[$0 + 1] }
        .map { $0.split(separator: ",").compactMap { Int($0) } } ?? [10_000, 1_000_000]
    try runVolumeBenchmark(sizes: sizes)
    finish()
}

/// A file of `extentCount` 4 KiB extents. Consecutive extents point at image blocks 7
/// apart in a pool of 1,024 blocks, so no two neighbours merge, and every size touches
/// the same 4 MiB of image: what grows is the extent list, not the working set.
/// The bench keeps its own reference on the pool so every pool block stays usable.
func makeFragmentedFile(extentCount: Int, store: BackingStore) throws -> (OffloadedFile, Range<UInt64>) {
    let pool = try store.allocate(byteCount: 1024 * blockSize)
    var fill = [UInt8](repeating: 0, count: pool.count)
    for i in fill.indices { fill[i] = UInt8(truncatingIfNeeded: i / blockSize) }
    _ = fill.withUnsafeBytes { buffer in
        memcpy(UnsafeMutableRawPointer(mutating: store.bytes(at: pool.lowerBound, count: pool.count).baseAddress!),
               buffer.baseAddress!, pool.count)
    }
    let file = OffloadedFile(store: store, limiter: limiter)
    for i in 0..<extentCount {
        let block = UInt64((i * 7) % 1024)
        let start = pool.lowerBound + block * UInt64(blockSize)
        try file.write(at: UInt64(i * blockSize), imageRange: start..<start + UInt64(blockSize))
    }
    precondition(file.extentCount == extentCount, "extents merged: \(file.extentCount)")
    return (file, pool)
}

func measure(_ operations: Int, _ body: (inout SplitMix64) throws -> Void) rethrows -> Double {
    var rng = SplitMix64(seed: now())
    let start = now()
    for _ in 0..<operations { try body(&rng) }
    return Double(now() - start) / Double(operations)
}

/// Replaces the 4 KiB extent at `index` by another pool block that continues neither
/// neighbour, so the extent count stays the same: the engine's full metadata path
/// (lookup, split, remove, insert, merge checks, reference counts) with no data copy.
func replaceExtent(_ file: OffloadedFile, index: Int, pool: Range<UInt64>) throws {
    let block = UInt64((index * 7 + 3) % 1024)
    let start = pool.lowerBound + block * UInt64(blockSize)
    try file.write(at: UInt64(index * blockSize), imageRange: start..<start + UInt64(blockSize))
}

struct Subject {
    var extentCount: Int
    var file: OffloadedFile
    var pool: Range<UInt64>
    var buildSeconds: Double
    var best: [String: Double] = [:]
}

let sizes = [1_000, 100_000, 1_000_000]
var subjects: [Subject] = []
for extentCount in sizes {
    let store = try makeStore(16 << 30)
    let buildStart = now()
    let (file, pool) = try makeFragmentedFile(extentCount: extentCount, store: store)
    subjects.append(Subject(extentCount: extentCount, file: file, pool: pool,
                            buildSeconds: Double(now() - buildStart) / 1e9))
}

// Sizes take turns, round after round, and each keeps its best round: a compiler on the
// other core slows every size alike instead of whichever happened to run then.
let operations = ["aligned read", "unaligned read", "in-place overwrite", "extent-replacing overwrite"]
let data = [UInt8](repeating: 0xA5, count: blockSize)
var buffer = [UInt8](repeating: 0, count: blockSize)
for _ in 0..<7 {
    for s in subjects.indices {
        let file = subjects[s].file, n = UInt64(subjects[s].extentCount), pool = subjects[s].pool
        let size = n * UInt64(blockSize)
        let perOp: [String: Double] = [
            "aligned read": measure(50_000) { rng in
                _ = buffer.withUnsafeMutableBytes { try! file.read(at: (rng.next() % n) * 4096, into: $0) }
            },
            "unaligned read": measure(50_000) { rng in
                _ = buffer.withUnsafeMutableBytes { try! file.read(at: rng.next() % (size - 4096), into: $0) }
            },
            // Pool blocks are shared by many extents, so bytes cannot be written in place
            // there; the in-place path is measured on a file's own blocks below.
            "extent-replacing overwrite": try measure(50_000) { rng in
                try replaceExtent(file, index: Int(rng.next() % n), pool: pool)
            },
        ]
        for (name, value) in perOp { subjects[s].best[name] = min(subjects[s].best[name] ?? .infinity, value) }
    }
}
for s in subjects { precondition(s.file.extentCount == s.extentCount, "extent count drifted") }

// In-place overwrite: a file that owns its blocks, 4 KiB extents made distinct by
// alternating with fill runs; every write lands inside one exclusive extent.
var inPlace: [Double] = []
var controls: [Double] = []
do {
    let store = try makeStore(16 << 30)
    let files = try sizes.map { count -> OffloadedFile in
        let file = OffloadedFile(store: store, limiter: limiter)
        for i in 0..<count {
            if i % 2 == 0 { try file.write(at: UInt64(i * blockSize), bytes: data) }
            else { try file.resize(to: UInt64((i + 1) * blockSize), fill: 1) }
        }
        precondition(file.extentCount == count)
        return file
    }
    inPlace = files.map { _ in .infinity }
    controls = files.map { _ in .infinity }
    // Control: the same 4 KiB copies into the same image blocks with no engine at all,
    // so the page working set (8 MiB of data at 1,000 extents, 4 GiB at 1,000,000) can
    // be told apart from the engine's own cost.
    let targets = files.map { file in
        file.extentList.compactMap { entry -> UnsafeMutableRawPointer? in
            guard case .mmapOffload(let offset, _) = entry.extent else { return nil }
            return UnsafeMutableRawPointer(mutating: store.bytes(at: offset, count: blockSize).baseAddress!)
        }
    }
    for _ in 0..<7 {
        for (f, file) in files.enumerated() {
            let half = UInt64(file.extentCount / 2)
            inPlace[f] = min(inPlace[f], try measure(50_000) { rng in
                try file.write(at: (rng.next() % half) * 8192, bytes: data)
            })
            let blocks = targets[f]
            controls[f] = min(controls[f], data.withUnsafeBytes { source in
                measure(50_000) { rng in
                    blocks[Int(rng.next() % UInt64(blocks.count))].copyMemory(from: source.baseAddress!, byteCount: blockSize)
                }
            })
        }
    }
    for (f, file) in files.enumerated() { precondition(file.extentCount == sizes[f]) }
}
for i in subjects.indices { subjects[i].best["in-place overwrite"] = inPlace[i] }

print("## Extent engine: cost per 4 KiB operation (release build, best of 7 interleaved rounds)\n")
print("| extents | build (s) | " + operations.joined(separator: " | ") + " |")
print("|---:|---:|" + operations.map { _ in "---:" }.joined(separator: "|") + "|")
for s in subjects {
    print("| \(s.extentCount) | \(String(format: "%.2f", s.buildSeconds)) | "
          + operations.map { format(s.best[$0]!) }.joined(separator: " | ") + " |")
}
let first = subjects.first!, last = subjects.last!
print("| ratio 1,000,000 / 1,000 | | " + operations.map { String(format: "%.2fx", last.best[$0]! / first.best[$0]!) }.joined(separator: " | ") + " |\n")
print("In-place overwrite against its control (a bare 4 KiB memcpy into the same image blocks):\n")
print("| extents | in-place overwrite | bare memcpy (control) | engine's own cost |")
print("|---:|---:|---:|---:|")
for (i, s) in subjects.enumerated() {
    print("| \(s.extentCount) | \(format(inPlace[i])) | \(format(controls[i])) | \(format(inPlace[i] - controls[i])) |")
}
print(String(format: "| ratio 1,000,000 / 1,000 | %.2fx | %.2fx | %.2fx |\n", inPlace[2] / inPlace[0], controls[2] / controls[0],
             (inPlace[2] - controls[2]) / (inPlace[0] - controls[0])))
for s in subjects { s.file.releaseAll() }

// Sequential read: 262,144 appends of 4 KiB versus one 1 GiB write.
if CommandLine.arguments.contains("--scaling-only") { finish() }
let appendCount = 262_144
let total = appendCount * blockSize
let store = try makeStore(4 << 30)
let appended = OffloadedFile(store: store, limiter: limiter)
let chunk = [UInt8](repeating: 0x3C, count: blockSize)
let appendStart = now()
for i in 0..<appendCount { try appended.write(at: UInt64(i * blockSize), bytes: chunk) }
let appendSeconds = Double(now() - appendStart) / 1e9
let whole = OffloadedFile(store: store, limiter: limiter)
let big = [UInt8](repeating: 0x3C, count: total)
let wholeStart = now()
try whole.write(at: 0, bytes: big)
let wholeSeconds = Double(now() - wholeStart) / 1e9

func sequentialRead(_ file: OffloadedFile) -> Double {
    var readBuffer = [UInt8](repeating: 0, count: 1 << 20)
    var best = Double.infinity
    for _ in 0..<3 {
        let start = now()
        var offset: UInt64 = 0
        while offset < file.size {
            offset += UInt64(readBuffer.withUnsafeMutableBytes { try! file.read(at: offset, into: $0) })
        }
        best = min(best, Double(now() - start) / 1e9)
    }
    return best
}
let appendedRead = sequentialRead(appended)
let wholeRead = sequentialRead(whole)
let gib = Double(total) / Double(1 << 30)
print("## Sequential read of 1 GiB in 1 MiB reads (best of 3)\n")
print("| file | built in | extents | read time | throughput |")
print("|---|---:|---:|---:|---:|")
print(String(format: "| 262,144 appends of 4 KiB | %.2f s | %d | %.3f s | %.2f GiB/s |", appendSeconds, appended.extentCount, appendedRead, gib / appendedRead))
print(String(format: "| one 1 GiB write | %.2f s | %d | %.3f s | %.2f GiB/s |", wholeSeconds, whole.extentCount, wholeRead, gib / wholeRead))
print(String(format: "| ratio appends / one write | | | %.2fx | |", appendedRead / wholeRead))
