// Where the block space's use ends, for a capacity change (`TreeVolume+Capacity.swift`):
// a smaller capacity must keep every block in use.

extension BlockReferenceTree {
    /// The end of the last block a run or a pending free holds (0: none), wherever it
    /// lies: the run with the highest key (runs do not overlap) and the pending frees'
    /// coverage.
    public func usedEnd() throws(FSError) -> UInt64 {
        var end: UInt64 = 0
        if let last = try tree.floor(Self.lastRunKey) {
            end = try Self.run(last.key, last.value).blocks.upperBound
        }
        if let pendingEnd = try pendingCoverage().coveredEnd(below: Self.pendingFreeBase) { end = max(end, pendingEnd) }
        return end
    }
}

extension BlockSpace {
    /// The end of the last block in use, in the block tree (runs, pending frees) or only
    /// in memory (taken: handed out, claimed, the reserve; held); `firstBlock` when none is.
    public func usedEnd() throws(FSError) -> UInt64 {
        var end = max(firstBlock, try blockTree.usedEnd())
        if let last = takenBlocks.ranges.last { end = max(end, last.upperBound) }
        for entry in held { for blocks in entry.blocks { end = max(end, blocks.upperBound) } }
        return end
    }

    /// The blocks of the space not free (`freeBlockCount`: reads every group summary).
    public func usedBlockCount() throws(FSError) -> UInt64 {
        (endBlock - firstBlock) - min(endBlock - firstBlock, try freeBlockCount())
    }
}
