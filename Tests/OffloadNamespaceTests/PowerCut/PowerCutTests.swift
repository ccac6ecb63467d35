import Foundation
import XCTest
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Power cuts, not only kill -9: the image runs on `CrashSimulatingStorage`, which knows
/// what the last fdatasync made durable. At random moments inside the workload (before
/// any write, reservation, punch, length change or sync of the image: inside checkpoints,
/// commits and syncs too, and format 2's punches on their own queue) it produces several
/// images a power cut could leave (the durable bytes plus a random subset of the pages
/// written since, some torn), and each is recovered and checked:
/// - recovery succeeds (a refusal is a violation; format 1's report says whether repair
///   then opened it, format 2 has no repair);
/// - the tree (names, inodes, attributes, sizes, xattrs, symlink targets) is one the
///   workload passed through between the last completed sync and the cut: everything
///   synced is there, later operations are there or not, each one whole;
/// - every byte of every file is a value that byte held in that span, or zero where it
///   changed in that span: never another file's bytes (`ContentHistory`);
/// - the recovered image, closed, passes the fsck analysis (format 1's `ImageAnalysis`,
///   format 2's `VolumeCheck`);
/// - on format 2, the crash image itself checks clean before recovery, as `offloadfs
///   fsck` checks it (`VolumeCheck.runReplaying`: the journal's tail replayed in memory
///   and the tree it leaves checked), and that check writes nothing.
///
/// The same workload and checks run on both formats (`PowerCutImage`), one test each.
/// `OFFLOADFS_POWERCUT_SEED=N` replays one seed; `OFFLOADFS_POWERCUT_SEEDS=A-B` runs a
/// range (scripts/power-cut-soak). The default run is short.
final class PowerCutTests: XCTestCase {
    static let capacity: UInt64 = 24 << 20
    static let operations = 220

    func testRandomWorkloadsSurvivePowerCutsOnFormat1() throws { try runSeeds(.one) }

    func testRandomWorkloadsSurvivePowerCutsOnFormat2() throws { try runSeeds(.two) }

    private func runSeeds(_ format: ImageFormat) throws {
        var totals = PowerCutRun.Totals()
        for seed in Self.seeds() {
            let run = try PowerCutRun(seed: seed, format: format, capacity: Self.capacity)
            try run.execute(operations: Self.operations)
            totals.add(run.totals)
            if !run.violations.isEmpty {
                XCTFail("format \(format.rawValue) seed \(seed): \(run.violations.count) violations; first:\n\(run.violations[0])\nreplay with OFFLOADFS_POWERCUT_SEED=\(seed)")
            }
        }
        XCTAssertGreaterThan(totals.images, 0, "no crash image was taken")
        print("power-cut format \(format.rawValue): \(totals.cuts) cut points, \(totals.images) crash images, \(totals.refused) refused, \(totals.violations) violations")
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
    let format: ImageFormat
    let storage: CrashSimulatingStorage
    let image: PowerCutImage
    /// The operations the workload runs (`image`'s).
    var fs: any FileSystemOperations { image.operations }
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
    /// `durable` and `states.count` for cuts: format 2 punches the blocks a commit freed on
    /// a queue of its own, whose changes of the image are cut too.
    private let progress = PthreadMutex<(durable: Int, latest: Int)>((0, 1))
    /// Cuts before the workload thread's changes draw from `cutRandom`, the others' (format
    /// 2's punches) from `backgroundCutRandom`: a seed replays its workload's cuts exactly.
    private let cutRandom: PthreadMutex<SplitMix64>
    private let backgroundCutRandom: PthreadMutex<SplitMix64>
    private let workloadThread = pthread_self()

    init(seed: UInt64, format: ImageFormat = .one, capacity: UInt64, cutPercent: UInt64 = 6, imagesPerCut: Int = 3,
         memoryLimit: Int = 64 << 10) throws {
        self.seed = seed
        self.format = format
        self.capacity = capacity
        self.cutPercent = cutPercent
        self.imagesPerCut = imagesPerCut
        storage = CrashSimulatingStorage(maximumBytes: Int(capacity) + (64 << 20))
        image = try PowerCutImage.create(format, storage: storage, capacity: capacity, memoryLimit: memoryLimit)
        cutRandom = PthreadMutex(SplitMix64(seed: seed ^ 0x5EED_C0DE))
        backgroundCutRandom = PthreadMutex(SplitMix64(seed: seed ^ 0xBAC6_C0DE))
        states = [try image.snapshot()]
    }

    /// The random workload, `operations` steps of it.
    func execute(operations: Int) throws {
        var workload = PowerCutWorkload(image: image, seed: seed)
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
            defer {
                image.waitForBackgroundWork()
                storage.beforeChange(nil)
            }
            step = try operation()
        }
        log.append(step.line)
        written.append(step.written)
        if Self.trace { print("op \(states.count): \(step.line)") }
        states.append(try image.snapshot(open: step.open))
        if step.kind == .sync {
            durable = states.count - 1
        } else if storage.syncCount > syncsBefore {
            // A sync inside the operation made at least the state before it durable.
            durable = max(durable, states.count - 2)
        }
        progress.withLock { $0 = (durable, states.count) }
        try checkPendingCuts()
    }

    /// Called before every change of the image: with some chance, takes crash images.
    private func takeCut(_ change: CrashSimulatingStorage.Change) {
        let (durable, latest) = progress.withLock { $0 }
        let background = pthread_equal(pthread_self(), workloadThread) == 0
        if Self.trace { print("  [op \(latest)]\(background ? " (background)" : "") \(change)") }
        let images: [[UInt8]]? = (background ? backgroundCutRandom : cutRandom).withLock { random in
            guard random.next() % 100 < cutPercent else { return nil }
            return (0..<imagesPerCut).map { _ in storage.crashImage(using: &random) }
        }
        guard let images else { return }
        // The operation in progress produces states[latest]; both it and every state back
        // to the last durable one may come back.
        let cut = Cut(images: images, durable: durable, latest: latest, change: change)
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
    private func check(_ crashImage: [UInt8], _ cut: Cut) throws -> String? {
        let span = states[cut.durable...min(cut.latest, states.count - 1)]
        let recovered = CrashSimulatingStorage(maximumBytes: Int(capacity) + (64 << 20), initial: crashImage)
        if let problem = PowerCutImage.checkBeforeRecovery(format, storage: recovered) { return problem }
        let opened: PowerCutImage
        switch PowerCutImage.recover(format, storage: recovered, capacity: capacity) {
        case .opened(let image): opened = image
        case .refused(let violation):
            totals.refused += 1
            return violation
        case .failed(let violation): return violation
        }
        let tree = try opened.snapshot()
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
                    + "\n    recovered extents: \(opened.extents(of: inode))"
                    + "\n    live extents: \(image.extents(of: inode))"
            }
        }
        return try opened.closeAndCheck(recovered)
    }

    /// OFFLOADFS_POWERCUT_TRACE=1 prints every change of the image (with one seed).
    static let trace = ProcessInfo.processInfo.environment["OFFLOADFS_POWERCUT_TRACE"] == "1"
}
