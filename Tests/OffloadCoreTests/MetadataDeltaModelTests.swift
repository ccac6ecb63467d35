import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix

/// The delta (`MetadataDelta`) with its commits and replay, against `FileSystemModel`:
/// random namespace operations join the open generation, record their changes and write a
/// journal frame (encoded and decoded, tagged with the generation); generations are
/// closed (up to three at once, read while later ones change), committed into the tree
/// oldest first, or lost in a crash (before a commit, or with a generation half written
/// into the tree's working copy), after which the tree reopens at the last published
/// root and the journal's frames newer than it are replayed into a new delta. At every
/// check the reads through the layers over the tree must be the model's, and after every
/// commit the tree alone must read as the model once the delta is empty.
/// Replay one seed with `OFFLOADFS_DELTA_SEED=N`.
final class MetadataDeltaModelTests: XCTestCase {
    final class Harness {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let hashes = ItemHashes.weakened(SipHash24(key0: 9, key1: 10), bits: 4)
        let script: NamespaceChangeScript
        let seed: UInt64
        var fs: FileSystemTree
        var delta = MetadataDelta(committedGeneration: 0)
        var committed: (generation: UInt64, root: CopyOnWriteTree.Root?) = (0, nil)
        /// The journal: one frame per operation, its generation and its encoded changes.
        var journal: [(generation: UInt64, payload: [UInt8])] = []
        var history: [String] = []
        var references = ReportedReferences()
        var commits = 0, crashes = 0, halfCommits = 0, replayedFrames = 0, deepestLayers = 0, chunkedDrops = 0
        /// Inodes made and dropped within one generation, which left it (`born`).
        var vanished = 0
        /// The script's next inode number at the last operation: the numbers given out
        /// since are the next operation's `born`, as the namespace passes them.
        var numbered: UInt64 = 2

        init(seed: UInt64) throws {
            self.seed = seed
            script = NamespaceChangeScript(seed: seed, refusals: false)
            fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 6, treeID: 1, root: nil), hashes: hashes)
            script.perform = { [unowned self] changes, what in try self.perform(changes, what) }
            try script.makeRoot()
        }

        func fail(_ message: String) throws -> Never {
            throw failSeed(seed, message, history: history, replay: "OFFLOADFS_DELTA_SEED")
        }

        /// An operation as the namespace will run one: join, record, journal, leave.
        func perform(_ changes: [JournalChange], _ what: String) throws {
            history.append(what)
            let ticket = delta.join()
            defer { delta.leave(ticket) }
            let born = numbered..<script.nextInode
            numbered = script.nextInode
            try delta.record(changes, born: born, in: ticket)
            for change in changes {
                if case .drop(let inode) = change, ticket.generation.withChanges(of: inode, { _ in true }) == nil { vanished += 1 }
            }
            var writer = ByteWriter(capacity: 256)
            for change in changes { change.encode(into: &writer) }
            journal.append((ticket.generation.number, writer.bytes))
            for change in changes {
                if let refusal = script.model.refusal(of: change) { try fail("the script made an invalid change \(change): \(refusal)") }
                script.model.apply(change)
            }
        }

        func step() throws {
            switch Int.random(in: 0..<30, using: &script.random) {
            case 0..<22: try script.step()
            case 22, 23:
                guard delta.layers().count < 4 else { return try commitOldest() }
                let closed = delta.close()
                history.append("close generation \(closed.number)")
            case 24, 25: try commitOldest()
            case 26: try crash(halfCommitting: false)
            case 27: try crash(halfCommitting: true)
            default: try check()
            }
            deepestLayers = max(deepestLayers, delta.layers().count)
        }

        /// Commits the oldest closed generation (closing the open one when none is).
        func commitOldest() throws {
            let generation = delta.nextToCommit()
            // Small drop budgets, so that drops run across commits.
            let budget = Int.random(in: 1...40, using: &script.random)
            let used = try fs.apply(generation, dropBudget: budget)
            chunkedDrops += try fs.orphans().filter { $0.item.state == .dropping }.count
            _ = try fs.continueDrops(budget: max(0, budget - used))
            if let problem = references.apply(fs.takeReferenceChanges()) { try fail(problem) }
            let commit = try fs.tree.commit(generation: generation.number)
            // Publish, then retire: a reader holding the old layer list reads the same.
            committed = (generation.number, commit.root)
            delta.retire(generation)
            pages.releasePages(commit.freedBlocks)
            commits += 1
            history.append("commit generation \(generation.number)")
            // The journal is truncated up to the commit, most of the time at once.
            if Bool.random(using: &script.random) { journal.removeAll { $0.generation <= generation.number } }
            _ = try fs.tree.check()
        }

        /// Loses everything not committed: the delta, and the tree's working copy (with
        /// half a generation in it, when `halfCommitting`); then mount's replay.
        func crash(halfCommitting: Bool) throws {
            if halfCommitting, let oldest = delta.layers().last, delta.layers().count > 1 {
                delta.waitUntilQuiet(oldest)
                try fs.apply(oldest)
                halfCommits += 1
            }
            crashes += 1
            fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 6, treeID: 1, root: committed.root), hashes: hashes)
            let replaying = journal.filter { $0.generation > committed.generation }
            delta = MetadataDelta(committedGeneration: committed.generation,
                                  replayedThrough: replaying.map(\.generation).max() ?? 0)
            var replayed = 0
            for frame in replaying {
                let changes = try frame.payload.withUnsafeBytes { try JournalChange.decodeAll($0) }
                let ticket = delta.join()
                try delta.record(changes, in: ticket)
                delta.leave(ticket)
                replayed += 1
            }
            replayedFrames += replayed
            history.append("crash\(halfCommitting ? " in a commit" : ""); replayed \(replayed) frames after generation \(committed.generation)")
            journal.removeAll { $0.generation <= committed.generation }
        }

        func check() throws {
            if !pages.violations.isEmpty { try fail("page store violations: \(pages.violations)") }
            let reader = LayeredFileSystem(layers: delta.layers(), tree: fs, committedGeneration: committed.generation)
            if let mismatch = try script.model.mismatch(in: reader, absent: script.name() + [UInt8(ascii: "q")]) {
                try fail("through the delta: \(mismatch)")
            }
            // The dirty cap's count is exact: each object a generation holds changes or an
            // orphan change of, once; an inode made and dropped in it, not at all.
            for layer in delta.layers() {
                let objects = Set(layer.allChanges().map(\.object)).union(layer.allOrphanChanges().keys)
                if layer.objectCount != objects.count {
                    try fail("generation \(layer.number) counts \(layer.objectCount) objects but holds \(objects.count)")
                }
            }
        }

        /// Commits everything and finishes the drops, then the tree alone must be the model.
        func drain() throws {
            func dropping() throws -> Bool { try fs.orphans().contains { $0.item.state == .dropping } }
            while try delta.layers().count > 1 || delta.layers().first!.objectCount > 0 || dropping() {
                try commitOldest()
            }
            for inode in script.model.dropped where try fs.hasItems(inode) { try fail("dropped inode \(inode) has items left") }
            if let mismatch = try script.model.mismatch(in: fs, absent: script.name() + [UInt8(ascii: "q")]) {
                try fail("the tree alone after committing everything: \(mismatch)")
            }
            if let mismatch = try script.model.treeMismatch(in: fs, references: references.counts) {
                try fail("the tree's files, links or references after committing everything: \(mismatch)")
            }
        }
    }

    func testRandomOperationsThroughGenerationsCommitsAndCrashesReadAsThePlainModel() throws {
        let run = ModelRun(prefix: "OFFLOADFS_DELTA", defaultSeeds: 5, defaultOperations: 1_000)
        var totals = (commits: 0, crashes: 0, halfCommits: 0, replayed: 0, layers: 0, chunkedDrops: 0, vanished: 0)
        for seed in run.seeds {
            let harness = try Harness(seed: seed)
            for operation in 0..<run.operations {
                try harness.step()
                if operation % 10 == 0 { try harness.check() }
            }
            try harness.check()
            try harness.crash(halfCommitting: true)
            try harness.check()
            try harness.drain()
            totals.commits += harness.commits
            totals.crashes += harness.crashes
            totals.halfCommits += harness.halfCommits
            totals.replayed += harness.replayedFrames
            totals.layers = max(totals.layers, harness.deepestLayers)
            totals.chunkedDrops += harness.chunkedDrops
            totals.vanished += harness.vanished
        }
        if !run.customized {
            XCTAssertGreaterThan(totals.commits, 100)
            XCTAssertGreaterThan(totals.crashes, 50)
            XCTAssertGreaterThan(totals.halfCommits, 10)
            XCTAssertGreaterThan(totals.replayed, 500)
            XCTAssertGreaterThanOrEqual(totals.layers, 3, "readers never saw several closed generations")
            XCTAssertGreaterThan(totals.chunkedDrops, 20, "no drop ran across commits")
            XCTAssertGreaterThan(totals.vanished, 10, "no inode was made and dropped within one generation")
        }
    }

    /// The exact cut under threads: operations join, record and leave while a committer
    /// closes generations and waits for them. Each operation's change must be in the
    /// generation its ticket named, and a generation must have no operation inside once
    /// `waitUntilQuiet` returns. Runs under ThreadSanitizer in scripts/tsan. Since
    /// 2026-12-05 (twentieth session) joining and leaving take no lock every operation
    /// shares (a gate shared per CPU and the generation's atomic count).
    func testOperationsRacingACommitterLandInExactlyTheGenerationTheyJoined() throws {
        let delta = MetadataDelta(committedGeneration: 0)
        let inside = PthreadMutex([UInt64: Int]())
        let joined = PthreadMutex([UInt64: UInt64]())
        let workers = 4, perWorker = 2_000
        let time = RecordTime(seconds: 0, nanoseconds: 0)
        let group = DispatchGroup()
        for worker in 0..<workers {
            DispatchQueue.global().async(group: group) {
                for n in 0..<perWorker {
                    let inode = UInt64(2 + worker * perWorker + n)
                    let ticket = delta.join()
                    let number = ticket.generation.number
                    inside.withLock { $0[number, default: 0] += 1 }
                    let item = InodeItem(type: 8, permissions: 0o600, uid: 0, gid: 0, linkCount: 1, size: inode, rdev: 0,
                                         accessTime: time, modificationTime: time, changeTime: time, birthTime: time,
                                         parent: 0, nextIndex: 0)
                    try! delta.record([.attributes(inode: inode, item)], in: ticket)
                    joined.withLock { $0[inode] = number }
                    inside.withLock { $0[number]! -= 1 }
                    delta.leave(ticket)
                }
            }
        }
        var generations: [DeltaGeneration] = []
        var violations: [String] = []
        var round = 0
        while group.wait(timeout: .now()) == .timedOut {
            // Both ways a commit cuts: a close and its wait, and `nextToCommit` (which
            // closes the open generation itself when none is closed).
            round += 1
            let closed: DeltaGeneration
            if round % 2 == 0 {
                closed = delta.close()
                delta.waitUntilQuiet(closed)
            } else {
                closed = delta.nextToCommit()
            }
            let still = inside.withLock { $0[closed.number] ?? 0 }
            if still != 0 { violations.append("generation \(closed.number): \(still) operations inside after waitUntilQuiet") }
            generations.append(closed)
            delta.retire(closed)
            usleep(200)
        }
        generations.append(delta.close())
        XCTAssertEqual(violations, [])
        let tickets = joined.withLock { $0 }
        XCTAssertEqual(tickets.count, workers * perWorker)
        var found = 0
        for generation in generations {
            for (inode, changes) in generation.allChanges() {
                found += 1
                XCTAssertEqual(tickets[inode], generation.number, "inode \(inode) landed in another generation than it joined")
                XCTAssertEqual(changes.attributes?.size, inode)
            }
        }
        XCTAssertEqual(found, workers * perWorker, "a change landed in no generation or in two")
        XCTAssertGreaterThan(generations.count, 3, "the committer never cut while operations ran")
    }

    /// A reader descheduled across two commits holds a layer list older than the root it
    /// loads: the layers that root holds must be passed over, or an older generation's
    /// name comes back over a root where it was unlinked and its inode dropped (found by
    /// review).
    func testAReaderWhoseLayerListIsTwoCommitsOldDoesNotResurrectAnUnlinkedName() throws {
        let state = try TreeUnderDelta()
        let (pages, hashes, delta) = (state.pages, state.hashes, state.delta)
        let perform = state.perform, commit = state.commit
        let name = Array("a".utf8)
        let entry = NamedEntry(name: name, child: 2, type: 8, index: 3)
        let root = NamespaceChangeScript.inode(type: 4, links: 2, parent: 1, nextIndex: 4)
        try perform([.attributes(inode: 1, root), .attributes(inode: 2, NamespaceChangeScript.inode(type: 8, links: 1)),
                     .link(directory: 1, entry)])
        let layers = delta.layers()
        _ = try commit()
        try perform([.unlink(directory: 1, entry), .attributes(inode: 1, root), .drop(inode: 2)])
        let published = try commit()
        let reader = LayeredFileSystem(layers: layers, tree: FileSystemTree(
            tree: try CopyOnWriteTree(pages: pages, imageID: 6, treeID: 1, root: published.root), hashes: hashes),
            committedGeneration: published.generation)
        XCTAssertNil(try reader.lookup(directory: 1, name: name))
        XCTAssertNil(try reader.inode(2))
        XCTAssertEqual(try reader.entries(directory: 1), [])
    }

    /// A committed extent past its file's size is damage, whether or not newer
    /// generations changed the file's data: the file's load gave EIO without them, and
    /// with them cut the extent to the size and loaded the file (the twenty-fifth
    /// session's review noted the two answers).
    func testACommittedExtentPastItsFilesSizeIsDamageWithOrWithoutNewerChanges() throws {
        let state = try TreeUnderDelta()
        let (fs, delta) = (state.fs, state.delta)
        let perform = state.perform
        // An extent of 8 KiB committed under an item that says 4 KiB (a hostile image).
        let file = NamespaceChangeScript.inode(type: 8, links: 1)
        var small = file
        small.size = 4096
        try perform([.attributes(inode: 2, file),
                     .fileRange(inode: 2, size: 8192, range: 0..<8192,
                                pieces: [FilePiece(offset: 0, extent: .mmapOffload(offset: 1 << 20, size: 8192))]),
                     .attributes(inode: 2, small)])
        let generation = try state.commit().generation
        func pieces() throws -> [FilePiece] {
            try LayeredFileSystem(layers: delta.layers(), tree: fs, committedGeneration: generation)
                .filePieces(2, size: 4096)
        }
        func assertDamage(_ when: String) {
            XCTAssertThrowsError(try pieces(), when) { error in
                guard case FSError.damagedImage = error else { return XCTFail("\(when): \(error)") }
            }
        }
        assertDamage("with no newer change")
        try perform([.attributes(inode: 2, small),
                     .fileRange(inode: 2, size: 4096, range: 0..<100, pieces: [FilePiece(offset: 0, extent: .inMemory(Array(repeating: 7, count: 100)))])])
        assertDamage("with a newer file range")
    }
}

/// A filesystem tree in memory under a delta: one operation recorded at a time, and the
/// oldest generation committed into the tree.
private final class TreeUnderDelta {
    let pages = MemoryTreePages(firstBlock: 1_000_000)
    let hashes = ItemHashes.weakened(SipHash24(key0: 1, key1: 2), bits: 48)
    let fs: FileSystemTree
    let delta = MetadataDelta(committedGeneration: 0)

    init() throws {
        fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 6, treeID: 1, root: nil), hashes: hashes)
    }

    func perform(_ changes: [JournalChange]) throws {
        let ticket = delta.join()
        defer { delta.leave(ticket) }
        try delta.record(changes, in: ticket)
    }

    func commit() throws -> (generation: UInt64, root: CopyOnWriteTree.Root?) {
        let generation = delta.close()
        delta.waitUntilQuiet(generation)
        try fs.apply(generation)
        let done = try fs.tree.commit(generation: generation.number)
        delta.retire(generation)
        return (generation.number, done.root)
    }
}
