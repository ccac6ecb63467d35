import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix

/// The block tree (`BlockReferenceTree`) against a plain array of per-block counts:
/// random allocations (data and tree nodes), retains and releases over ranges that cross
/// runs, refused requests (allocating what is allocated, releasing over a gap), commits
/// and reopening at the committed root. After every operation the tree's runs must be
/// exactly the model's, coalesced; every release must free exactly what the model frees,
/// recorded as pending frees of the open generation, which must read back at every commit
/// (runs and pending frees share the tree) until retired.
/// Replay one seed with `OFFLOADFS_BLOCKTREE_SEED=N`.
final class BlockReferenceTreeTests: XCTestCase {
    static let universe = 1500

    func testRandomReferenceChangesMatchAPlainCountArray() throws {
        let run = ModelRun(prefix: "OFFLOADFS_BLOCKTREE", defaultSeeds: 8, defaultOperations: 2_000)
        var runsSeen = 0, commits = 0, refusals = 0, freedRanges = 0, pendingRetired = 0, deepestLevel: UInt8 = 0
        for seed in run.seeds {
            var random = SplitMix64(seed: seed)
            let pages = MemoryTreePages(firstBlock: 1_000_000)
            var tree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: pages, imageID: 9, treeID: 2, root: nil))
            var counts = [UInt32](repeating: 0, count: Self.universe)
            var uses = [BlockRun.Use](repeating: .data, count: Self.universe)
            var generation: UInt64 = 0
            // Pending frees as the model keeps them: (generation, range), in key order.
            var pending: [(generation: UInt64, blocks: Range<UInt64>)] = []
            // Blocks freed and not yet retired: not free for allocation (the quarantine).
            var waiting = Set<Int>()
            var history: [String] = []
            func fail(_ message: String) throws -> Never {
                throw failSeed(seed, message, history: history, replay: "OFFLOADFS_BLOCKTREE_SEED")
            }
            for _ in 0..<run.operations {
                var start = Int.random(in: 0..<Self.universe, using: &random)
                let length = Int.random(in: 1...24, using: &random)
                var range = start..<min(Self.universe, start + length)
                // Mostly, retains and releases take blocks in use (across runs of different
                // counts); sometimes any blocks, to be refused.
                let used = counts.indices.filter { counts[$0] > 0 }
                if !used.isEmpty, Int.random(in: 0..<5, using: &random) > 0 {
                    start = used.randomElement(using: &random)!
                    var end = start
                    while end < Self.universe, counts[end] > 0, end - start < length { end += 1 }
                    range = start..<end
                }
                let blocks = UInt64(range.lowerBound)..<UInt64(range.upperBound)
                let allFree = counts[range].allSatisfy { $0 == 0 }
                // The allocator never hands out blocks pending free; neither does the model.
                let touchesWaiting = range.contains { waiting.contains($0) }
                let allUsed = counts[range].allSatisfy { $0 > 0 }
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<3 where !touchesWaiting:
                    let use: BlockRun.Use = Bool.random(using: &random)
                        ? .data : .node(tree: UInt32.random(in: 1...2, using: &random))
                    history.append("allocate \(blocks) as \(use) (free: \(allFree))")
                    do {
                        try tree.insertAllocated(blocks, use: use)
                        guard allFree else { try fail("allocating \(blocks), which is in use, was accepted") }
                        for i in range { counts[i] = 1; uses[i] = use }
                    } catch let error as FSError {
                        guard !allFree else { try fail("allocating free blocks \(blocks) failed: \(error)") }
                        refusals += 1
                    }
                case 0..<6:
                    history.append("retain \(blocks) (all used: \(allUsed))")
                    do {
                        try tree.retain(blocks)
                        guard allUsed else { try fail("retaining \(blocks), not all in use, was accepted") }
                        for i in range { counts[i] += 1 }
                    } catch let error as FSError {
                        guard !allUsed else { try fail("retaining \(blocks) failed: \(error)") }
                        refusals += 1
                    }
                default:
                    history.append("release \(blocks) (all used: \(allUsed))")
                    do {
                        let freed = try tree.release(blocks)
                        guard allUsed else { try fail("releasing \(blocks), not all in use, was accepted") }
                        for i in range { counts[i] -= 1 }
                        let expected = Self.runsOfZero(counts, in: range)
                        guard freed == expected else { try fail("release of \(blocks) freed \(freed), the model \(expected)") }
                        freedRanges += freed.count
                        try tree.addPendingFrees(generation: generation + 1, freed)
                        pending += freed.map { (generation + 1, $0) }
                        for range in freed { waiting.formUnion(Int(range.lowerBound)..<Int(range.upperBound)) }
                    } catch let error as FSError {
                        guard !allUsed else { try fail("releasing \(blocks) failed: \(error)") }
                        refusals += 1
                    }
                }
                let expected = Self.modelRuns(counts, uses)
                let actual = try tree.allRuns()
                guard actual == expected else { try fail("runs \(actual)\nmodel \(expected)") }
                runsSeen = max(runsSeen, actual.count)
                if Int.random(in: 0..<40, using: &random) == 0 {
                    generation += 1
                    let commit = try tree.tree.commit(generation: generation)
                    pages.releasePages(commit.freedBlocks)
                    tree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: pages, imageID: 9, treeID: 2, root: commit.root))
                    guard try tree.allRuns() == expected else { try fail("the reopened tree differs at generation \(generation)") }
                    _ = try tree.tree.check()
                    deepestLevel = max(deepestLevel, commit.root?.level ?? 0)
                    pending.sort { ($0.generation, $0.blocks.lowerBound) < ($1.generation, $1.blocks.lowerBound) }
                    let stored = try tree.pendingFrees(through: .max)
                    guard stored.map(\.generation) == pending.map(\.generation), stored.map(\.blocks) == pending.map(\.blocks) else {
                        try fail("pending frees \(stored), the model \(pending)")
                    }
                    // The frees of an older generation became final (a later commit is durable).
                    if let oldest = pending.first?.generation, oldest < generation, Bool.random(using: &random) {
                        try tree.removePendingFrees(generation: oldest)
                        for retired in pending where retired.generation == oldest {
                            waiting.subtract(Int(retired.blocks.lowerBound)..<Int(retired.blocks.upperBound))
                        }
                        pending.removeAll { $0.generation == oldest }
                        pendingRetired += 1
                    }
                    commits += 1
                }
            }
        }
        print("block tree model test: \(run.seeds.count) seeds x \(run.operations) operations; at most \(runsSeen) runs, \(commits) commits (deepest root level \(deepestLevel)), \(refusals) refusals, \(freedRanges) freed ranges, \(pendingRetired) generations of pending frees retired")
        if !run.customized {
            XCTAssertGreaterThan(runsSeen, 120)
            XCTAssertGreaterThanOrEqual(deepestLevel, 1, "runs must fill several leaves")
            XCTAssertGreaterThan(refusals, 100)
            XCTAssertGreaterThan(freedRanges, 1000)
            XCTAssertGreaterThan(pendingRetired, 50)
        }
    }

    /// A run's value is checked when read: impossible lengths, counts and uses are damage,
    /// whether the run is reached by a scan or as the floor of a block inside it.
    func testDamagedRunsAreReportedAsDamage() throws {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let cow = try CopyOnWriteTree(pages: pages, imageID: 9, treeID: 2, root: nil)
        // A run of 11 blocks from block 5 with no references (a run always has one).
        var w = ByteWriter()
        w.u64(11); w.u32(0); w.u8(1); w.u32(0)
        try cow.upsert(TreeKey(object: 5, kind: BlockReferenceTree.runKind, offset: 0), w.bytes)
        XCTAssertThrowsError(try BlockReferenceTree(tree: cow).allRuns()) { error in
            guard case FSError.damagedImage = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try BlockReferenceTree(tree: cow).count(of: 9)) { error in
            guard case FSError.damagedImage = error else { return XCTFail("\(error)") }
        }
    }

    /// A block freed twice in one generation means something allocated it while it was
    /// pending: refused, and the first record kept.
    func testABlockCannotBePendingTwiceInOneGeneration() throws {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let tree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: pages, imageID: 9, treeID: 2, root: nil))
        try tree.addPendingFrees(generation: 4, [10..<20])
        XCTAssertThrowsError(try tree.addPendingFrees(generation: 4, [10..<12]))
        try tree.addPendingFrees(generation: 5, [10..<12])
        let pending = try tree.pendingFrees(through: .max)
        XCTAssertEqual(pending.map(\.generation), [4, 5])
        XCTAssertEqual(pending.map(\.blocks), [10..<20, 10..<12])
        XCTAssertEqual(try tree.pendingFrees(from: 5, through: 5).map(\.blocks), [10..<12])
        try tree.removePendingFrees(generation: 4)
        XCTAssertEqual(try tree.pendingFrees(through: .max).map(\.generation), [5])
        XCTAssertEqual(try tree.allRuns(), [])
    }

    /// A damaged image's run past the image's end, released (as a fuzzed image's file
    /// extent released 1.7e13 blocks at a commit): the summaries' update refuses it as
    /// damage instead of listing every group up to it, which asked for 3 GiB and ended
    /// the fuzzer out of memory (`Tests/FuzzRegressions/format2-blocks-past-the-image-freed-at-a-commit`).
    func testChangesPastTheImagesEndAreRefusedAtTheSummaries() throws {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let tree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: pages, imageID: 9, treeID: 2, root: nil),
                                      blocksPerGroup: 64)
        tree.blockLimit = 1_000
        let far: Range<UInt64> = 2_000..<3_000
        try tree.insertAllocated(far, use: .data)
        XCTAssertEqual(try tree.release(far), [far])
        XCTAssertThrowsError(try tree.updateGroupSummaries()) { error in
            guard case FSError.damagedImage(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("past the image's end"), why)
        }
    }

    /// A change that cannot get the blocks it needs changes nothing: all of them are taken
    /// before the first run is removed (the review's case: releasing block 5 of run 0..<10
    /// removed the run, then failed to insert its pieces, leaving blocks 0..<10 free).
    func testAChangeWithoutSpaceChangesNothing() throws {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let tree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: pages, imageID: 9, treeID: 2, root: nil))
        try tree.insertAllocated(0..<10, use: .data)
        let commit = try tree.tree.commit(generation: 1)
        pages.releasePages(commit.freedBlocks)
        pages.blockLimit = pages.liveBlocks + 3   // enough for the removal alone
        XCTAssertThrowsError(try tree.release(5..<6)) { error in
            guard case FSError.noSpace = error else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try tree.allRuns(), [BlockRun(blocks: 0..<10, count: 1, use: .data)])
        // So do pending frees: several ranges are recorded together or not at all.
        XCTAssertThrowsError(try tree.addPendingFrees(generation: 2, [20..<21, 30..<31, 40..<41])) { error in
            guard case FSError.noSpace = error else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try tree.pendingFrees(through: .max).count, 0)
        pages.blockLimit = nil
        XCTAssertEqual(try tree.release(5..<6), [5..<6])
        XCTAssertEqual(try tree.allRuns(), [BlockRun(blocks: 0..<5, count: 1, use: .data), BlockRun(blocks: 6..<10, count: 1, use: .data)])
    }

    static func modelRuns(_ counts: [UInt32], _ uses: [BlockRun.Use]) -> [BlockRun] {
        var runs: [BlockRun] = []
        for (i, count) in counts.enumerated() where count > 0 {
            let block = UInt64(i)
            if var last = runs.last, last.blocks.upperBound == block, last.count == count, last.use == uses[i] {
                last.blocks = last.blocks.lowerBound..<block + 1
                runs[runs.count - 1] = last
            } else {
                runs.append(BlockRun(blocks: block..<block + 1, count: count, use: uses[i]))
            }
        }
        return runs
    }

    static func runsOfZero(_ counts: [UInt32], in range: Range<Int>) -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        for i in range where counts[i] == 0 {
            if let last = ranges.last, last.upperBound == UInt64(i) {
                ranges[ranges.count - 1] = last.lowerBound..<UInt64(i + 1)
            } else {
                ranges.append(UInt64(i)..<UInt64(i + 1))
            }
        }
        return ranges
    }
}
