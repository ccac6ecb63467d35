#if canImport(Glibc)
import Glibc
#endif
/// What one commit did (for tests, status and benchmarks).
public struct VolumeCommitReport: Sendable {
    public var generation: UInt64
    public var filesystemNodesWritten: Int
    public var blockTreeNodesWritten: Int
    /// Bytes of RAM pieces placed in the image.
    public var placedBytes: Int
    /// Blocks punched: the pending frees the commit before this one started to punch
    /// (this commit waited for them; its own punch runs after it returns).
    public var punchedBlocks: Int
    /// Why those could not be punched (they stay pending; a later commit tries again).
    public var punchFailure: FSError?
    /// Nodes written on freed nodes kept unpunched (`ReusableNodes`), rather than on
    /// blocks from the free space.
    public var nodesReused = 0
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
    /// 7. publish it (`current`), retire the generation from the delta;
    /// 8. punch the pending frees of the commits before this one (no slot references
    ///    them now), and only then let the next commit retire them (delete their items);
    ///    their blocks are handed out once that commit is durable. The punch runs after
    ///    the commit returns (`VolumePunches`); the next commit waits for it before its
    ///    block space's commit. A crash before the punch finished leaves them pending:
    ///    opening punches them again.
    /// The old journal chain is released in the generation (a pending free of this commit).
    ///
    /// A failure before the slot is written leaves the image at its last durable commit;
    /// the volume is then failed (`failure`), since the block space's recorded changes and
    /// the tree's working copy may hold part of the generation: reopening the image starts
    /// cleanly from the last durable commit. A failure after the slot is durable (the
    /// punch) does not lose the commit.
    ///
    /// `cleanlyUnmounted` marks the slot so (`close` does, for its last commit).
    /// `progress` hears each step of the commit and how far it got (the upgrade's commit
    /// of a whole tree reports through it).
    @discardableResult
    public func commit(cleanlyUnmounted: Bool = false, progress: CommitProgress? = nil) throws(FSError) -> VolumeCommitReport {
        try committing(closingOpen: true) { (generation, chain) throws(FSError) in
            try commit(generation, journal: chain, cleanlyUnmounted: cleanlyUnmounted, progress: progress)
        }!
    }

    /// After a file allocation found no free space: commits (and waits for their punches)
    /// until blocks earlier operations freed can be handed out again, at most four times
    /// (a block released in generation g is a pending free of commit g, punched after
    /// commit g + 1, retired by commit g + 2 and reusable once the punch after that one
    /// is accepted). Stops early once at least `reclaimEnough` blocks came back (a commit
    /// frees its predecessor's journal chain, a few blocks: stopping at any growth
    /// stopped before the blocks an rm released). Returns true when the free space grew.
    /// The caller is outside any operation. A reader's epoch holds back the punch of what
    /// commits after its root freed, so before each commit `beforeEachCommit` lets go of
    /// the readers the caller keeps idle, and the readers still in flight from before the
    /// last commit are waited for, a short while at most (`readersCatchUp`): the caller's
    /// reads take no lock this holds, and one kept from before the commit that made the
    /// rm's blocks pending frees would keep them from being punched here (a fallocate
    /// loop on a full image beside a stream of lookups failed with ENOSPC once in about
    /// 2,500 reclaims with 1.4 GB reclaimable).
    public func reclaimFreedSpace(beforeEachCommit: () -> Void = {}) throws(FSError) -> Bool {
        // Freed nodes kept for reuse are pending, not free: they go to the punch too.
        letGoOfReusableNodes()
        // Counted as the room is: the image's free blocks, or fewer where the disk under it
        // has fewer (a reclaim that freed blocks the disk cannot give ran all four rounds).
        let usable = { () throws(FSError) -> UInt64 in
            try self.spaceLock.withLock { () throws(FSError) -> UInt64 in
                self.noteHostRoom()
                return min(try self.space.freeBlockCount(), self.space.hostFreeBlocks)
            }
        }
        let before = try usable()
        var after = before
        for _ in 0..<4 {
            readersCatchUp(letting: beforeEachCommit)
            try commit()
            waitForPunches()
            after = try usable()
            if after >= before + reclaimEnoughBlocks { break }
        }
        return after > before
    }

    /// Waits until no reader older than the last commit is left, or `readersCatchUpLimit`
    /// nanoseconds have passed (a reader held for long, by a caller's bug or a stalled
    /// read, only makes the reclaim find less), letting go of the caller's idle readers
    /// (`letGo`) at each look: a maintenance commit publishing meanwhile (it commits
    /// outside the caller's lock) moves the mark, and readers given back before it stay
    /// idle.
    private func readersCatchUp(letting letGo: () -> Void) {
        let deadline = MonotonicClock.nanoseconds() &+ Self.readersCatchUpLimit
        while true {
            letGo()
            guard let oldest = epochs.oldest, oldest < committedGeneration,
                  MonotonicClock.nanoseconds() < deadline else { return }
            usleep(50)
        }
    }

    /// How long a reclaim waits for the readers older than the last commit: 100 ms (a
    /// read takes microseconds, a cold one a few milliseconds).
    static let readersCatchUpLimit: UInt64 = 100_000_000

    /// The unmount's commits: every closed generation (and one more when freed nodes kept
    /// for reuse were let go), then the open one, whose slot is marked cleanly unmounted;
    /// then the punch it started is waited for (a failed punch
    /// is left to the next mount). The caller
    /// stopped every operation first (an operation after this starts a generation no
    /// clean slot holds). The journal chain the last slot names is empty: the next mount
    /// replays nothing.
    public func close() throws(FSError) {
        // Freed nodes kept for reuse go too, so that the image left behind holds no pending
        // frees older than its last commits (a later mount's capacity counts them as used):
        // a commit starts their punch, the clean one retires them.
        let letGo = letGoOfReusableNodes()
        // The clean slot's chain stays empty until the next mount lets it go: no large
        // first segment for it (`firstSegmentBytes`), whatever the last generation wrote.
        journalLock.withLock { unmounting = true }
        while delta.layers().count > 1 { try commit() }
        if letGo > 0 { try commit() }
        try commit(cleanlyUnmounted: true)
        // A punch that fails leaves its frees pending: the next mount punches them again
        // (the clean slot is durable already, so the unmount does not fail for it).
        waitForPunches()
        // The reserve's disk space goes back (the next mount takes a reserve of its own,
        // not necessarily the same blocks). After a crash it stays until those blocks are
        // used again.
        spaceLock.withLock { space.setReserveTarget(0) }
    }

    /// Closes the open generation: the journal continues in a new chain first (under the
    /// journal lock, so no frame of the next generation reaches the old chain, which goes
    /// once the closed generation's commit is durable), then the delta closes it. Frames of
    /// the closed generation appended after the switch land in the new chain, which replay
    /// passes over by their tag once that commit is durable (the old chain links to the
    /// new one, so before that, replay reads them). Returns nothing to commit yet: a later
    /// `commit`, `commitClosed` or unmount commits it.
    ///
    /// The caller's duty: no operation's file block calls ran in the open generation
    /// without their frame following before the close (the namespace closes under its own
    /// lock, between operations); the tags of blocks files touched would otherwise name
    /// a generation their frame is not in.
    public func closeOpenGeneration() throws(FSError) {
        if let failure { throw failure }
        do {
            try journalLock.withLock { () throws(FSError) in
                let switched = try switchChain()
                let closed = delta.close()
                chainSwitches.append(ChainSwitch(generation: closed.number, oldJournal: switched.oldJournal,
                                                 newChain: switched.newChain))
            }
        } catch {
            failure = error
            throw error
        }
    }

    /// Commits the oldest closed generation, if there is one (nil when none is closed:
    /// the open one stays open). The maintenance closes under the namespace lock and
    /// commits with this outside it.
    public func commitClosed() throws(FSError) -> VolumeCommitReport? {
        try committing(closingOpen: false) { (generation, chain) throws(FSError) in
            try commit(generation, journal: chain, cleanlyUnmounted: false)
        }
    }

    /// A chain switch made when a generation closed, for the commit of that generation.
    struct ChainSwitch {
        var generation: UInt64
        var oldJournal: MetadataLog?
        var newChain: (head: LogSegment, sequence: UInt64)
    }

    /// Continues the journal in a new chain (caller holds the journal lock): the first
    /// commit of a mount (opening's) starts the chain, later ones continue it. The new
    /// chain's first segment may take the whole metadata reserve, as the commit may.
    private func switchChain() throws(FSError) -> (oldJournal: MetadataLog?, newChain: (head: LogSegment, sequence: UInt64)) {
        logSpace.access = .commit
        defer { logSpace.access = .journal }
        let oldJournal = journal
        let newJournal: MetadataLog
        if let oldJournal {
            let ahead = unmounting ? 0 : firstSegmentBytes(after: oldJournal.appendedBytes)
            if ahead > MetadataLog.firstJournalSegmentBytes, let large = largeFirstSegment(ahead, after: oldJournal) {
                newJournal = large
            } else {
                // The clean slot's chain takes no frame: spare segments would be kept
                // unlinked by the clean commit, and known to no later mount.
                newJournal = try oldJournal.continueInNewLog(keepingSpares: !unmounting)
            }
        } else {
            newJournal = try MetadataLog(store: logSpace, imageID: current.imageID, stream: 0, firstSequence: firstSequence)
        }
        journal = newJournal
        journalBytesMirror.store(newJournal.appendedBytes, ordering: .relaxed)
        journalWriteOffset.store(newJournal.writeOffset, ordering: .relaxed)
        // Claims made before the switch append to the new chain.
        restoreJournalRoom(in: newJournal)
        return (oldJournal, (head: newJournal.head, sequence: newJournal.nextSequence))
    }

    /// The first segment of the chain that follows one of `bytes` appended: twice those
    /// bytes (an operation asks for twice its frame, `perform`), from 64 KiB
    /// (`MetadataLog.firstJournalSegmentBytes`) to 16 MiB, and at most a 64th of the
    /// capacity (docs/ARCHITECTURE.md, "Journal segments ahead of a commit's space lock").
    /// A chain grows a segment at a time, each taken under the space lock, which the commit
    /// of the generation just closed holds for its tree writes: a frame that needed a new
    /// segment then waited for the whole commit (a chmod every 15,000 at 1,000,000 files
    /// waited 390-520 ms), with its operation's inode locks and the namespace lock shared
    /// held. A first segment as large as the last generation's journal lets the next one
    /// append through the commit.
    func firstSegmentBytes(after bytes: UInt64) -> Int {
        let limit = min(UInt64(Self.largestFirstJournalSegment), current.capacityBytes / 64)
        let wanted = min(2 * bytes, limit) / UInt64(BackingStore.blockSize) * UInt64(BackingStore.blockSize)
        return max(MetadataLog.firstJournalSegmentBytes, Int(wanted))
    }

    static let largestFirstJournalSegment = 16 << 20

    /// The chain continued in a first segment of `bytes`, one run of free space, taken
    /// only while the free space holds `largeSegmentMargin` times that and an eighth of
    /// the capacity (the metadata reserve stays the frames' and the commit's, and an image
    /// low on space keeps its free blocks for data: on a full image a large segment taken
    /// between two reclaims made the next ENOSPC come sooner); nil otherwise, or when taking it failed (the chain is then
    /// as it was), and the chain continues as before, in 64 KiB of the reserve if need
    /// be. Caller holds the journal lock.
    private func largeFirstSegment(_ bytes: Int, after oldJournal: MetadataLog) -> MetadataLog? {
        // The free estimate is kept once files need blocks (a mount's first request); a
        // volume used without them (tools, some tests) keeps 64 KiB first segments.
        let blocks = UInt64(bytes) >> BackingStore.blockShift
        let enough = max(Self.largeSegmentMargin * blocks, (current.capacityBytes / 8) >> BackingStore.blockShift)
        guard files != nil, spaceLock.withLock({ space.usableFree }) >= enough else { return nil }
        logSpace.access = .none
        defer { logSpace.access = .commit }
        return try? oldJournal.continueInNewLog(firstSegmentBytes: bytes, wholly: true)
    }

    static let largeSegmentMargin: UInt64 = 16

    /// Runs `body` as the commit of the oldest closed generation (closing the open one
    /// when none is closed; the journal continues in a new chain first, `closeOpenGeneration`):
    /// the old chain then holds frames of this generation and older ones only, and the new
    /// one (which the slot will name) the rest, with maybe a few of this generation that
    /// replay passes over by their tag. The old chain is released once no slot names it.
    /// A generation the delta closed by itself (tests) switches chains here.
    /// A failure fails the volume.
    ///
    /// Locks: commits one at a time (`commitLock`); the journal lock for a chain switch;
    /// not the space lock while the closed generation's operations finish (they may need
    /// it for their frames' segments and their files' block calls: waiting for them with
    /// it held was a deadlock); then the space lock for the rest of the commit, with the
    /// whole metadata reserve open to it (and only then: operations' segments meanwhile
    /// keep to their quarter).
    /// With `closingOpen` false and no generation closed, commits nothing and returns nil
    /// (decided under the commit lock: another commit may have taken the closed one).
    func committing(closingOpen: Bool,
                    _ body: (DeltaGeneration, (head: LogSegment, sequence: UInt64)) throws(FSError) -> VolumeCommitReport)
        throws(FSError) -> VolumeCommitReport? {
        commitLock.lock()
        defer { commitLock.unlock() }
        if let failure { throw failure }
        do {
            if !delta.hasClosedGeneration {
                guard closingOpen else { return nil }
                try closeOpenGeneration()
            }
            let generation = delta.nextToCommit()
            let switched = try journalLock.withLock { () throws(FSError) -> ChainSwitch in
                if let first = chainSwitches.first, first.generation == generation.number {
                    return chainSwitches.removeFirst()
                }
                let made = try switchChain()
                return ChainSwitch(generation: generation.number, oldJournal: made.oldJournal, newChain: made.newChain)
            }
            // Spares linked so far are recorded first: the old chain may hold some.
            logSpace.recordLinkedSpares()
            // The old chain is released in this generation: a pending free of this commit,
            // reused only once neither this commit nor the one before (which names it) is
            // a slot. Released later, a crash in between would leak it for good.
            switched.oldJournal?.releaseSegments()
            // The last commit's punch is waited for without the space lock (operations go
            // on meanwhile), and accepted with it (`TreeVolume+Punches`).
            let punched = punches.finish()
            let report = try spaceLock.withLock { () throws(FSError) -> VolumeCommitReport in
                // The commit may take the whole metadata reserve (its nodes and placed
                // bytes), and refills it when done.
                space.reserveAccess = .commit
                defer { space.reserveAccess = .journal }
                accept(punched)
                let report = try body(generation, switched.newChain)
                space.refillReserve()
                // The disk's room after the punch accepted and the refill (what the next
                // operations are admitted against where the disk is smaller than the image).
                noteHostRoom()
                // The free estimate follows every take, give-back and reuse by itself (it
                // is not read again from every group summary here: that cost would grow
                // with the capacity, not the change); counted once files needed it.
                assert(files == nil || (try? space.freeBlockCount()).map { $0 == space.freeEstimate } ?? true,
                       "the free estimate drifted from the block tree's free count")
                return report
            }
            // The nodes the commit replaced leave the readers' cache, outside the space
            // lock (one shard lock at a time).
            nodeCache.forget(replacedNodes)
            replacedNodes = []
            return report
        } catch {
            failure = error
            throw error
        }
    }

    private func commit(_ generation: DeltaGeneration, journal chain: (head: LogSegment, sequence: UInt64),
                        cleanlyUnmounted: Bool, progress: CommitProgress? = nil) throws(FSError) -> VolumeCommitReport {
        let number = generation.number
        // 2. The generation into the tree.
        var fresh = BlockRanges()  // not a `RangeSet`: see `BlockSpace.takenBlocks`
        var placedBytes = 0
        var placing = PlacedBytesWriter(storage: storage)
        var placementBlocks = PlacementBlocks(backing: files?.takePromiseBacking() ?? [])
        progress?.began(.applying)
        // The changed leaves past `spilledLeavesAbove` are written ahead as the changes go in.
        filesystem.spillingAhead = (number, spilledLeavesAbove)
        defer { filesystem.spillingAhead = nil }
        let removed = try filesystem.apply(generation, progress: progress) { (bytes) throws(FSError) -> [Extent] in
            placedBytes += bytes.count
            return try self.place(bytes, fresh: &fresh, blocks: &placementBlocks, into: &placing)
        }
        // Not an argument of `files?.`: optional chaining would skip it without files.
        let unusedBacking = placementBlocks.finish(space)
        files?.holdUnusedBacking(unusedBacking)
        try placing.flush()
        _ = try filesystem.continueDrops(budget: max(0, FileSystemTree.dropBudget - removed))
        // 3. References. Blocks allocated for this commit (placed, or claimed by replay) and
        // blocks files took since their last commit (unclaimed) are not in the block tree
        // yet: the first retain of one is its allocation.
        fresh.formUnion(BlockRanges(replayClaims))
        replayClaims = RangeSet()
        let references = filesystem.takeReferenceChanges()
        var retained: [Range<UInt64>] = []
        for range in references.retained {
            var rest = BlockRanges(range)
            let claimed = fresh.restricted(to: range)
            if !claimed.isEmpty {
                // Range by range: `subtract` builds a new array of all of `fresh`'s ranges.
                for part in claimed.ranges { fresh.remove(contentsOf: part) }
                rest.subtract(claimed)
            }
            if let files {
                let taken = files.unclaimedPart(of: range)
                if !taken.isEmpty {
                    files.claim(taken)
                    rest.subtract(taken)
                }
            }
            retained += rest.ranges
        }
        // Only the net change of each block's count reaches the block tree (one tree change
        // per range: a reference moved down and up again within the generation cost two).
        let net = ExtentReferenceChanges.cancelling(retained: retained, released: references.released)
        for blocks in net.retained { space.retain(blocks) }
        for blocks in net.released { space.release(blocks) }
        for blocks in fresh.ranges { space.release(blocks) }
        files?.releaseDead(through: number)
        // 4. Both trees.
        progress?.began(.writingNodes)
        let filesystemCommit = try filesystem.tree.commit(generation: number, progress: progress)
        var report = try finishCommit(generation, filesystemCommit, inodes: filesystem.takeInodeChanges(), journal: chain,
                                      cleanlyUnmounted: cleanlyUnmounted, progress: progress)
        report.placedBytes = placedBytes
        return report
    }

    /// Steps 4 (the block space's part) to 8 of a commit whose filesystem tree is
    /// committed (`commit`, `bulkLoad`). `inodes`: the inode items the commit added and
    /// removed, and the highest inode number it stated, for the slot's inode count and
    /// next inode number.
    func finishCommit(_ generation: DeltaGeneration, _ filesystemCommit: CopyOnWriteTree.Commit,
                      inodes: FileSystemTree.InodeChanges, journal chain: (head: LogSegment, sequence: UInt64),
                      cleanlyUnmounted: Bool = false, progress: CommitProgress? = nil) throws(FSError) -> VolumeCommitReport {
        let number = generation.number
        // The slot goes to the block of its generation's parity: the next generation's is
        // never the current commit's.
        guard number == current.generation + 1 else {
            throw .damagedImage("commit \(number) after commit \(current.generation): its slot would overwrite the current one")
        }
        // The previous commit's punch finished before this commit (`committing`): the
        // block space may retire what it punched.
        let punched = punches.takeAccepted()
        progress?.began(.countingBlocks)
        let spaceCommit = try space.commit(generation: number,
                                           trees: [CommittedTree(pages: filesystemPages, commit: filesystemCommit)])
        var slot = current
        slot.generation = number
        slot.cleanlyUnmounted = cleanlyUnmounted
        // The capacity this mount opened with (`TreeVolume+Capacity.swift`): the first
        // slot naming a changed one is written after everything it names is durable.
        slot.capacityBytes = space.endBlock << BackingStore.blockShift
        slot.capacityIsSet = capacityIsSet
        // The next inode number is past every number a commit ever stated, so no inode
        // that reached the tree has its number handed out again. (One created and dropped
        // between two commits never reaches it; its number may come back at a later
        // mount, which nothing can tell apart: no item and no kernel reference outlives
        // that mount.)
        slot.nextInode = max(slot.nextInode, inodes.highest + 1)
        // A count that would go below zero (an image whose count is wrong: fsck reports
        // it) stays at zero rather than failing a commit the block space already made.
        let inodeCount = Int64(clamping: slot.inodeCount) + Int64(inodes.added) - Int64(inodes.removed)
        slot.inodeCount = UInt64(max(0, inodeCount))
        slot.filesystemTree = filesystemCommit.root
        slot.blockTree = spaceCommit.blockTreeRoot
        slot.journal = chain.head
        slot.journalSequence = chain.sequence
        // 5 and 6. Durable nodes, then the durable slot: without the space lock (the caller
        // holds it), so that file block calls go on meanwhile. A sync writes back every
        // dirty data page of the image, seconds of random writes' pages on a slow disk,
        // during which every write waited for the commit. Nothing below touches the block
        // space until the lock is taken again; what file calls change meanwhile (blocks
        // taken, touched marks and RAM bytes of the next generation) is not this commit's,
        // and blocks this commit freed stay pending.
        // The block tree now counts this commit's references, the slot does not yet: it is
        // not asked whether a committed block is exclusive until the commit is published
        // (a reference this commit dropped without a block call, an inode dropped out of
        // the cache, could come back with a power cut before the slot; review of
        // 2026-12-02); only blocks verified against the published tree answer meanwhile
        // (`VolumeFileBlocks.isCommittedExclusive`). And the RAM bytes this commit placed
        // hold their blocks now: no longer promised.
        settledUnpublished = true
        files?.holdExclusivityUntilPublished()
        files?.commitPlacedMemoryPieces(through: number)
        spaceLock.unlock()
        progress?.began(.syncing)
        let synced = Result { () throws(FSError) in
            try syncImage()
            // Through the latch too: a failure holds for every later sync, and the count of
            // finished syncs covers the slot's (its writeback cleans journal pages as well;
            // `prepareJournalAppend`).
            try syncLatch.sync { () throws(FSError) in try CommitSlots.write(slot, to: storage) }
        }
        spaceLock.lock()
        try synced.get()
        // 7. Published: the slot and the generation's retirement in one step, as readers
        // take both in one (`reader`). Files' marks of changes this commit holds go only
        // now: until the slot is durable the block tree's counts are the previous commit's.
        publish(slot, retiring: generation)
        replacedNodes = filesystemCommit.freedBlocks
        settledUnpublished = false
        files?.dropTouched(through: number)
        // 8. Punches: the pending frees of the commits before this one (neither this commit
        // nor the previous one references them), then the next commit may retire them.
        // The pending frees of commit p are blocks roots before p use.
        // A punch that fails does not undo the durable commit: the frees stay pending,
        // unretired, and the next commit tries again.
        // A reader of commit r still reads blocks freed by commits after r: those wait.
        let punchFailure = startPunch(after: number) ?? punched?.failure
        return VolumeCommitReport(generation: number, filesystemNodesWritten: filesystemCommit.writtenBlocks,
                                  blockTreeNodesWritten: spaceCommit.blockTreeNodesWritten, placedBytes: 0,
                                  punchedBlocks: punched?.failure == nil ? punched?.blocks ?? 0 : 0, punchFailure: punchFailure,
                                  nodesReused: spaceCommit.nodesReused)
    }

    /// Places `bytes` in newly allocated data blocks (as many runs as the free space
    /// gives, from `placement`'s chunks) and returns the extents holding them; the blocks
    /// join `fresh`. The bytes go to `writer`, which the commit flushes before its sync.
    func place(_ bytes: [UInt8], fresh: inout BlockRanges, blocks placement: inout PlacementBlocks,
               into writer: inout PlacedBytesWriter) throws(FSError) -> [Extent] {
        var extents: [Extent] = []
        var written = 0
        let blockSize = BackingStore.blockSize
        while written < bytes.count {
            let wanted = UInt64((bytes.count - written + blockSize - 1) / blockSize)
            let blocks = try placement.take(upTo: wanted, from: space)
            fresh.insert(contentsOf: blocks)
            let length = min(bytes.count - written, blocks.count * blockSize)
            let offset = blocks.lowerBound << BackingStore.blockShift
            try bytes.withUnsafeBytes { raw in
                Result { () throws(FSError) in
                    try writer.add(UnsafeRawBufferPointer(rebasing: raw[written..<written + length]), at: offset)
                }
            }.get()
            extents.append(.mmapOffload(offset: offset, size: UInt64(length)))
            written += length
        }
        return extents
    }
}

extension TreeVolume {
    /// Punches `ranges` of blocks; where the file system cannot punch, writes zeros (the
    /// `ImageStorage` contract), so freed bytes never stay readable in the image.
    /// Neighbouring ranges (pending frees of one commit are often consecutive nodes, and
    /// of several commits interleave) go in one call.
    static func punch(_ ranges: [Range<UInt64>], in storage: any ImageStorage) throws(FSError) {
        for blocks in RangeSet(ranges).ranges {
            let bytes = (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
            do throws(FSError) {
                try storage.punch(bytes)
            } catch .notSupported {
                try storage.writeZeros(bytes)
            }
        }
    }
}
