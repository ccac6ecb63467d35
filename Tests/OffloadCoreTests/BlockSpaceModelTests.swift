import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// `BlockSpace` (format 2's allocator over the block tree, and the commit's fixed point)
/// against a plain model: a reference count per data block, the nodes of the two trees
/// (found by walking them), the pending frees by generation and the blocks retired by a
/// commit not yet durable.
///
/// Random data allocations (each must be free in the model), retains and releases over
/// data blocks, changes to a filesystem tree whose nodes come from the same space, and
/// commits of both trees. After every commit the block tree must hold exactly the model's
/// runs (data, the filesystem tree's nodes, its own nodes: the fixed point recorded
/// them all), the model's pending frees, and group summaries equal to a recomputation
/// from the model; the commit must report the frees and retirements the model expects.
/// Some commits are declared durable (their retired blocks become free), some are
/// followed by reopening everything at the committed roots. Small groups (64 blocks) and
/// at most two loaded groups, so that group choice and eviction are exercised.
/// Replay one seed with `OFFLOADFS_BLOCKSPACE_SEED=N`.
final class BlockSpaceModelTests: XCTestCase {
    static let blocksPerGroup: UInt64 = 64
    static let firstBlock: UInt64 = 2
    static let endBlock: UInt64 = 2 + 64 * 10 - 10
    static let fsTreeID: UInt32 = 1
    static let blockTreeID: UInt32 = 2

    /// The model's view of one image.
    struct Model {
        var counts = [UInt32](repeating: 0, count: Int(BlockSpaceModelTests.endBlock))
        var fsNodes = Set<UInt64>(), blockTreeNodes = Set<UInt64>()
        /// Block tree nodes replaced and still pending: they keep their runs until retired.
        var replacedBlockTreeNodes = Set<UInt64>()
        /// Pending frees by generation.
        var pending: [UInt64: Set<UInt64>] = [:]
        /// Data blocks released to zero in the open generation.
        var freedThisGeneration = Set<UInt64>()
        /// Blocks retired by commits not yet durable, by commit.
        var held: [UInt64: Set<UInt64>] = [:]
        var durable: UInt64 = 0

        /// Every block of `pending` and of `held` (kept by `settle`).
        var pendingBlocks = Set<UInt64>(), heldBlocks = Set<UInt64>()

        func isPending(_ block: UInt64) -> Bool { pendingBlocks.contains(block) }
        func isHeld(_ block: UInt64) -> Bool { heldBlocks.contains(block) }

        mutating func settle() {
            pendingBlocks = pending.values.reduce(into: []) { $0.formUnion($1) }
            heldBlocks = held.values.reduce(into: []) { $0.formUnion($1) }
        }

        /// Whether the allocator may hand `block` out; `fsLive` are the filesystem tree's
        /// blocks handed out since its last commit.
        func isFree(_ block: UInt64, fsLive: Set<UInt64>) -> Bool {
            block >= BlockSpaceModelTests.firstBlock && block < BlockSpaceModelTests.endBlock && counts[Int(block)] == 0
                && !fsNodes.contains(block) && !blockTreeNodes.contains(block) && !isPending(block) && !isHeld(block)
                && !fsLive.contains(block)
        }

        func freeCount(fsLive: Set<UInt64>) -> Int {
            (BlockSpaceModelTests.firstBlock..<BlockSpaceModelTests.endBlock).filter { isFree($0, fsLive: fsLive) }.count
        }

        var runs: [BlockRun] {
            var runs: [BlockRun] = []
            for block in 0..<UInt64(counts.count) {
                let run: (UInt32, BlockRun.Use)?
                if counts[Int(block)] > 0 { run = (counts[Int(block)], .data) }
                else if fsNodes.contains(block) { run = (1, .node(tree: BlockSpaceModelTests.fsTreeID)) }
                else if blockTreeNodes.contains(block) || replacedBlockTreeNodes.contains(block) {
                    run = (1, .node(tree: BlockSpaceModelTests.blockTreeID))
                }
                else { run = nil }
                guard let (count, use) = run else { continue }
                if let last = runs.last, last.blocks.upperBound == block, last.count == count, last.use == use {
                    runs[runs.count - 1].blocks = last.blocks.lowerBound..<block + 1
                } else {
                    runs.append(BlockRun(blocks: block..<block + 1, count: count, use: use))
                }
            }
            return runs
        }

        /// Every group's summary by the model (groups with nothing used have no item).
        var summaries: [UInt64: BlockGroupSummary] {
            var found: [UInt64: BlockGroupSummary] = [:]
            let size = BlockSpaceModelTests.blocksPerGroup
            for group in 0...(UInt64(counts.count) - 1) / size {
                var free: UInt32 = 0, largest: UInt32 = 0, current: UInt32 = 0
                for block in group * size..<(group + 1) * size {
                    let used = block < UInt64(counts.count)
                        && (counts[Int(block)] > 0 || fsNodes.contains(block) || blockTreeNodes.contains(block) || isPending(block))
                    if used { current = 0 } else { free += 1; current += 1; largest = max(largest, current) }
                }
                if free < UInt32(size) { found[group] = BlockGroupSummary(freeBlocks: free, largestFreeRun: largest) }
            }
            return found
        }
    }

    func testRandomAllocationsAndCommitsMatchAPlainModel() throws {
        try runModel(reusingNodes: false)
    }

    /// The same with the filesystem tree's freed nodes kept for later commits' nodes
    /// (`ReusableNodes`), at most 10 of them after a commit so that letting go happens
    /// too: a reused block must have been kept, of a generation at most the durable one
    /// and two below the commit's; its pending free goes in the commit that makes it a
    /// node; kept blocks stay pending (never retired, never handed to data); and the rest
    /// retires as before.
    func testWithFreedNodesReusedTheBlockSpaceStillMatchesAPlainModel() throws {
        try runModel(reusingNodes: true)
    }

    private func runModel(reusingNodes: Bool) throws {
        let run = ModelRun(prefix: "OFFLOADFS_BLOCKSPACE", defaultSeeds: 5, defaultOperations: 800)
        var commits = 0, reopens = 0, allocations = 0, retired = 0, maxRounds = 0, evictions = 0, fsNoSpace = 0
        var poolUsed = 0, poolSize = 0, reruns = 0, summaryScans = 0, summariesByNeighbours = 0, reusedNodes = 0
        for seed in run.seeds {
            var random = SplitMix64(seed: seed)
            let io = MemoryPageIO()
            var space = try Self.openSpace(io, root: nil, reusingNodes: reusingNodes)
            var fsPages = space.pages(forTree: Self.fsTreeID)
            var fsTree = try CopyOnWriteTree(pages: fsPages, imageID: 9, treeID: Self.fsTreeID, root: nil)
            var model = Model()
            var generation: UInt64 = 0
            var history: [String] = []
            func fail(_ message: String) throws -> Never {
                throw failSeed(seed, message, history: history, replay: "OFFLOADFS_BLOCKSPACE_SEED")
            }
            for _ in 0..<run.operations {
                let dataBlocks = (0..<model.counts.count).filter { model.counts[$0] > 0 }
                do {
                switch Int.random(in: 0..<20, using: &random) {
                case 0..<6 where model.freeCount(fsLive: fsPages.live) > 120:
                    // Allocations stop short of full: a commit needs room for its nodes and
                    // the spares its grouped changes reserve (no-space behaviour has its
                    // own tests).
                    let wanted = UInt64.random(in: 1...8, using: &random)
                    let blocks = try space.allocateData(upTo: wanted)
                    history.append("allocate \(wanted): \(blocks)")
                    guard !blocks.isEmpty, blocks.count <= wanted else { try fail("allocated \(blocks) for \(wanted)") }
                    for block in blocks where !model.isFree(block, fsLive: fsPages.live) {
                        try fail("allocated block \(block), which the model has in use (count \(model.counts[Int(block)]), pending \(model.isPending(block)), held \(model.isHeld(block)))")
                    }
                    for block in blocks { model.counts[Int(block)] = 1 }
                    allocations += 1
                case 0..<9 where !dataBlocks.isEmpty:
                    let range = Self.usedRange(from: dataBlocks.randomElement(using: &random)!, model.counts, &random)
                    history.append("retain \(range)")
                    space.retain(range)
                    for block in range { model.counts[Int(block)] += 1 }
                case 0..<14 where !dataBlocks.isEmpty:
                    let range = Self.usedRange(from: dataBlocks.randomElement(using: &random)!, model.counts, &random)
                    history.append("release \(range)")
                    space.release(range)
                    for block in range {
                        model.counts[Int(block)] -= 1
                        if model.counts[Int(block)] == 0 { model.freedThisGeneration.insert(block) }
                    }
                case 0..<19:
                    let key = TreeKey(object: random.next() % 60, kind: 1, offset: random.next() % 8)
                    let remove = Int.random(in: 0..<3, using: &random) == 0
                    let size = Int.random(in: 10...300, using: &random)
                    history.append(remove ? "fs remove \(key)" : "fs upsert \(key)")
                    if try !Self.change(fsTree, key, remove: remove, size: size) {
                        guard model.freeCount(fsLive: fsPages.live) < 2 * fsTree.sparesForOneChange else {
                            try fail("the filesystem tree found no space with \(model.freeCount(fsLive: fsPages.live)) blocks free")
                        }
                        fsNoSpace += 1
                    }
                default:
                    generation += 1
                    history.append("commit \(generation)")
                    history.append("free before commit: \(model.freeCount(fsLive: fsPages.live)), unrecorded \(space.unrecordedBlocks), changes \(space.changes.count)")
                    let keptBefore = space.reusableNodes.kept
                    let fsCommit = try fsTree.commit(generation: generation)
                    let result = try space.commit(generation: generation, trees: [CommittedTree(pages: fsPages, commit: fsCommit)])
                    maxRounds = max(maxRounds, result.rounds)
                    poolUsed += result.poolUsed
                    poolSize += result.poolBlocks
                    reruns += result.attempts - 1
                    // The model's commit: this generation's frees become pending, the pending
                    // frees of durable generations before it retire.
                    let fsBefore = model.fsNodes, blockTreeBefore = model.blockTreeNodes
                    model.fsNodes = try Self.nodes(of: fsTree)
                    model.blockTreeNodes = try Self.nodes(of: space.blockTree.tree)
                    var freed = model.freedThisGeneration
                    freed.formUnion(fsBefore.subtracting(model.fsNodes))
                    let replaced = blockTreeBefore.subtracting(model.blockTreeNodes)
                    freed.formUnion(replaced)
                    model.freedThisGeneration = []
                    // Kept nodes the tree wrote again: kept before, old enough, and no
                    // longer pending.
                    var reused = Set<UInt64>()
                    for block in model.fsNodes.subtracting(fsBefore) where model.isPending(block) {
                        let freedIn = model.pending.first { $0.value.contains(block) }!.key
                        guard keptBefore.contains(block), freedIn <= min(model.durable, generation - 2) else {
                            try fail("the tree wrote block \(block), pending since generation \(freedIn) (kept \(keptBefore.contains(block)), durable \(model.durable))")
                        }
                        model.pending[freedIn]!.remove(block)
                        reused.insert(block)
                    }
                    guard result.nodesReused == reused.count else {
                        try fail("the commit reports \(result.nodesReused) nodes reused, the model \(reused.count)")
                    }
                    reusedNodes += reused.count
                    var retiring = Set<UInt64>()
                    for (older, blocks) in model.pending where older <= min(model.durable, generation - 1) {
                        let stays = blocks.filter { keptBefore.contains($0) }
                        retiring.formUnion(blocks.subtracting(stays))
                        model.pending[older] = stays.isEmpty ? nil : stays
                    }
                    model.pending = model.pending.filter { !$0.value.isEmpty }
                    model.replacedBlockTreeNodes.subtract(retiring)
                    model.replacedBlockTreeNodes.formUnion(replaced)
                    if !freed.isEmpty { model.pending[generation] = freed }
                    if !retiring.isEmpty { model.held[generation] = retiring }
                    retired += retiring.count
                    model.settle()

                    guard Set(result.pendingFrees.flatMap { Array($0) }) == freed else {
                        try fail("the commit reports pending frees \(result.pendingFrees), the model \(freed.sorted())")
                    }
                    guard Set(result.retired.flatMap { Array($0.blocks) }) == retiring else {
                        try fail("the commit retired \(result.retired), the model \(retiring.sorted())")
                    }
                    if let problem = try Self.problem(space, against: model) { try fail(problem) }
                    // Only replaced filesystem-tree nodes are kept, and only while pending.
                    let freedNodes = fsBefore.subtracting(model.fsNodes)
                    for range in space.reusableNodes.kept.ranges {
                        for block in range where !model.isPending(block) || (!freedNodes.contains(block) && !keptBefore.contains(block)) {
                            try fail("block \(block) is kept for reuse, and is not a pending freed node")
                        }
                    }
                    if !reusingNodes && space.reusableNodeCount > 0 { try fail("nodes kept with reuse off") }
                    _ = try fsTree.check()
                    commits += 1
                    if Int.random(in: 0..<4, using: &random) > 0 {
                        // The caller's punch (of which only the kept nodes let go after
                        // their generation's punch are the block space's business).
                        _ = space.reusableNodes.startPunch()
                        space.reusableNodes.finishPunch(succeeded: true)
                        space.commitIsDurable(generation: generation)
                        model.durable = generation
                        model.held = model.held.filter { $0.key > generation }
                        model.settle()
                        if Int.random(in: 0..<4, using: &random) == 0 {
                            // Mount at the durable roots: nothing in memory survives.
                            evictions += space.groupLoads
                            summaryScans += space.blockTree.summaryScans
                            summariesByNeighbours += space.blockTree.summaryUpdatesByNeighbours
                            space = try Self.openSpace(io, root: result.blockTreeRoot, reusingNodes: reusingNodes)
                            fsPages = space.pages(forTree: Self.fsTreeID)
                            fsTree = try CopyOnWriteTree(pages: fsPages, imageID: 9, treeID: Self.fsTreeID, root: fsCommit.root)
                            if let problem = try Self.problem(space, against: model) { try fail(problem) }
                            reopens += 1
                        }
                    }
                }
                } catch let error as FSError {
                    try fail("\(error)")
                }
                guard space.loadedGroupCount <= 2 else { try fail("\(space.loadedGroupCount) groups loaded, at most 2 allowed") }
            }
            evictions += space.groupLoads
            summaryScans += space.blockTree.summaryScans
            summariesByNeighbours += space.blockTree.summaryUpdatesByNeighbours
        }
        print("block space model test\(reusingNodes ? " with nodes reused" : ""): \(reusedNodes) nodes reused, \(run.seeds.count) seeds x \(run.operations) operations; \(allocations) allocations, \(commits) commits (at most \(maxRounds) rounds of the fixed point, \(poolUsed) of \(poolSize) pool blocks used, \(reruns) reruns with a doubled pool), \(reopens) reopens, \(retired) blocks retired, \(evictions) group loads, \(fsNoSpace) tree changes refused for space; summaries: \(summaryScans) by a scan of the group, \(summariesByNeighbours) by the freed blocks' neighbours")
        if !run.customized {
            if reusingNodes { XCTAssertGreaterThan(reusedNodes, 50, "kept nodes must be written again") }
            XCTAssertGreaterThan(commits, 150)
            XCTAssertGreaterThan(reopens, 20)
            XCTAssertGreaterThan(retired, 500)
            XCTAssertGreaterThanOrEqual(maxRounds, 2, "the fixed point must need more than one round sometimes")
            XCTAssertGreaterThan(evictions, 100, "groups must be loaded again after eviction")
            XCTAssertGreaterThan(summariesByNeighbours, 100, "groups where blocks were only freed")
            XCTAssertGreaterThan(summaryScans, 100, "groups where blocks were allocated")
        }
    }

    static func openSpace(_ io: MemoryPageIO, root: CopyOnWriteTree.Root?, reusingNodes: Bool = false) throws -> BlockSpace {
        let space = try BlockSpace(io: io, imageID: 9, blockTreeID: blockTreeID, root: root, firstBlock: firstBlock, endBlock: endBlock,
                                   blocksPerGroup: blocksPerGroup, maximumLoadedGroups: 2)
        space.reusesFreedNodes = reusingNodes
        space.reusableNodeLimit = 10
        return space
    }

    /// What differs between the block tree and the model (runs, pending frees, summaries),
    /// after the tree's own check; nil when nothing does.
    static func problem(_ space: BlockSpace, against model: Model) throws -> String? {
        let tree = space.blockTree
        _ = try tree.tree.check()
        let runs = try tree.allRuns(), expected = model.runs
        guard runs == expected else { return "runs \(runs)\nmodel \(expected)" }
        var pending: [UInt64: Set<UInt64>] = [:]
        for item in try tree.pendingFrees(through: BlockReferenceTree.maximumPendingGeneration) {
            pending[item.generation, default: []].formUnion(item.blocks)
        }
        guard pending == model.pending else { return "pending frees \(pending), the model \(model.pending)" }
        let summaries = try tree.storedGroupSummaries()
        guard summaries == model.summaries else { return "group summaries \(summaries), the model \(model.summaries)" }
        return nil
    }

    /// The blocks of a tree's nodes.
    static func nodes(of tree: CopyOnWriteTree) throws -> Set<UInt64> {
        var blocks = Set<UInt64>()
        try tree.forEachNodeBlock { blocks.insert($0) }
        return blocks
    }

    /// Upserts `key` (a value of `size` bytes) or removes it; false when the tree found no
    /// space (and so changed nothing).
    static func change(_ tree: CopyOnWriteTree, _ key: TreeKey, remove: Bool, size: Int) throws -> Bool {
        do {
            if remove { try tree.remove(key) } else { try tree.upsert(key, [UInt8](repeating: UInt8(key.offset), count: size)) }
            return true
        } catch .noSpace {
            return false
        }
    }

    /// Up to 6 data blocks in use from `start` on.
    static func usedRange(from start: Int, _ counts: [UInt32], _ random: inout SplitMix64) -> Range<UInt64> {
        var end = start
        let length = Int.random(in: 1...6, using: &random)
        while end < counts.count, counts[end] > 0, end - start < length { end += 1 }
        return UInt64(start)..<UInt64(end)
    }
}
