extension BlockSpace {
    /// Takes exactly `blocks` for file data or the journal, recorded like an allocation (one reference
    /// each, in the block tree at the next commit): blocks the block tree holds free that
    /// are in use all the same. Replay needs it: the journal of a crashed mount grew into
    /// segments (and placed data in blocks) after its last commit, so the block tree does
    /// not have them, and until the next commit records them nothing may be handed out
    /// over them. `.damagedImage` when a block is outside the space, or in use or pending
    /// in the block tree; a block taken already (claimed before) is damage too.
    public func claimData(_ blocks: Range<UInt64>, use: BlockRun.Use = .data) throws(FSError) {
        try claimData(RangeSet(blocks), use: use)
    }

    /// `claimData` of several ranges.
    public func claimData(_ ranges: RangeSet<UInt64>, use: BlockRun.Use = .data) throws(FSError) {
        precondition(use == .data || use == .journal, "tree nodes are claimed by no one")
        guard !ranges.isEmpty else { return }
        for blocks in ranges.ranges {
            guard blocks.lowerBound >= firstBlock, blocks.upperBound <= endBlock else {
                throw .damagedImage("blocks \(blocks) claimed for replay lie outside the block space \(firstBlock)..<\(endBlock)")
            }
            guard try blockTree.runs(overlapping: blocks).isEmpty, try blockTree.pendingBlocks(in: blocks).isEmpty else {
                throw .damagedImage("blocks \(blocks) claimed for replay are in use or pending in the block tree")
            }
            guard !takenBlocks.overlaps(blocks) else {
                throw .damagedImage("blocks \(blocks) claimed for replay twice (the journal's and a file's, or two files')")
            }
        }
        for blocks in ranges.ranges { take(claimed: blocks, use: use) }
    }

    private func take(claimed blocks: Range<UInt64>, use: BlockRun.Use) {
        precondition(!takenBlocks.overlaps(blocks), "claiming blocks \(blocks) handed out already")
        // Out of the loaded groups' free runs (groups loaded later subtract `taken`).
        var start = blocks.lowerBound
        while start < blocks.upperBound {
            let group = start / blocksPerGroup
            let end = min(blocks.upperBound, (group + 1) * blocksPerGroup)
            if let free = loaded.free(group) {
                let carved = free.take(at: start, upTo: end - start)
                precondition(carved == start..<end, "blocks \(start..<end), free in the block tree, are not free in memory")
            }
            start = end
        }
        takenBlocks.insert(contentsOf: blocks)
        changes.append(.allocate(blocks, use))
    }
}
