import XCTest
@testable import OffloadCore
import OffloadSimulation

/// The commit's fixed point and the node pool (`BlockSpace.commit`), and running out of
/// space: cases the random model test (`BlockSpaceModelTests`) reaches rarely or never.
final class BlockSpaceCommitTests: XCTestCase {
    static let blockTreeID: UInt32 = 2

    func openSpace(_ io: MemoryPageIO = MemoryPageIO(), endBlock: UInt64, blocksPerGroup: UInt64 = 512,
                   root: CopyOnWriteTree.Root? = nil) throws -> BlockSpace {
        try BlockSpace(io: io, imageID: 5, blockTreeID: Self.blockTreeID, root: root, firstBlock: 2, endBlock: endBlock,
                       blocksPerGroup: blocksPerGroup, maximumLoadedGroups: 4)
    }

    /// The block tree holds its own nodes as node runs (the fixed point recorded every
    /// node it made and dropped), and besides them only replaced nodes still pending;
    /// `dataCounts` as data runs; and summaries equal to a recomputation from its runs
    /// and pending frees.
    func assertExact(_ space: BlockSpace, dataCounts: [UInt64: UInt32], file: StaticString = #filePath, line: UInt = #line) throws {
        let tree = space.blockTree
        _ = try tree.tree.check()
        var nodes = Set<UInt64>()
        try tree.tree.forEachNodeBlock { nodes.insert($0) }
        var recordedNodes = Set<UInt64>(), recordedData: [UInt64: UInt32] = [:]
        for run in try tree.allRuns() {
            for block in run.blocks {
                switch run.use {
                case .node(let owner):
                    XCTAssertEqual(owner, Self.blockTreeID, file: file, line: line)
                    recordedNodes.insert(block)
                case .data: recordedData[block] = run.count
                case .journal: XCTFail("a journal run where this test makes none", file: file, line: line)
                }
            }
        }
        let pending = Set(try tree.pendingFrees(through: BlockReferenceTree.maximumPendingGeneration).flatMap { Array($0.blocks) })
        XCTAssertEqual(nodes.subtracting(recordedNodes), [], "nodes without a run", file: file, line: line)
        XCTAssertEqual(recordedNodes.subtracting(nodes).subtracting(pending), [], "node runs of no node, not pending",
                       file: file, line: line)
        let wrong = Set(recordedData.keys).union(dataCounts.keys).filter { recordedData[$0] != dataCounts[$0] }.sorted()
        XCTAssertEqual(wrong, [], "data blocks whose runs say another count (first: \(wrong.first.map { "\($0): \(recordedData[$0] ?? 0) for \(dataCounts[$0] ?? 0)" } ?? ""))",
                       file: file, line: line)
        let stored = try tree.storedGroupSummaries()
        for group in 0...(space.endBlock - 1) / space.blocksPerGroup {
            let computed = try tree.computedGroupSummary(group)
            XCTAssertEqual(stored[group] ?? .allFree(blocksPerGroup: space.blocksPerGroup), computed, "group \(group)",
                           file: file, line: line)
        }
    }

    /// A block tree of `blocks` one-block runs (every other block referenced twice), built
    /// by committing after every `perCommit` allocations, so that its nodes lie among
    /// the data: each leaf's own block falls in a later leaf's range.
    func buildInterleavedTree(blocks: Int = 4_000, perCommit: Int, io: MemoryPageIO = MemoryPageIO()) throws
        -> (BlockSpace, [UInt64: UInt32], UInt64) {
        let space = try openSpace(io, endBlock: 40_000, blocksPerGroup: 512)
        var counts: [UInt64: UInt32] = [:]
        var generation: UInt64 = 0
        for _ in 0..<(blocks / perCommit) {
            for _ in 0..<perCommit {
                let block = try space.allocateData(upTo: 1)
                counts[block.lowerBound] = 1
                if block.lowerBound % 2 == 0 {
                    space.retain(block)
                    counts[block.lowerBound] = 2
                }
            }
            generation += 1
            _ = try space.commit(generation: generation)
            space.commitIsDurable(generation: generation)
        }
        try assertExact(space, dataCounts: counts)
        XCTAssertGreaterThanOrEqual(space.blockTree.tree.committedRoot?.level ?? 0, 1)
        return (space, counts, generation)
    }

    /// One released block copies a path, not the tree: the nodes the commit replaces
    /// keep their runs while pending, so recording them changes no other leaf. (Releasing
    /// their runs at once made such a commit copy all 40 leaves of a tree of 4,000 runs, one per round: each copy
    /// released the old leaf's run in the next leaf.)
    func testOneReleaseCopiesAPathNotEveryLeaf() throws {
        var (space, counts, generation) = try buildInterleavedTree(blocks: 2_000, perCommit: 10)
        let block = counts.keys.sorted()[3]
        space.release(block..<block + 1)
        counts[block]! -= 1
        if counts[block] == 0 { counts[block] = nil }
        generation += 1
        let result = try space.commit(generation: generation)
        let level = Int(space.blockTree.tree.committedRoot!.level)
        XCTAssertLessThanOrEqual(result.blockTreeNodesWritten, 2 * (level + 1) + 1, "a path or two, not every leaf")
        XCTAssertLessThanOrEqual(result.rounds, 2)
        try assertExact(space, dataCounts: counts)
        // The replaced nodes are pending and keep their runs until the next commit after
        // this one is durable retires them; then the runs go too (assertExact).
        space.commitIsDurable(generation: generation)
        generation += 1
        let next = try space.commit(generation: generation)
        XCTAssertEqual(Set(next.retired.flatMap { Array($0.blocks) }), Set(result.pendingFrees.flatMap { Array($0) }))
        try assertExact(space, dataCounts: counts)
    }

    /// A commit whose node pool lies where the first round did not change the tree: the
    /// first round's new nodes are recorded in a leaf still clean (the pool is a hole
    /// near the start of the image, the changes are releases all over the middle), whose
    /// copy the next round must record. The loop settles within the bound, exactly.
    func testANodeHeavyCommitNeedsSeveralRoundsAndSettlesExactly() throws {
        let io = MemoryPageIO()
        var (space, counts, generation) = try buildInterleavedTree(perCommit: 100, io: io)
        // A hole near the start, free for good (pending, retired, durable).
        let hole = counts.keys.sorted()[10..<310]
        for block in hole {
            space.release(block..<block + 1)
            counts[block]! -= 1
            if counts[block] == 0 { counts[block] = nil }
            if counts[block] == 1 { space.release(block..<block + 1); counts[block] = nil }
        }
        for _ in 0..<2 {
            generation += 1
            _ = try space.commit(generation: generation)
            space.commitIsDurable(generation: generation)
        }
        // Reopened, the allocator starts at the first group: the pool (sized to fit) is
        // the hole.
        space = try openSpace(io, endBlock: 40_000, blocksPerGroup: 512, root: space.blockTree.tree.committedRoot)
        for (i, block) in counts.keys.sorted().enumerated() where i > 1_000 && i % 7 == 0 {
            space.release(block..<block + 1)
            counts[block]! -= 1
            if counts[block] == 0 { counts[block] = nil }
        }
        generation += 1
        let result = try space.commit(generation: generation, poolBlocks: 250)
        print("node-heavy commit: \(result.rounds) rounds, \(result.blockTreeNodesWritten) block tree nodes written, \(result.poolUsed) of \(result.poolBlocks) pool blocks, \(result.attempts) attempt(s)")
        XCTAssertGreaterThanOrEqual(result.rounds, 2, "recording the block tree's own changes must change it again")
        XCTAssertLessThanOrEqual(result.rounds, BlockSpace.maximumSettlingRounds)
        try assertExact(space, dataCounts: counts)
    }

    /// A pool smaller than the commit needs is doubled and the settling run again: the
    /// first attempt changed nothing, so the result is exactly what a large pool gives.
    func testAPoolThatRunsOutIsDoubledAndTheCommitIsExact() throws {
        let space = try openSpace(endBlock: 20_000)
        var counts: [UInt64: UInt32] = [:]
        for i in 0..<600 {
            let block = try space.allocateData(upTo: 1)
            counts[block.lowerBound] = 1
            if i % 2 == 0 { space.retain(block); counts[block.lowerBound] = 2 }
        }
        let result = try space.commit(generation: 1, poolBlocks: 1)
        XCTAssertGreaterThan(result.attempts, 1)
        XCTAssertLessThanOrEqual(result.poolUsed, result.poolBlocks)
        try assertExact(space, dataCounts: counts)
        XCTAssertEqual(space.unrecordedBlocks, 0, "the pool's rest went back, the rest is recorded")
    }

    /// No free block: an allocation throws `.noSpace` and records nothing, and so does a
    /// tree change that needs a node; a commit that cannot get a single block for its
    /// nodes throws `.noSpace` and changes nothing (the block tree at its committed root,
    /// the changes still queued); with a few blocks free, fewer than its estimate, a
    /// commit succeeds.
    func testWithoutSpaceNothingChangesAndTheErrorIsNoSpace() throws {
        let space = try openSpace(endBlock: 2 + 200)
        var granted: [Range<UInt64>] = []
        while let blocks = try? space.allocateData(upTo: 16) { granted.append(blocks) }
        XCTAssertEqual(granted.reduce(0) { $0 + $1.count }, 200)
        XCTAssertThrowsError(try space.allocateData(upTo: 1)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertEqual(space.changes.count, granted.count, "a refused allocation records nothing")

        // A tree change that cannot get its nodes changes nothing either.
        let fsTree = try CopyOnWriteTree(pages: space.pages(forTree: 1), imageID: 5, treeID: 1, root: nil)
        XCTAssertThrowsError(try fsTree.upsert(TreeKey(object: 1, kind: 1, offset: 0), [1, 2, 3])) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertTrue(fsTree.isEmpty)
        XCTAssertEqual(space.unrecordedBlocks, 200, "no node block handed out")

        XCTAssertThrowsError(try space.commit(generation: 1)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertNil(space.blockTree.tree.committedRoot)
        XCTAssertEqual(try space.blockTree.allRuns(), [])
        XCTAssertEqual(space.changes.count, granted.count, "the changes stay queued for another try")
        XCTAssertEqual(space.committedGeneration, 0)
        XCTAssertEqual(space.unrecordedBlocks, 200, "the pool went back")

        // Room for the nodes, far less than the estimate: the pool is every free block.
        let other = try openSpace(endBlock: 2 + 205)
        var total: UInt64 = 0
        while total < 200 { total += UInt64(try other.allocateData(upTo: min(16, 200 - total)).count) }
        let result = try other.commit(generation: 1)
        XCTAssertEqual(result.poolBlocks, 5, "every free block, fewer than the estimate")
        try assertExact(other, dataCounts: Dictionary(uniqueKeysWithValues: (2..<202).map { ($0, UInt32(1)) }))
    }

    /// A commit refused for a bad change (a release of a free block) changes nothing and
    /// gives the pool back; the block tree is usable for the next try.
    func testARefusedChangeFailsTheCommitAndChangesNothing() throws {
        let space = try openSpace(endBlock: 2_000)
        let blocks = try space.allocateData(upTo: 10)
        _ = try space.commit(generation: 1)
        let root = space.blockTree.tree.committedRoot
        space.release(blocks.upperBound..<blocks.upperBound + 1)
        XCTAssertThrowsError(try space.commit(generation: 2)) { error in
            guard case FSError.invalidArgument = error else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(space.blockTree.tree.committedRoot, root)
        XCTAssertEqual(space.unrecordedBlocks, 0)
        try assertExact(space, dataCounts: Dictionary(uniqueKeysWithValues: blocks.map { ($0, UInt32(1)) }))
    }

    /// Allocation goes by the summaries: after a reopen (nothing known but the tree), a
    /// request for a run longer than the free runs of the first groups goes to a group
    /// that has one, found through the summaries without loading the groups in between;
    /// and blocks a commit freed for good are not handed out before `commitIsDurable`.
    func testGroupsAreChosenBySummaryAndRetiredBlocksWaitForDurability() throws {
        let io = MemoryPageIO()
        var space = try openSpace(io, endBlock: 64 * 10, blocksPerGroup: 64)
        // Fill groups 0 to 5, then free 4 blocks in the middle of each.
        for _ in 0..<(6 * 64 - 2) { _ = try space.allocateData(upTo: 1) }
        for group in UInt64(0)..<6 { space.release(group * 64 + 30..<group * 64 + 34) }
        _ = try space.commit(generation: 1)
        space.commitIsDurable(generation: 1)
        var commit = try space.commit(generation: 2)  // retires the holes' pending frees
        space.commitIsDurable(generation: 2)
        space = try openSpace(io, endBlock: 64 * 10, blocksPerGroup: 64, root: commit.blockTreeRoot)
        let summaries = try space.blockTree.storedGroupSummaries()
        // Group 0's two header blocks count as free (a summary is a function of the items).
        XCTAssertEqual(summaries[0], BlockGroupSummary(freeBlocks: 6, largestFreeRun: 4))
        for group in UInt64(1)..<6 {
            XCTAssertEqual(summaries[group], BlockGroupSummary(freeBlocks: 4, largestFreeRun: 4), "group \(group)")
        }
        let wide = try space.allocateData(upTo: 20)
        XCTAssertEqual(wide.count, 20)
        XCTAssertGreaterThanOrEqual(wide.lowerBound, 6 * 64, "a run of 20 exists only past group 5")
        XCTAssertEqual(space.groupLoads, 1, "groups without such a run were skipped by their summaries")

        // Released in generation 3 (pending), retired by commit 4 (3 is durable then),
        // reusable only once 4 is durable.
        let target: Range<UInt64> = 2 * 64 + 40..<2 * 64 + 64
        space.release(target)
        _ = try space.commit(generation: 3)
        space.commitIsDurable(generation: 3)
        commit = try space.commit(generation: 4)
        XCTAssertTrue(commit.retired.map(\.blocks).contains(target))
        var takenBeforeDurable: [Range<UInt64>] = []
        while let blocks = try? space.allocateData(upTo: 64) { takenBeforeDurable.append(blocks) }
        XCTAssertFalse(takenBeforeDurable.isEmpty)
        XCTAssertFalse(takenBeforeDurable.contains { $0.overlaps(target) }, "retired blocks handed out before the commit was durable")
        space.commitIsDurable(generation: 4)
        var takenAfter = Set<UInt64>()
        while let blocks = try? space.allocateData(upTo: 64) { takenAfter.formUnion(blocks) }
        XCTAssertTrue(takenAfter.isSuperset(of: target), "retired blocks free once the commit is durable")
    }

    /// The commit records a generation's allocations sorted and joined by use, before
    /// its retains and releases, which keep their order and join only with a neighbour of
    /// the same kind before them.
    func testAllocationsAreJoinedAndReferenceChangesKeepTheirOrder() {
        let changes: [BlockReferenceChange] = [
            .allocate(20..<21, .data), .allocate(10..<12, .data), .retain(10..<11), .allocate(12..<14, .data),
            .allocate(14..<15, .journal), .allocate(21..<23, .data), .release(10..<11), .release(11..<12),
            .retain(12..<13), .release(12..<13), .allocate(15..<16, .journal), .allocate(22..<24, .data),
        ]
        let allocations = BlockSpace.joinedAllocations(changes)
        XCTAssertEqual(allocations.map(\.blocks), [10..<14, 14..<16, 20..<23, 22..<24],
                       "joined where adjacent and of one use; an overlap stays apart for the block tree to refuse")
        XCTAssertEqual(allocations.map(\.use), [.data, .journal, .data, .data])
        XCTAssertEqual(BlockSpace.joinedReferenceChanges(changes), [.retain(10..<11), .release(10..<12), .retain(12..<13), .release(12..<13)])
    }

    /// Many files' one-block allocations, each retained once by half of them, released in
    /// runs: one commit records them as the runs the counts give, and a second allocation
    /// of a block already recorded is still refused.
    func testJoinedAllocationsRecordTheSameRuns() throws {
        let space = try openSpace(endBlock: 4_000, blocksPerGroup: 512)
        var counts: [UInt64: UInt32] = [:]
        var taken: [Range<UInt64>] = []
        for index in 0..<600 {
            let blocks = try space.allocateData(upTo: index % 7 == 0 ? 3 : 1, use: index % 5 == 0 ? .journal : .data)
            taken.append(blocks)
            if index % 5 != 0 { for block in blocks { counts[block] = 1 } }
        }
        for blocks in taken where blocks.lowerBound % 2 == 0 && counts[blocks.lowerBound] != nil {
            space.retain(blocks)
            for block in blocks { counts[block]! += 1 }
        }
        for blocks in taken.prefix(100) where counts[blocks.lowerBound] != nil {
            space.release(blocks)
            for block in blocks {
                counts[block]! -= 1
                if counts[block] == 0 { counts[block] = nil }
            }
        }
        let result = try space.commit(generation: 1)
        let journal = Set(taken.enumerated().filter { $0.offset % 5 == 0 }.flatMap { Array($0.element) })
        for run in try space.blockTree.allRuns() where run.use == .journal {
            XCTAssertTrue(run.blocks.allSatisfy { journal.contains($0) }, "journal run \(run) holds data blocks")
        }
        XCTAssertEqual(Set(try space.blockTree.allRuns().filter { $0.use == .journal }.flatMap { Array($0.blocks) }), journal)
        let dataRuns = try space.blockTree.allRuns().filter { $0.use == .data }
        XCTAssertLessThan(dataRuns.count, 600, "the runs coalesce")
        let recorded = Dictionary(uniqueKeysWithValues: dataRuns.flatMap { run in run.blocks.map { ($0, run.count) } })
        XCTAssertEqual(recorded, counts)
        XCTAssertEqual(Set(result.pendingFrees.flatMap { Array($0) }),
                       Set(taken.prefix(100).flatMap { Array($0) }).subtracting(counts.keys).subtracting(journal))
        space.commitIsDurable(generation: 1)
        XCTAssertNotNil(counts[taken[101].lowerBound], "a block still referenced")
        space.changes.append(.allocate(taken[101], .data))
        XCTAssertThrowsError(try space.commit(generation: 2), "an allocation of recorded blocks is refused") {
            guard case .invalidArgument(let why)? = $0 as? FSError else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("allocated already"), why)
        }
    }

    /// Two allocations of the same blocks in one generation stay apart, so the second is
    /// refused; a retain or release recorded before an allocation of its blocks is found.
    func testOverlappingAllocationsAreRefusedAndAChangeBeforeItsAllocationIsFound() throws {
        let space = try openSpace(endBlock: 4_000, blocksPerGroup: 512)
        let blocks = try space.allocateData(upTo: 4)
        space.changes.append(.allocate(blocks.lowerBound + 1..<blocks.upperBound + 2, .data))
        XCTAssertThrowsError(try space.commit(generation: 1), "blocks allocated twice in one generation")
        XCTAssertNil(BlockSpace.referenceChangeBeforeItsAllocation([.allocate(10..<12, .data), .retain(10..<12), .release(11..<12)]))
        XCTAssertEqual(BlockSpace.referenceChangeBeforeItsAllocation([.retain(10..<11), .allocate(8..<12, .data)]), .retain(10..<11))
        XCTAssertEqual(BlockSpace.referenceChangeBeforeItsAllocation([.allocate(8..<10, .data), .release(9..<11), .allocate(10..<11, .journal)]),
                       .release(9..<11))
    }
}
