import Foundation
import XCTest
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Power cuts, not only kill -9: the image runs on `CrashSimulatingStorage`, which knows
/// what the last fdatasync made durable. At random moments inside the workload (before
/// any write, reservation, punch, length change or sync of the image: inside checkpoints
/// and syncs too) it produces several images a power cut could leave (the durable bytes
/// plus a random subset of the pages written since, some torn), and each is recovered
/// and checked:
/// - recovery succeeds (or refuses, and repair then gives a filesystem that opens);
/// - the tree (names, inodes, attributes, sizes, xattrs, symlink targets) is one the
///   workload passed through between the last completed sync and the cut: everything
///   synced is there, later operations are there or not, each one whole;
/// - every byte of every file is a value that byte held in that span, or zero where it
///   changed in that span: never another file's bytes (`ContentHistory`);
/// - the recovered image, closed, passes the fsck analysis.
///
/// `OFFLOADFS_POWERCUT_SEED=N` replays one seed; `OFFLOADFS_POWERCUT_SEEDS=A-B` runs a
/// range (scripts/power-cut-soak). The default run is short.
final class PowerCutTests: XCTestCase {
    static let capacity: UInt64 = 24 << 20
    static let operations = 220

    func testRandomWorkloadsSurvivePowerCuts() throws {
        var totals = PowerCutRun.Totals()
        for seed in Self.seeds() {
            let run = try PowerCutRun(seed: seed, capacity: Self.capacity)
            try run.execute(operations: Self.operations)
            totals.add(run.totals)
            if !run.violations.isEmpty {
                XCTFail("seed \(seed): \(run.violations.count) violations; first:\n\(run.violations[0])\nreplay with OFFLOADFS_POWERCUT_SEED=\(seed)")
            }
        }
        print("power-cut: \(totals.cuts) cut points, \(totals.images) crash images, \(totals.refused) refused then repaired, \(totals.violations) violations")
    }

    static func seeds() -> [UInt64] {
        let environment = ProcessInfo.processInfo.environment
        if let one = environment["OFFLOADFS_POWERCUT_SEED"].flatMap(UInt64.init) { return [one] }
        if let range = environment["OFFLOADFS_POWERCUT_SEEDS"] {
            let bounds = range.split(separator: "-").compactMap { UInt64($0) }
            if bounds.count == 2, bounds[0] <= bounds[1] { return Array(bounds[0]...bounds[1]) }
        }
        return [1, 2, 3, 4]
    }
}

/// One seed of the power-cut test: the workload, its states, and the checks of every
/// crash image taken during it.
final class PowerCutRun: @unchecked Sendable {
    struct Totals {
        var cuts = 0, images = 0, refused = 0, violations = 0
        mutating func add(_ other: Totals) {
            cuts += other.cuts; images += other.images; refused += other.refused; violations += other.violations
        }
    }

    /// Crash images taken at one cut, with the span of states that may come back.
    struct Cut {
        var images: [[UInt8]]
        var durable: Int
        var latest: Int
        var change: CrashSimulatingStorage.Change
    }

    let seed: UInt64
    let capacity: UInt64
    /// Chance in percent that a change of the image is preceded by a cut, and the crash
    /// images taken at each cut.
    let cutPercent: UInt64
    let imagesPerCut: Int
    let storage: CrashSimulatingStorage
    let fileSystem: ImageFileSystem
    private(set) var totals = Totals()
    private(set) var violations: [String] = []
    /// The tree after each operation; `states[0]` is the empty filesystem.
    private var states: [TreeSnapshot] = []
    /// `states[durable]` and everything before it is known durable.
    private var durable = 0
    private var log: [String] = []
    /// `written[k]`: the file range operation k wrote (k >= 1), if any.
    private var written: [(inode: UInt64, range: Range<UInt64>)?] = [nil]
    private let pending = PthreadMutex<[Cut]>([])
    private let cutRandom: PthreadMutex<SplitMix64>

    init(seed: UInt64, capacity: UInt64, cutPercent: UInt64 = 6, imagesPerCut: Int = 3, memoryLimit: Int = 64 << 10) throws {
        self.seed = seed
        self.capacity = capacity
        self.cutPercent = cutPercent
        self.imagesPerCut = imagesPerCut
        storage = CrashSimulatingStorage(maximumBytes: Int(capacity) + (64 << 20))
        fileSystem = try ImageFileSystem.open(storage: storage, capacityBytes: capacity,
                                              memoryLimiter: MemoryLimiter(limitBytes: memoryLimit))
        cutRandom = PthreadMutex(SplitMix64(seed: seed ^ 0x5EED_C0DE))
        states = [try TreeSnapshot(fileSystem.namespace)]
    }

    /// The random workload, `operations` steps of it.
    func execute(operations: Int) throws {
        var workload = PowerCutWorkload(fileSystem: fileSystem, seed: seed)
        for _ in 0..<operations {
            try perform { () throws -> Step in
                let (kind, line) = try workload.step()
                return Step(kind: kind, line: line, written: workload.written, open: workload.open.map(\.inode))
            }
            if violations.count > 3 { break }
        }
    }

    /// What one operation was: a sync (fsync, fsyncdir) or not, a line for reports, and
    /// the file range it wrote.
    struct Step {
        var kind: PowerCutWorkload.Kind
        var line: String
        var written: (inode: UInt64, range: Range<UInt64>)? = nil
        /// Files open after the operation: their bytes count even once they have no name.
        var open: [InodeNumber] = []
    }

    /// Runs one operation with cuts armed, records the state it leaves, and checks the
    /// crash images taken during it.
    func perform(armed: Bool = true, _ operation: () throws -> Step) throws {
        if armed { storage.beforeChange { [self] change in takeCut(change) } }
        let syncsBefore = storage.syncCount
        let step: Step
        do {
            defer { storage.beforeChange(nil) }
            step = try operation()
        }
        log.append(step.line)
        written.append(step.written)
        if Self.trace { print("op \(states.count): \(step.line)") }
        states.append(try TreeSnapshot(fileSystem.namespace, open: step.open))
        if step.kind == .sync {
            durable = states.count - 1
        } else if storage.syncCount > syncsBefore {
            // A sync inside the operation made at least the state before it durable.
            durable = max(durable, states.count - 2)
        }
        try checkPendingCuts()
    }

    /// Called before every change of the image: with some chance, takes crash images.
    private func takeCut(_ change: CrashSimulatingStorage.Change) {
        if Self.trace { print("  [op \(states.count)] \(change)") }
        let images: [[UInt8]]? = cutRandom.withLock { random in
            guard random.next() % 100 < cutPercent else { return nil }
            return (0..<imagesPerCut).map { _ in storage.crashImage(using: &random) }
        }
        guard let images else { return }
        // The operation in progress produces states[states.count]; both it and every
        // state back to the last durable one may come back.
        let cut = Cut(images: images, durable: durable, latest: states.count, change: change)
        pending.withLock { $0.append(cut) }
    }

    private func checkPendingCuts() throws {
        let cuts = pending.withLock { cuts -> [Cut] in
            defer { cuts.removeAll() }
            return cuts
        }
        for cut in cuts {
            totals.cuts += 1
            for image in cut.images {
                totals.images += 1
                if let violation = try check(image, cut) {
                    totals.violations += 1
                    let recent = log.suffix(max(1, cut.latest - cut.durable + 2)).joined(separator: "\n    ")
                    violations.append("""
                        cut before a \(cut.change) during operation \(cut.latest), last sync after operation \(cut.durable): \(violation)
                        operations since the sync (last one in progress):
                            \(recent)
                        """)
                }
            }
        }
    }

    /// Recovers one crash image and returns what is wrong with it, or nil.
    private func check(_ image: [UInt8], _ cut: Cut) throws -> String? {
        let span = states[cut.durable...min(cut.latest, states.count - 1)]
        let recovered = CrashSimulatingStorage(maximumBytes: Int(capacity) + (64 << 20), initial: image)
        let opened: ImageFileSystem
        do {
            opened = try ImageFileSystem.open(storage: recovered, capacityBytes: capacity,
                                              memoryLimiter: MemoryLimiter(limitBytes: 64 << 10))
        } catch .damagedImage(let why) {
            totals.refused += 1
            do {
                _ = try ImageFileSystem.open(storage: recovered, capacityBytes: capacity,
                                             memoryLimiter: MemoryLimiter(limitBytes: 64 << 10), repair: true)
                return "recovery refused the image (\(why)); repair opened it"
            } catch {
                return "recovery refused the image (\(why)) and repair failed: \(error)"
            }
        } catch {
            return "recovery failed: \(error)"
        }
        let tree = try TreeSnapshot(opened.namespace)
        guard let match = span.lastIndex(where: { tree.treeDifference(from: $0) == nil }) else {
            let first = tree.treeDifference(from: span.first!) ?? "?"
            let last = tree.treeDifference(from: span.last!) ?? "?"
            return "the recovered tree is none of states \(cut.durable)...\(span.endIndex - 1): against the synced state, \(first); against the latest, \(last)"
        }
        var writes: [UInt64: [Range<UInt64>]] = [:]
        for op in (cut.durable + 1)...min(cut.latest, written.count - 1) {
            if let w = written[op] { writes[w.inode, default: []].append(w.range) }
        }
        let history = ContentHistory(span, written: writes)
        for (inode, bytes) in tree.contents.sorted(by: { $0.key < $1.key }) {
            if let bad = history.unexplainedByte(of: inode, bytes) {
                let path = tree.nodes.first { $0.value.inode == inode }?.key ?? "?"
                return "\(path) (inode \(inode), tree of state \(match)) byte \(bad.offset) is \(bad.value), never written there in the span (allowed: \(bad.allowed.prefix(8)))"
                    + "\n    recovered extents: \(Self.extents(of: inode, in: opened.namespace))"
                    + "\n    live extents: \(Self.extents(of: inode, in: fileSystem.namespace))"
            }
        }
        try opened.close()
        return Self.fsckProblems(recovered)
    }

    /// OFFLOADFS_POWERCUT_TRACE=1 prints every change of the image (with one seed).
    static let trace = ProcessInfo.processInfo.environment["OFFLOADFS_POWERCUT_TRACE"] == "1"

    /// A file's extents, for failure reports.
    static func extents(of inode: UInt64, in fs: Namespace) -> String {
        let file = fs.state.withLock { state -> OffloadedFile? in
            guard let node = try? state.table.inode(InodeNumber(inode)), case .regular(let regular) = node.content else { return nil }
            return regular.data
        }
        guard let file else { return "(gone)" }
        return file.extentList.map { "\($0.offset)+\($0.extent.size):\($0.extent)" }.joined(separator: " ")
    }

    /// What `offloadfs fsck` would report about the closed image, or nil when clean.
    static func fsckProblems(_ storage: CrashSimulatingStorage) -> String? {
        do {
            guard case .image(let superblock, _) = try ImageIdentity.read(storage) else {
                return "fsck: no superblock after close"
            }
            let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length,
                                              read: { storage.readBytes(at: $0, count: $1) })
            let analysis = ImageAnalysis(replay, fileBytes: storage.length)
            return analysis.isClean ? nil : "fsck after recovery: \(analysis.problems.prefix(3).joined(separator: "; "))"
        } catch {
            return "fsck after recovery: \(error)"
        }
    }
}
