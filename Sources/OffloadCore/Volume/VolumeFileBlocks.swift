import Synchronization
/// File data blocks on format 2 (`FileBlockStore` over a `TreeVolume`'s block space;
/// docs/ARCHITECTURE.md, "Metadata at scale", step 4d).
///
/// On format 2 the block tree's reference counts are written by commits, from the extent
/// items each commit changes (`ExtentReferenceChanges`); a file's in-memory retains and
/// releases are not counted there again. What this store keeps in memory is only what the
/// tree does not say yet, so it follows the changes since the last commit, not the image:
///
/// - **Unclaimed blocks**: blocks a file's write path took (`BlockSpace.takeData`) that no
///   commit has recorded yet. Their references are counted here, exactly (every holder of
///   such a block is a file in memory with uncommitted changes). The commit whose extents
///   first reference a block records its allocation as that reference (`claim`); a block
///   whose count fell to zero, its release journaled in a generation the commit covers,
///   is recorded and released in that commit (a pending free: reused only after the
///   block space's rule, so a crash that replays the frame which wrote it finds it
///   intact). A crash leaves unclaimed blocks free in the tree: replay claims the ones
///   its frames name (`TreeVolume.open`).
/// - **Touched blocks**: committed blocks whose references a file changed in memory,
///   tagged with the delta's open generation at the time. The commit of generation c
///   drops the tags up to c, whose changes its tree now holds. The caller's duty: every
///   block call of a change happens inside the delta ticket the change records in (it
///   joins first and leaves after its releases), so a tag is never older than the
///   generation that holds the change.
/// - **Unshared marks**: unclaimed blocks that lost a reference in a change maybe not
///   durable yet, until a sync that began after it completes (format 1's rule).
///
/// `isExclusive` (may a file overwrite in place) is therefore: an unclaimed block with a
/// count of one and no unshared mark, or a committed block with a count of one in the
/// block tree that no uncommitted change touched. Both err towards copying: the tree
/// counts a block shared by two neighbouring extent items twice where a file merged them.
///
/// Locking: every call takes the volume's space lock (`TreeVolume.spaceLock`), which the
/// commit holds while it changes the block space. Lock order: a file's lock, then the
/// space lock, then the delta's gate, shared (`heldForCommits` reads the commit load),
/// and its lock.
public final class VolumeFileBlocks: FileBlockStore, @unchecked Sendable {
    public let image: ImageMapping
    let space: BlockSpace
    let delta: MetadataDelta
    let lock: PthreadLock
    // Guarded by `lock`:
    /// In-memory reference counts of the unclaimed blocks that someone holds.
    let counts = BlockReferenceCounts()
    /// Every unclaimed block: held (in `counts`) or dead (waiting for a commit).
    var unclaimed = BlockRanges()
    /// Unclaimed blocks no one holds, by the open generation when they were let go.
    var dead = BlockMarks()
    /// Committed blocks whose references changed in memory, by the open generation.
    var touched = BlockMarks()
    /// Unclaimed blocks that lost a reference in a change a power cut could undo, by the
    /// sync epoch read after the change (cleared once a later sync completed).
    var unshared = BlockMarks()
    /// Committed blocks `isExclusive` found with a count of one in the block tree since
    /// the last commit was published (never asked while a settled commit is unpublished,
    /// so always against a published tree; a store made in that window starts held,
    /// `TreeVolume.settledUnpublished`): the tree's counts change only at commits, so a
    /// second write to one of them skips the tree's lookup (a descent with a pread and a
    /// checksum a level, a tenth of a random 4 KiB write's time). Touched marks are still
    /// asked first: a reference added since (a clone) marks the block. Kept across
    /// commits but for the blocks a published commit's touched marks name (`dropTouched`
    /// says why that suffices), and emptied when it grows past `verifiedLimit`.
    var verifiedExclusive = Set<UInt64>()
    static let verifiedLimit = 1 << 20
    /// How often `isExclusive` asked the block tree (for tests).
    var treeExclusivityLookups = 0
    /// Set from the end of a commit's settling to its publication
    /// (`holdExclusivityUntilPublished`): the block tree then counts what the durable slot
    /// does not, so only blocks verified before it are overwritten in place (others copy).
    var settledUnpublished = false
    /// Bytes of RAM pieces admitted and not yet written out by a commit
    /// (`admitsMemoryPiece`), by the open generation when admitted: a commit writes out
    /// those of its generation and older ones only (operations of the next generation run
    /// while it commits).
    var admittedMemory: [(generation: UInt64, bytes: Int)] = [] {
        didSet { space.promisedBlocks = unbackedPromisedBlocks }
    }
    /// Blocks taken from the free space and given disk space for the RAM pieces admitted
    /// (`admitsMemoryPiece`), which the commits that place them take first
    /// (`PlacementBlocks`): a promise the disk under the image keeps. Admitted against
    /// the disk's last figure alone, the pieces of a mount whose disk another program
    /// filled before the commit found no disk space there, and the failed commit failed
    /// the volume (docs/ARCHITECTURE.md, "Promises the disk keeps"). Taken, not recorded:
    /// a crash leaves them free. Caller holds the lock.
    var promiseBacking = BlockRanges()
    /// The blocks backing the promises: `promiseBacking`'s, and from a commit's
    /// `takePromiseBacking` to its `commitPlacedMemoryPieces` those it took (the
    /// promises it places count until then, and so do the blocks that keep them: room
    /// read without the lock meanwhile does not dip by the whole promise).
    var promiseBackingBlocks: UInt64 = 0 {
        didSet { space.promisedBlocks = unbackedPromisedBlocks }
    }
    /// What the commit under way did not hand out of the backing it took
    /// (`holdUnusedBacking`), settled at `commitPlacedMemoryPieces`.
    var unusedBacking: [Range<UInt64>] = []
    /// Blocks given disk space at a time for promises (one `fallocate` a step, as
    /// `PlacementBlocks` took them at the commit before; at one block a KiB promised,
    /// 256 KiB of RAM pieces), and what a commit's leftover keeps of its disk space.
    static let promiseStepBlocks: UInt64 = PlacementBlocks.chunkBlocks

    /// Blocks given disk space ahead by the last `fallocate` (`allocate`), and the punch
    /// count read before it began: the blocks have it while no punch has finished since.
    var backedAhead: (blocks: Range<UInt64>, punches: UInt64)?
    /// Where the steps ahead end: a new step starts only at or above it, so the free
    /// blocks given disk space unasked lie in the steps' last one (and in a mount's first,
    /// wherever its first allocation lands: the block space allocates from its lowest
    /// free blocks up, so the end of the blocks in use is no frontier to start from).
    /// Below it, blocks freed and punched by churn get theirs one allocation at a time,
    /// and the image gives the space of what churn frees back to the disk.
    var steppedThrough: UInt64 = 0
    /// The last step taken at the frontier: after a punch, an allocation inside it gives
    /// the rest of it disk space again in one call.
    var lastStep: Range<UInt64>?
    /// The punch count when the disk last had no room for a step: no step is tried again
    /// until a punch finishes (a failed `fallocate` may cost a journal commit on ext4).
    var stepRefusedAt: UInt64?
    let punches: PunchCounter

    init(image: ImageMapping, space: BlockSpace, delta: MetadataDelta, lock: PthreadLock, punches: PunchCounter) {
        self.image = image
        self.space = space
        self.delta = delta
        self.lock = lock
        self.punches = punches
    }

    /// Blocks given disk space at a time when an allocation needs it: one `fallocate` per
    /// 4 MiB of small files instead of one each (a cold `cp -a` of small files spent 4% of
    /// the daemon's CPU in it), as format 1's `BackingStore.growthStepBlocks`. Free blocks
    /// given disk space unasked lie in the last step and a mount's first (`steppedThrough`).
    static let backedStepBlocks: UInt64 = 1024

    /// What `df` shows as available: the free blocks, or what the disk under the image
    /// can still give where that is less (`BlockSpace.hostFreeBlocks`).
    public var availableBytes: UInt64 { spaceCounts().available }

    /// The image's free blocks, and what of them writes can get (`availableBytes`), in
    /// bytes: what `df` shows as free (its used is the capacity less it) and available.
    public func spaceCounts() -> (free: UInt64, available: UInt64) {
        lock.withLock {
            let free = (try? space.freeBlockCount()) ?? 0
            return (free << BackingStore.blockShift, min(free, space.hostFreeBlocks) << BackingStore.blockShift)
        }
    }

    /// At most what `allocate` can hand out in all, for a fallocate's check before it
    /// takes anything: the image's free blocks less those promised to RAM pieces and held
    /// for the commits of waiting changes (`allocate` keeps both back). Not the disk's
    /// room: the free blocks a step ahead gave disk space take none of what the disk has
    /// left, so where the disk limits, `allocate` may hand out more than the disk's figure,
    /// and refuses by itself where it cannot (a check that asked the disk refused
    /// fallocates that fit: the review of the change). (Asked against the free blocks
    /// alone, a fallocate of the blocks held for commits took them all, zeroed them and
    /// gave them back.)
    public func hasRoom(forDataBytes byteCount: UInt64) -> Bool {
        let blockSize = UInt64(BackingStore.blockSize)
        let wanted = byteCount / blockSize + (byteCount % blockSize == 0 ? 0 : 1)
        return lock.withLock {
            let kept = unbackedPromisedBlocks + heldForCommits
            return space.freeEstimate >= kept && space.freeEstimate - kept >= wanted
        }
    }

    /// Takes blocks from the block space (the hint is not used yet: the space allocates
    /// where it allocated last, which keeps a file's appends together) and gives them disk
    /// space before anyone writes them through the mapping (a fault on an unbacked page of
    /// a full disk would be an I/O error instead of ENOSPC): a step ahead at a time
    /// (`backedStepBlocks`, `backedAhead`).
    public func allocate(byteCount: Int, hint: UInt64?) throws(FSError) -> Range<UInt64> {
        precondition(byteCount > 0)
        let wanted = (UInt64(byteCount) + UInt64(BackingStore.blockSize) - 1) >> BackingStore.blockShift
        return try lock.withLock { () throws(FSError) -> Range<UInt64> in
            // The blocks RAM pieces admitted since the last commit will need are promised,
            // and so are those the commits of the changes not yet committed may take beyond
            // the metadata reserve (`heldForCommits`).
            let promised = unbackedPromisedBlocks + heldForCommits
            var usable = space.usableFree
            if usable <= promised, usable < space.freeEstimate {
                // The disk is what limits, and may have room again since it was last read.
                noteHostRoom()
                usable = space.usableFree
            }
            guard usable > promised else { throw .noSpace }
            let blocks = try space.takeData(upTo: min(wanted, usable - promised))
            do throws(FSError) {
                try giveDiskSpace(blocks)
            } catch .notSupported {
                // No fallocate here: a sparse file is the best there is.
            } catch {
                space.giveBack(blocks)  // never named by anything
                throw error
            }
            counts.insertAllocated(blocks)
            unclaimed.insert(contentsOf: blocks)
            return (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
        }
    }

    /// Makes sure `blocks` have disk space: nothing to do when the last step ahead covers
    /// them and no punch finished since it began. Else, for blocks at or above the steps'
    /// end, a new step from their start (their end when larger, the space's end at most);
    /// for blocks inside the last step, its rest again; otherwise, or when the disk has no
    /// room for that, the blocks alone. Caller holds the lock.
    func giveDiskSpace(_ blocks: Range<UInt64>) throws(FSError) {
        let punchesBefore = punches.value
        if let ahead = backedAhead, ahead.punches == punchesBefore,
           ahead.blocks.lowerBound <= blocks.lowerBound, blocks.upperBound <= ahead.blocks.upperBound {
            return
        }
        backedAhead = nil
        var ahead: Range<UInt64>?
        if stepRefusedAt != punchesBefore {
            if blocks.lowerBound >= steppedThrough {
                ahead = blocks.lowerBound..<max(blocks.upperBound, min(space.endBlock, blocks.lowerBound + Self.backedStepBlocks))
            } else if let last = lastStep, last.contains(blocks.lowerBound), blocks.upperBound < last.upperBound {
                ahead = blocks.lowerBound..<last.upperBound
            }
        }
        if let ahead, ahead != blocks {
            do throws(FSError) {
                try reserveDiskSpace(ahead)
                if ahead.lowerBound >= steppedThrough { lastStep = ahead }
                backedAhead = (ahead, punchesBefore)
                steppedThrough = max(steppedThrough, ahead.upperBound)
                return
            } catch .noSpace {
                stepRefusedAt = punchesBefore  // the blocks alone may still fit
            }
        }
        try reserveDiskSpace(blocks)
        backedAhead = (blocks, punchesBefore)
        steppedThrough = max(steppedThrough, blocks.upperBound)
    }

    /// Gives `blocks` disk space, and reads what the disk has left after it (taken, or
    /// refused for want of it), which data, RAM pieces and commits are admitted against
    /// where the disk is smaller than the image's free space.
    private func reserveDiskSpace(_ blocks: Range<UInt64>) throws(FSError) {
        defer { noteHostRoom() }
        try image.storage.reserve((blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift))
    }

    /// Reads `ImageStorage.hostAvailableBytes` into `BlockSpace.hostFreeBlocks` (caller
    /// holds the lock).
    func noteHostRoom() {
        space.noteHostRoom(availableBytes: image.storage.hostAvailableBytes)
    }

    public func retain(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        let blocks = BackingStore.blocks(touchedBy: range)
        try lock.withLock { () throws(FSError) in
            let (fresh, committed) = split(blocks)
            for part in fresh.ranges where !counts.isAllocated(part) {
                throw .invalidArgument("image range \(range) is not allocated")
            }
            for part in committed.ranges where !(try isReferencedInTree(part)) {
                throw .invalidArgument("image range \(range) is not allocated")
            }
            retainLocked(fresh, committed)
        }
    }

    public func retainOwned(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let blocks = BackingStore.blocks(touchedBy: range)
        lock.withLock {
            let (fresh, committed) = split(blocks)
            retainLocked(fresh, committed)
        }
    }

    /// A loaded file's references: the block tree counts committed blocks already (no
    /// touched mark: nothing changed); unclaimed ones are counted here as any holder's.
    public func adopt(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let blocks = BackingStore.blocks(touchedBy: range)
        lock.withLock {
            for part in split(blocks).fresh.ranges { counts.retain(part) }
        }
    }

    /// A clean file leaving memory: committed blocks keep the tree's count (no mark);
    /// unclaimed ones lose this holder's count, and wait for a commit once no one holds
    /// them, as after a release.
    public func abandon(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let blocks = BackingStore.blocks(touchedBy: range)
        lock.withLock {
            var freed = BlockRanges()
            for part in split(blocks).fresh.ranges {
                for gone in counts.release(part) { freed.insert(contentsOf: gone) }
            }
            dead.add(freed, at: delta.openNumber)
        }
    }

    private func retainLocked(_ fresh: BlockRanges, _ committed: BlockRanges) {
        for part in fresh.ranges { counts.retain(part) }
        touch(committed)
    }

    /// Calls of `release` that let go of blocks: what `TreeVolume.releaseCount` adds up
    /// (not `giveBackUnwritten`, which gives back only what was free before).
    let releases = Atomic<UInt64>(0)

    /// Blocks `allocate` handed out, still held by that one reference and written by no
    /// one but with zeros (a write refused for space before its first byte; a refused
    /// fallocate's pieces, whose leftovers it zeroed): free again at once. Not a
    /// dead block waiting for a commit, as a release's: no frame names them, a crash
    /// leaves them free, and their bytes are the free space's as they were handed out
    /// (zeros, or a crash's leftovers that `clearLeftovers` and fresh writes deal with), so
    /// whoever takes them next may trust them as it trusts any free block
    /// (`OffloadedFile.zeroTail`). A refused write's blocks went the way of a release: free
    /// only after the commits of the reuse rule, and counted as a release, so every
    /// refused write on a full image paid a reclaim (docs/ARCHITECTURE.md, "A reclaim that
    /// found nothing").
    public func giveBackUnwritten(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let blocks = BackingStore.blocks(touchedBy: range)
        let fresh = lock.withLock { () -> Bool in
            guard unclaimed.containsAll(blocks), counts.isExclusive(blocks) else { return false }
            counts.forget(blocks)
            unclaimed.remove(contentsOf: blocks)
            space.giveBack(blocks)
            return true
        }
        // Not one fresh allocation's (no caller does that): released as any, safely.
        assert(fresh, "giving back blocks \(blocks) that are not one fresh allocation's")
        if fresh { givenBack.add(1, ordering: .relaxed) } else { release(range) }
    }

    /// Calls of `giveBackUnwritten` that gave blocks back (`TreeVolume.givenBackCount`).
    let givenBack = Atomic<UInt64>(0)

    public func release(_ ranges: [Range<UInt64>], unsharing dropped: [Range<UInt64>]) {
        if ranges.contains(where: { !$0.isEmpty }) { releases.add(1, ordering: .relaxed) }
        lock.withLock {
            let generation = delta.openNumber
            var freed = BlockRanges()
            for range in ranges where !range.isEmpty {
                let (fresh, committed) = split(BackingStore.blocks(touchedBy: range))
                for part in fresh.ranges {
                    for gone in counts.release(part) { freed.insert(contentsOf: gone) }
                }
                touch(committed)
            }
            dead.add(freed, at: generation)
            var marks = BlockRanges()
            for range in dropped where !range.isEmpty {
                var survivors = split(BackingStore.blocks(touchedBy: range)).fresh
                survivors.subtract(freed)
                marks.formUnion(survivors)
            }
            unshared.removeAll(keys: { image.isDurable(since: $0) })
            unshared.add(marks, at: image.syncEpoch)
        }
    }

    public func isExclusive(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return true }
        let blocks = BackingStore.blocks(touchedBy: range)
        return lock.withLock {
            unshared.removeAll(keys: { image.isDurable(since: $0) })
            // The usual write lies wholly in committed blocks or wholly in unclaimed ones:
            // answered without building the split's sets.
            if !unclaimed.overlaps(blocks) { return isCommittedExclusive(blocks) }
            if unclaimed.containsAll(blocks) { return isUnclaimedExclusive(blocks) }
            let (fresh, committed) = split(blocks)
            return fresh.ranges.allSatisfy(isUnclaimedExclusive) && committed.ranges.allSatisfy(isCommittedExclusive)
        }
    }

    /// Unclaimed blocks: held once, and no change a power cut could undo let go of them.
    private func isUnclaimedExclusive(_ blocks: Range<UInt64>) -> Bool {
        counts.isExclusive(blocks) && !unshared.overlaps(blocks)
    }

    /// Committed blocks: untouched since the last commit, and counted once by its tree.
    ///
    /// While a settled commit waits for its sync (`settledUnpublished`), the block tree
    /// holds counts the durable slot does not, so it is not asked; blocks verified against
    /// the last published tree still answer. Their count was one, the writing file's; what
    /// the commit under way changed of it went through this store (a touched mark, asked
    /// first), since no other item references such a block for a drop to release, and a
    /// committed block is never claimed. (Copying every write in that window made 2,000 to
    /// 4,000 copies a commit under random writes, each a block freed and punched later.)
    private func isCommittedExclusive(_ blocks: Range<UInt64>) -> Bool {
        guard !touched.overlaps(blocks) else { return false }
        if blocks.allSatisfy(verifiedExclusive.contains) { return true }
        treeExclusivityLookups += 1
        guard !settledUnpublished, let runs = try? space.blockTree.runs(overlapping: blocks),
              Self.cover(blocks, runs, where: { $0.count == 1 && $0.use == .data }) else { return false }
        if verifiedExclusive.count + blocks.count > Self.verifiedLimit { verifiedExclusive.removeAll() }
        verifiedExclusive.formUnion(blocks)
        return true
    }

    public func isInUse(byte offset: UInt64) -> Bool {
        let block = offset >> BackingStore.blockShift
        return lock.withLock {
            if unclaimed.contains(block) { return counts.count(of: block) > 0 }
            return ((try? space.blockTree.count(of: block)) ?? 0) > 0
        }
    }

    // MARK: - Internals (caller holds the lock)

    private func split(_ blocks: Range<UInt64>) -> (fresh: BlockRanges, committed: BlockRanges) {
        (unclaimed.restricted(to: blocks), unclaimed.complement(within: blocks))
    }

    func touch(_ committed: BlockRanges) {
        guard !committed.isEmpty else { return }
        touched.add(committed, at: delta.openNumber)
    }

    private func isReferencedInTree(_ blocks: Range<UInt64>) throws(FSError) -> Bool {
        Self.cover(blocks, try space.blockTree.runs(overlapping: blocks), where: { $0.count > 0 && $0.use == .data })
    }

    /// True when `runs` (in order) cover every block of `blocks` and each satisfies `test`.
    static func cover(_ blocks: Range<UInt64>, _ runs: [BlockRun], where test: (BlockRun) -> Bool) -> Bool {
        var covered = blocks.lowerBound
        for run in runs {
            guard run.blocks.lowerBound <= covered, test(run) else { return false }
            covered = max(covered, run.blocks.upperBound)
            if covered >= blocks.upperBound { return true }
        }
        return covered >= blocks.upperBound
    }
}
