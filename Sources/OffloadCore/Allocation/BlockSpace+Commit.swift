/// A tree committed in the generation being committed, with the store its nodes came from.
public struct CommittedTree {
    public var pages: BlockSpacePages
    public var commit: CopyOnWriteTree.Commit

    public init(pages: BlockSpacePages, commit: CopyOnWriteTree.Commit) {
        self.pages = pages
        self.commit = commit
    }
}

/// What `BlockSpace.commit` did, and what the caller must do next.
public struct BlockSpaceCommit: Sendable {
    public var generation: UInt64
    /// The block tree's new root (nil: empty), for the commit slot.
    public var blockTreeRoot: CopyOnWriteTree.Root?
    /// Blocks this generation freed, now pending frees of it, ascending: data blocks and
    /// replaced nodes of every tree, the block tree's own included (those keep their
    /// node runs until retired). The caller punches them once this commit is durable and
    /// before the next commit, which (once told it is durable) deletes their pending
    /// items.
    public var pendingFrees: [Range<UInt64>]
    /// Pending frees of earlier generations this commit deleted: free in the block tree,
    /// handed out again after `commitIsDurable(generation:)` for this commit.
    public var retired: [(generation: UInt64, blocks: Range<UInt64>)]
    /// Rounds of the fixed point that recorded the block tree's own node changes.
    public var rounds: Int
    /// Blocks of the reserved node pool (of the last attempt), and how many became
    /// block-tree nodes.
    public var poolBlocks: Int
    public var poolUsed: Int
    /// Times the settling ran (more than once only when a pool ran out and was doubled).
    public var attempts: Int
    public var blockTreeNodesWritten: Int
    /// Freed nodes kept unpunched that the committed trees wrote nodes on
    /// (`ReusableNodes`).
    public var nodesReused: Int
}

extension BlockSpace {
    /// Rounds after which the fixed point is taken to be stuck (see `settle`); measured
    /// settling takes 1 to 3.
    static let maximumSettlingRounds = 16

    /// Commits generation `generation`: applies its recorded reference changes and the
    /// node changes of `trees` (each committed in this generation already) to the block
    /// tree, records what the block tree's own changes allocated and freed until nothing
    /// new changes (the fixed point), with nodes from a pool reserved first, brings the
    /// touched groups' summaries up to date, and commits the block tree. Deletes the
    /// pending frees of generations up to the last durable one before this.
    ///
    /// Nothing is made durable here: the caller syncs, writes the commit slot with the
    /// roots, calls `commitIsDurable` when the slot is durable (and no older reader
    /// remains), and punches `pendingFrees`. The caller must not give the trees'
    /// `freedBlocks` back to their stores: they are freed here, through the block tree.
    ///
    /// All or nothing: when a change is refused (a reference to a free block, say) or the
    /// space cannot hold the block tree's new nodes (`.noSpace`), the block tree is
    /// abandoned, the pool given back, and the recorded changes stay, so the commit may be
    /// tried again. The pool is sized from the changes (`poolEstimate`; `poolBlocks`
    /// overrides it, for tests), or is every free block when fewer are free; a pool that
    /// runs out is doubled and the settling run again from the start, so a commit fails
    /// on space only when the whole free space could not hold its nodes.
    public func commit(generation: UInt64, trees: [CommittedTree] = [], poolBlocks: Int? = nil) throws(FSError) -> BlockSpaceCommit {
        guard generation > committedGeneration, generation <= BlockReferenceTree.maximumPendingGeneration else {
            throw .invalidArgument("commit generation \(generation) is not above the last one, \(committedGeneration)")
        }
        for record in trees where record.pages.live.count != record.commit.writtenBlocks {
            throw .invalidArgument("tree \(record.pages.treeID) has \(record.pages.live.count) blocks handed out and \(record.commit.writtenBlocks) written: commit the tree before the block space")
        }
        let tree = blockTree.tree
        precondition(tree.dirtyNodeCount == 0 && tree.spareBlockCount == 0, "the block tree changed outside a commit")
        let retireThrough = min(durableGeneration, generation - 1)
        // Kept freed nodes the committed trees wrote: their pending frees go, their node
        // runs come (the block is never free); those still kept are not retired.
        let reused = reusableNodes.reused { block in trees.contains { $0.pages.live.contains(block) } }
        let kept = reusableNodes.kept
        let retiring = try blockTree.pendingFrees(through: retireThrough).filter { !kept.containsAll($0.blocks) }.count
        let inputs = changes.count + retiring + trees.reduce(0) { $0 + $1.pages.live.count + $1.commit.freedBlocks.count }
        var size = max(1, poolBlocks ?? Self.poolEstimate(inputs: inputs, level: tree.committedRoot?.level ?? 0))
        var attempts = 0
        while true {
            attempts += 1
            let (pool, complete) = try reservePool(size)
            do {
                var result = try settle(generation: generation, trees: trees, retireThrough: retireThrough,
                                        reused: reused, kept: kept)
                result.poolBlocks = pool.reduce(0) { $0 + $1.count }
                result.attempts = attempts
                result.nodesReused = reused.count
                finish(result, trees: trees, pool: pool, reused: reused)
                return result
            } catch {
                tree.abandon()
                blockTree.abandonChanges()
                endPool(pool)
                // A pool that ran out: the settling changed nothing; again with twice as
                // many blocks, unless it held every free block already.
                guard error == .noSpace, blockTreePages.ranOut, complete else { throw error }
                size *= 2
            }
        }
    }

    /// Blocks the pool starts with: for each change, a path of copies and a split (most
    /// changes share their paths, and the rounds that record nodes copy little more), plus
    /// the spares one tree change holds. Measured use is under a tenth of it; a pool that
    /// runs out is doubled, so the estimate trades reserved space against a rerun.
    static func poolEstimate(inputs: Int, level: UInt8) -> Int {
        let level = Int(level) + 1  // the tree may grow a level
        return (inputs / 8 + 4) * (level + 2) + 2 * level + 5
    }

    /// Takes up to `size` blocks out of the free space for the block tree's nodes
    /// (several runs when no single one is free): fewer when fewer are free, since the
    /// commit may need far fewer than the estimate.
    private func reservePool(_ size: Int) throws(FSError) -> (pool: [Range<UInt64>], complete: Bool) {
        var pool: [Range<UInt64>] = [], total = 0
        while total < size {
            do throws(FSError) {
                let blocks = try take(UInt64(size - total))
                pool.append(blocks)
                total += blocks.count
            } catch .noSpace {
                break
            } catch {
                for blocks in pool { giveBack(blocks) }
                throw error
            }
        }
        blockTreePages.begin(pool: pool.flatMap { Array($0) })
        return (pool, total == size)
    }

    /// Gives back every pool block the block tree does not hold as a committed node
    /// (`used`: those are recorded in the tree now, so no longer `takenBlocks`).
    private func endPool(_ pool: [Range<UInt64>], keeping used: Set<UInt64> = []) {
        for blocks in pool {
            let kept = Self.ranges(of: blocks.filter { used.contains($0) })
            var cursor = blocks.lowerBound
            for range in kept + [blocks.upperBound..<blocks.upperBound] {
                // Prepared (fallocated) with the pool and never written: their disk space
                // goes back too, or every commit's spare pool would stay on the disk.
                unprepare(cursor..<range.lowerBound)
                giveBack(cursor..<range.lowerBound)
                takenBlocks.remove(contentsOf: range)
                cursor = range.upperBound
            }
        }
        blockTreePages.end()
    }

    /// The fixed point: applies the generation's changes to the block tree, then records
    /// the block tree's own node changes (new nodes as node runs, replaced committed nodes
    /// as pending frees, nodes dropped again as free) and the touched groups' summaries,
    /// round after round until a round finds nothing new, then commits the block tree.
    ///
    /// A replaced block-tree node keeps its run while pending (it is released when the
    /// pending free retires, with the next commit's inputs). Releasing it here would
    /// change the leaf holding its run, anywhere in the tree, whose copy replaces another
    /// node, whose run is in yet another leaf: measured, one released block made a
    /// 40-leaf tree copy every leaf, one per round (a leaf's block lies in the next
    /// leaf's range when blocks are handed out in order). So the rounds change only three
    /// places, each a few neighbouring leaves: the pool's runs (new and dropped nodes: the
    /// pool's blocks are neighbours), the pending frees of this generation (one key
    /// range), and the summaries (one key range). A round copies a node only the first
    /// time it changes one of them, or splits one as items are added there; so the
    /// rounds settle after a few (measured: at most 3 in the tests), whatever the tree's
    /// size. `maximumSettlingRounds` turns a loop that did not settle (a bug) into a
    /// failed commit rather than a hang.
    private func settle(generation: UInt64, trees: [CommittedTree], retireThrough: UInt64,
                        reused: [(generation: UInt64, block: UInt64)], kept: BlockRanges) throws(FSError) -> BlockSpaceCommit {
        let tree = blockTree.tree
        // Any failure abandons the whole settling, so single changes need not hold their
        // worst case of blocks first.
        blockTree.reservesBlocksPerChange = false
        defer { blockTree.reservesBlocksPerChange = true }
        var freed: [Range<UInt64>] = []
        assert(Self.referenceChangeBeforeItsAllocation(changes) == nil,
               "a retain or release of blocks before their allocation: \(Self.referenceChangeBeforeItsAllocation(changes).map { "\($0)" } ?? "")")
        for (blocks, use) in Self.joinedAllocations(changes) { try blockTree.insertAllocated(blocks, use: use) }
        for change in Self.joinedReferenceChanges(changes) {
            switch change {
            case .allocate: preconditionFailure("allocations are recorded above")
            case .retain(let blocks), .release(let blocks):
                // A damaged image's extent may name blocks past the image, in a run of its
                // damaged block tree: what they free would be summarised group by group (a
                // fuzzed image's release of 1.7e13 blocks asked for 3 GiB at the commit).
                guard blocks.lowerBound >= firstBlock, blocks.upperBound <= endBlock else {
                    throw .damagedImage("a file's extent names blocks \(blocks), outside the block space \(firstBlock)..<\(endBlock)")
                }
                if case .retain = change { try blockTree.retain(blocks) } else { freed += try blockTree.release(blocks) }
            }
        }
        try blockTree.removePendingBlocks(reused)
        for record in trees {
            for blocks in Self.ranges(of: record.pages.live.sorted()) {
                try blockTree.insertAllocated(blocks, use: .node(tree: record.pages.treeID))
            }
            for blocks in Self.ranges(of: record.commit.freedBlocks) { freed += try blockTree.release(blocks) }
        }
        let retired = try blockTree.removePendingFrees(through: retireThrough, keeping: kept)
        try releaseRetiredNodes(retired.map(\.blocks))
        var pending = Self.coalesced(freed)
        try blockTree.addPendingFrees(generation: generation, pending)

        var recordedNodes = Set<UInt64>(), recordedFreed = Set<UInt64>()
        var rounds = 0
        while true {
            try blockTree.updateGroupSummaries()
            let dirty = Set(tree.dirty.keys)
            let newNodes = dirty.subtracting(recordedNodes), dropped = recordedNodes.subtracting(dirty)
            let newlyFreed = tree.freedSinceCommit.subtracting(recordedFreed)
            if newNodes.isEmpty && dropped.isEmpty && newlyFreed.isEmpty { break }
            rounds += 1
            guard rounds <= Self.maximumSettlingRounds else {
                throw .io("the block tree's commit of generation \(generation) did not settle in \(Self.maximumSettlingRounds) rounds")
            }
            // Nodes made and dropped in this commit were never in a root: free at once.
            for blocks in Self.ranges(of: dropped.sorted()) { _ = try blockTree.release(blocks) }
            for blocks in Self.ranges(of: newNodes.sorted()) {
                try blockTree.insertAllocated(blocks, use: .node(tree: tree.treeID))
            }
            // Replaced nodes become pending frees and keep their runs until retired
            // (`releaseRetiredNodes`): pending frees of one generation are neighbours in
            // the tree, their runs are not.
            let freedNodes = Self.ranges(of: newlyFreed.sorted())
            try blockTree.addPendingFrees(generation: generation, freedNodes)
            pending += freedNodes
            recordedNodes.subtract(dropped)
            recordedNodes.formUnion(newNodes)
            recordedFreed.formUnion(newlyFreed)
        }
        let committed = try tree.commit(generation: generation)
        assert(Set(committed.freedBlocks) == recordedFreed, "the block tree freed nodes the fixed point did not record")
        assert(committed.writtenBlocks == recordedNodes.count, "the block tree wrote nodes the fixed point did not record")
        return BlockSpaceCommit(generation: generation, blockTreeRoot: committed.root, pendingFrees: Self.coalesced(pending),
                                retired: retired, rounds: rounds, poolBlocks: 0, poolUsed: recordedNodes.count, attempts: 0,
                                blockTreeNodesWritten: committed.writtenBlocks, nodesReused: 0)
    }

    /// Releases the runs the block tree's own replaced nodes kept while pending (see
    /// `settle`), now that their pending frees are deleted. Other pending blocks have no
    /// run: their references were dropped when they were freed.
    private func releaseRetiredNodes(_ retired: [Range<UInt64>]) throws(FSError) {
        for blocks in retired {
            for run in try blockTree.runs(overlapping: blocks) {
                guard run.use == .node(tree: blockTree.tree.treeID), run.count == 1 else {
                    throw .damagedImage("block tree: pending free \(blocks) overlaps run \(run), which is not a replaced block tree node")
                }
                let inside = max(run.blocks.lowerBound, blocks.lowerBound)..<min(run.blocks.upperBound, blocks.upperBound)
                _ = try blockTree.release(inside)
            }
        }
    }

    /// After the block tree committed: what it now records is no longer `takenBlocks`, the
    /// pool's rest goes back, the retired blocks wait for the commit to be durable.
    private func finish(_ result: BlockSpaceCommit, trees: [CommittedTree], pool: [Range<UInt64>],
                        reused: [(generation: UInt64, block: UInt64)]) {
        reusableNodes.committed(reused)
        if reusesFreedNodes {
            let written = trees.reduce(0) { $0 + $1.pages.live.count }
            reusableNodes.add(generation: result.generation, trees.flatMap(\.commit.freedBlocks))
            reusableNodes.evict(keeping: reusableNodeLimit ?? Self.reusableNodeBound(written: written),
                                punchedThrough: durableGeneration)
        }
        for change in changes {
            if case .allocate(let blocks, _) = change { takenBlocks.remove(contentsOf: blocks) }
        }
        for record in trees {
            // By runs: one removal a block costs a shift of `takenBlocks`'s ranges each, which a
            // bulk load of millions of nodes felt.
            for blocks in Self.ranges(of: record.pages.live.sorted()) { takenBlocks.remove(contentsOf: blocks) }
            record.pages.live.removeAll()
        }
        let unused = Set(blockTreePages.available)
        endPool(pool, keeping: Set(pool.flatMap { Array($0) }).subtracting(unused))
        held.append((result.generation, result.retired.map(\.blocks)))
        changes.removeAll()
        committedGeneration = result.generation
    }

    /// How many freed nodes may stay kept after a commit that wrote `written` nodes: the
    /// frees of the last few commits like it (a node freed by commit g is reusable from
    /// commit g + 2 on), at least enough for small commits, and at most 16 MiB of blocks
    /// that `df` counts as used.
    static func reusableNodeBound(written: Int) -> Int {
        min(max(256, 4 * written), 4096)
    }

    /// The generation's allocations, sorted and joined where one ends where the next of
    /// the same use begins: one block tree change for what many files took one after the
    /// other (the allocator hands out ascending blocks), where each took four descents of
    /// the tree and a rewrite of its runs (`cp -a` of /usr/include: 22% of a commit's
    /// samples). Recorded before every retain and release, which is the order they could
    /// have had: a block is retained or released only once allocated, and a block
    /// released in a generation is pending, not free, until a later commit, so none is
    /// allocated after its release in one generation. Overlapping allocations stay apart,
    /// so the block tree refuses the second as before.
    static func joinedAllocations(_ changes: [BlockReferenceChange]) -> [(blocks: Range<UInt64>, use: BlockRun.Use)] {
        var allocations: [(blocks: Range<UInt64>, use: BlockRun.Use)] = []
        for change in changes {
            if case .allocate(let blocks, let use) = change, !blocks.isEmpty { allocations.append((blocks, use)) }
        }
        allocations.sort { $0.blocks.lowerBound < $1.blocks.lowerBound }
        var joined: [(blocks: Range<UInt64>, use: BlockRun.Use)] = []
        joined.reserveCapacity(allocations.count)
        for allocation in allocations {
            if let last = joined.last, last.use == allocation.use, last.blocks.upperBound == allocation.blocks.lowerBound {
                joined[joined.count - 1].blocks = last.blocks.lowerBound..<allocation.blocks.upperBound
            } else {
                joined.append(allocation)
            }
        }
        return joined
    }

    /// A retain or release that comes before an allocation of some of its blocks (nil:
    /// none). Applied in order, such a change failed the commit ("not all allocated");
    /// with the allocations recorded first it would count against the new allocation, so
    /// debug builds check that no caller records one (none does: file blocks are claimed
    /// before their extents' retains, a commit's placed blocks allocated before their
    /// release, journal segments allocated before they are released).
    static func referenceChangeBeforeItsAllocation(_ changes: [BlockReferenceChange]) -> BlockReferenceChange? {
        var allocatedLater = BlockRanges()
        for change in changes.reversed() {
            switch change {
            case .allocate(let blocks, _):
                if !blocks.isEmpty { allocatedLater.insert(contentsOf: blocks) }
            case .retain(let blocks), .release(let blocks):
                if !blocks.isEmpty && allocatedLater.overlaps(blocks) { return change }
            }
        }
        return nil
    }

    /// The generation's retains and releases in their order, a change joined with the one
    /// before it when both are of the same kind and it begins where that one ends (a
    /// count changes block by block, so one change over both ranges is the same change;
    /// the order of changes to the same blocks is kept).
    static func joinedReferenceChanges(_ changes: [BlockReferenceChange]) -> [BlockReferenceChange] {
        var joined: [BlockReferenceChange] = []
        for change in changes {
            switch (joined.last, change) {
            case (_, .allocate):
                continue
            case (.retain(let last)?, .retain(let next)) where last.upperBound == next.lowerBound && !next.isEmpty:
                joined[joined.count - 1] = .retain(last.lowerBound..<next.upperBound)
            case (.release(let last)?, .release(let next)) where last.upperBound == next.lowerBound && !next.isEmpty:
                joined[joined.count - 1] = .release(last.lowerBound..<next.upperBound)
            default:
                joined.append(change)
            }
        }
        return joined
    }

    /// Sorted block numbers as runs of consecutive ones.
    static func ranges(of blocks: [UInt64]) -> [Range<UInt64>] {
        coalesced(blocks.map { $0..<$0 + 1 })
    }

    /// Ranges sorted by start, neighbours joined.
    static func coalesced(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        var joined: [Range<UInt64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !range.isEmpty {
            if let last = joined.last, last.upperBound == range.lowerBound {
                joined[joined.count - 1] = last.lowerBound..<range.upperBound
            } else {
                joined.append(range)
            }
        }
        return joined
    }
}
