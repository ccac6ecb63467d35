/// What one commit did (for tests, status and benchmarks).
public struct VolumeCommitReport: Sendable {
    public var generation: UInt64
    public var filesystemNodesWritten: Int
    public var blockTreeNodesWritten: Int
    /// Bytes of RAM pieces placed in the image.
    public var placedBytes: Int
    /// Blocks punched: pending frees this commit retired.
    public var punchedBlocks: Int
}

extension TreeVolume {
    /// Commits the oldest closed generation (closing the open one when none is closed;
    /// the journal continues in a new chain first), in this order:
    /// 1. wait for the operations inside it to leave (new ones join the next generation);
    /// 2. write its net state into the filesystem tree, placing RAM pieces longer than an
    ///    inline extent in newly allocated blocks, and carry on with unfinished drops;
    /// 3. hand the extents' reference changes to the block space: the first retain of a
    ///    block allocated for this commit is its allocation's reference, further ones add
    ///    to it, and releases follow every retain;
    /// 4. commit the filesystem tree, then the block space (its fixed point);
    /// 5. sync: every node, placed byte and data block is durable;
    /// 6. write the commit slot naming the new journal chain, sync: the commit is durable;
    /// 7. publish it (`current`), retire the generation from the delta, release the old
    ///    journal chain (a pending free of the next commit);
    /// 8. punch the pending frees this commit retired (freed by commits no slot names any
    ///    more), then tell the block space the commit is durable, which lets it hand them
    ///    out again. A crash before the punch leaves them as pending items of a commit
    ///    older than the durable one: the next commit retires (and punches) them again.
    ///
    /// A failure before the slot is written leaves the image at its last durable commit;
    /// the volume is then failed (`failure`), since the block space's recorded changes and
    /// the tree's working copy may hold part of the generation: reopening the image starts
    /// cleanly from the last durable commit. A failure after the slot is durable (the
    /// punch) does not lose the commit.
    @discardableResult
    public func commit() throws(FSError) -> VolumeCommitReport {
        try committing { (generation, chain) throws(FSError) in try commit(generation, journal: chain) }
    }

    /// Runs `body` as the commit of the oldest closed generation (closing the open one
    /// when none is closed), with the journal continued in a new chain first: the old
    /// chain then holds frames of this generation and older ones only, and the new one
    /// (which the slot will name) the rest, with maybe a few of this generation that
    /// replay passes over by their tag. The old chain is released once no slot names it.
    /// A failure fails the volume.
    func committing(_ body: (DeltaGeneration, (head: LogSegment, sequence: UInt64)) throws(FSError) -> VolumeCommitReport)
        throws(FSError) -> VolumeCommitReport {
        if let failure { throw failure }
        do {
            let oldJournal = journal
            journal = try journal.continueInNewLog()
            let newChain = (head: journal.head, sequence: journal.nextSequence)
            var layers = delta.layers()
            if layers.count == 1 {
                _ = delta.close()
                layers = delta.layers()
            }
            let generation = layers.last!
            delta.waitUntilQuiet(generation)
            let report = try body(generation, newChain)
            oldJournal.releaseSegments()
            return report
        } catch {
            failure = error
            throw error
        }
    }

    private func commit(_ generation: DeltaGeneration, journal chain: (head: LogSegment, sequence: UInt64)) throws(FSError) -> VolumeCommitReport {
        let number = generation.number
        // 2. The generation into the tree.
        var fresh = RangeSet<UInt64>()
        var placedBytes = 0
        let removed = try filesystem.apply(generation) { (bytes) throws(FSError) -> [Extent] in
            placedBytes += bytes.count
            return try self.place(bytes, fresh: &fresh)
        }
        _ = try filesystem.continueDrops(budget: max(0, FileSystemTree.dropBudget - removed))
        // 3. References.
        let references = filesystem.takeReferenceChanges()
        for range in references.retained {
            var rest = RangeSet(range)
            let claimed = rest.intersection(fresh)
            fresh.subtract(claimed)
            rest.subtract(claimed)
            for blocks in rest.ranges { space.retain(blocks) }
        }
        for blocks in references.released { space.release(blocks) }
        for blocks in fresh.ranges { space.release(blocks) }
        // 4. Both trees.
        let filesystemCommit = try filesystem.tree.commit(generation: number)
        var report = try finishCommit(generation, filesystemCommit, journal: chain)
        report.placedBytes = placedBytes
        return report
    }

    /// Steps 4 (the block space's part) to 8 of a commit whose filesystem tree is
    /// committed (`commit`, `bulkLoad`).
    func finishCommit(_ generation: DeltaGeneration, _ filesystemCommit: CopyOnWriteTree.Commit,
                      journal chain: (head: LogSegment, sequence: UInt64)) throws(FSError) -> VolumeCommitReport {
        let number = generation.number
        let spaceCommit = try space.commit(generation: number,
                                           trees: [CommittedTree(pages: filesystemPages, commit: filesystemCommit)])
        // 5 and 6. Durable nodes, then the durable slot.
        try storage.sync()
        var slot = current
        slot.generation = number
        slot.cleanlyUnmounted = false
        slot.filesystemTree = filesystemCommit.root
        slot.blockTree = spaceCommit.blockTreeRoot
        slot.journal = chain.head
        slot.journalSequence = chain.sequence
        try CommitSlots.write(slot, to: storage)
        // 7. Published.
        current = slot
        delta.retire(generation)
        // 8. Punches, then reuse.
        var punched = 0
        for (_, blocks) in spaceCommit.retired {
            try storage.punch((blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift))
            punched += blocks.count
        }
        space.commitIsDurable(generation: number)
        return VolumeCommitReport(generation: number, filesystemNodesWritten: filesystemCommit.writtenBlocks,
                                  blockTreeNodesWritten: spaceCommit.blockTreeNodesWritten, placedBytes: 0,
                                  punchedBlocks: punched)
    }

    /// Writes `bytes` into newly allocated data blocks (as many runs as the free space
    /// gives) and returns the extents holding them; the blocks join `fresh`.
    func place(_ bytes: [UInt8], fresh: inout RangeSet<UInt64>) throws(FSError) -> [Extent] {
        var extents: [Extent] = []
        var written = 0
        let blockSize = BackingStore.blockSize
        while written < bytes.count {
            let wanted = UInt64((bytes.count - written + blockSize - 1) / blockSize)
            let blocks = try space.allocateData(upTo: wanted)
            fresh.insert(contentsOf: blocks)
            let length = min(bytes.count - written, blocks.count * blockSize)
            let offset = blocks.lowerBound << BackingStore.blockShift
            try bytes.withUnsafeBytes { raw in
                Result { () throws(FSError) in
                    try storage.write(UnsafeRawBufferPointer(rebasing: raw[written..<written + length]), at: offset)
                }
            }.get()
            extents.append(.mmapOffload(offset: offset, size: UInt64(length)))
            written += length
        }
        return extents
    }
}
