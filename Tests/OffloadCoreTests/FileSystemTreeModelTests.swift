import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix

/// `FileSystemTree` against `FileSystemModel`: random operations as a namespace would
/// journal them (creates, hard links, renames, unlinks with drops and orphans, xattrs
/// inline and chunked, symlink targets of one and several parts, writes of image, fill,
/// hole and RAM pieces, truncates), some of them invalid and to be refused with nothing
/// changed, commits and reopening at the committed root. After every operation everything
/// the model holds must read back the same, nothing must remain of dropped inodes, and the
/// block references the tree reported must equal what its image extents hold.
/// Hashes keep 4 bits, so names and xattrs share hash items all the time.
/// Replay one seed with `OFFLOADFS_FSTREE_SEED=N`.
final class FileSystemTreeModelTests: XCTestCase {
    final class Harness {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let hashes = ItemHashes.weakened(SipHash24(key0: 7, key1: 11), bits: 4)
        var fs: FileSystemTree
        let script: NamespaceChangeScript
        var model: FileSystemModel {
            get { script.model }
            set { script.model = newValue }
        }
        var references = ReportedReferences()
        var generation: UInt64 = 0
        var history: [String] = []
        let seed: UInt64
        var refused = 0, commits = 0, reopened = 0

        init(seed: UInt64) throws {
            self.seed = seed
            script = NamespaceChangeScript(seed: seed, refusals: true)
            fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 5, treeID: 1, root: nil), hashes: hashes)
            script.perform = { [unowned self] changes, what in try self.perform(changes, what) }
            try script.makeRoot()
        }

        func fail(_ message: String) throws -> Never {
            throw failSeed(seed, message, history: history, replay: "OFFLOADFS_FSTREE_SEED")
        }

        func step() throws {
            switch Int.random(in: 0..<20, using: &script.random) {
            case 0..<16: try script.step()
            case 16..<19: try commit(reopen: Int.random(in: 0..<3, using: &script.random) == 0)
            default: try check()
            }
        }

        /// Applies one operation's changes to the tree and the model; a change the model
        /// says is invalid must be refused with its error and change nothing.
        func perform(_ changes: [JournalChange], _ what: String) throws {
            history.append(what)
            for change in changes {
                if let expected = model.refusal(of: change) {
                    do {
                        try fs.apply(change)
                        try fail("\(change) was applied; expected \(expected)")
                    } catch let error as FSError {
                        guard Self.sameCase(error, expected) else { try fail("\(change) threw \(error), expected \(expected)") }
                        refused += 1
                    }
                    continue
                }
                do {
                    try fs.apply(change)
                } catch {
                    try fail("\(change) threw \(error)")
                }
                model.apply(change)
            }
            if let problem = references.apply(fs.takeReferenceChanges()) { try fail(problem) }
        }

        static func sameCase(_ a: FSError, _ b: FSError) -> Bool {
            switch (a, b) {
            case (.invalidArgument, .invalidArgument): return true
            default: return a == b
            }
        }

        func commit(reopen: Bool) throws {
            generation += 1
            let commit = try fs.tree.commit(generation: generation)
            pages.releasePages(commit.freedBlocks)
            commits += 1
            _ = try fs.tree.check()
            if reopen {
                fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 5, treeID: 1, root: commit.root), hashes: hashes)
                reopened += 1
            }
            history.append("commit \(generation)\(reopen ? " and reopen" : "")")
        }

        // MARK: - Checking the tree against the model

        func check() throws {
            if !pages.violations.isEmpty { try fail("page store violations: \(pages.violations)") }
            if let mismatch = try model.mismatch(in: fs, absent: script.name() + [UInt8(ascii: "q")]) { try fail(mismatch) }
            if let mismatch = try model.treeMismatch(in: fs, references: references.counts) { try fail(mismatch) }
            for inode in model.dropped where try fs.hasItems(inode) { try fail("dropped inode \(inode) has items left") }
        }
    }

    func testRandomChangesReadBackAsThePlainModelHasThem() throws {
        let run = ModelRun(prefix: "OFFLOADFS_FSTREE", defaultSeeds: 5, defaultOperations: 1_200)
        var totals = (refused: 0, commits: 0, reopened: 0, chunked: 0, targets: 0, writes: 0, levels: 0, replacing: 0)
        for seed in run.seeds {
            let harness = try Harness(seed: seed)
            for operation in 0..<run.operations {
                try harness.step()
                if operation % 10 == 0 { try harness.check() }
            }
            try harness.commit(reopen: true)
            try harness.check()
            totals.refused += harness.refused
            totals.commits += harness.commits
            totals.reopened += harness.reopened
            totals.chunked += harness.script.chunked
            totals.targets += harness.script.multipartTargets
            totals.writes += harness.script.writes
            totals.replacing += harness.script.replacingRenames
            totals.levels = max(totals.levels, Int(harness.fs.tree.committedRoot?.level ?? 0))
        }
        // The run reached what it is meant to test.
        if !run.customized {
            XCTAssertGreaterThan(totals.refused, 50)
            XCTAssertGreaterThan(totals.reopened, 20)
            XCTAssertGreaterThan(totals.chunked, 100)
            XCTAssertGreaterThan(totals.targets, 10)
            XCTAssertGreaterThan(totals.writes, 500)
            XCTAssertGreaterThan(totals.replacing, 30, "renames never replaced a name")
            XCTAssertGreaterThanOrEqual(totals.levels, 1, "the trees never grew past one leaf")
        }
    }
}
