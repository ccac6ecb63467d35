import Synchronization

/// Format 2's image as a whole, below the namespace: the two commit slots (blocks 0 and
/// 1), the block space (block tree and allocator) and the filesystem tree over the image's
/// blocks, and the delta of changes since the last commit (docs/ARCHITECTURE.md, "Metadata
/// at scale", step 4a).
///
/// Operations `perform` their changes into the delta and append one journal frame each
/// (they survive the process being killed at once, and a power cut after the next
/// `sync`; `TreeVolume+Perform.swift`), once admitted against the room their commits
/// will need (`TreeVolume+Admission.swift`); `commit` makes the oldest closed generation
/// durable in the trees and continues the journal in a new chain
/// (`TreeVolume+Commit.swift`); `open` reads the current commit slot, replays the
/// journal frames newer than it into the delta and commits them
/// (`TreeVolume+Open.swift`): its cost follows the journal, bounded by the commit budget,
/// never the tree's size.
///
/// Files keep their data in the volume's blocks through `fileBlocks()` (`VolumeFileBlocks`),
/// which takes the space lock.
///
/// Threads: operations (`perform`, `reserveRoom`, `reader`, file block calls) may run while a
/// commit runs on another thread; each piece of shared state has its lock (below). The
/// caller's duty is the cut: a generation is closed (`closeOpenGeneration`, or a commit
/// that finds none closed) only when no operation's file block calls have run without its
/// frame (the namespace closes under its own lock, between operations). Lock order:
/// `commitLock`, then `journalLock`, then `spaceLock`, then `publishLock`, then the
/// delta's and the reader epochs' (docs/ARCHITECTURE.md, "Lock order").
public final class TreeVolume {
    public static let filesystemTreeID: UInt32 = 1
    public static let blockTreeID: UInt32 = 2
    /// Blocks 0 and 1 are the commit slots; everything else is the block space's.
    public static let firstSpaceBlock: UInt64 = 2

    public let storage: any ImageStorage
    /// Held by every use of the block space: journal segments taken and given back
    /// (`TreeVolumeLogSpace`), commits (their settling, whole), and files' block calls
    /// (`VolumeFileBlocks`). Lock order: a file's lock, then `journalLock`, then this,
    /// then `publishLock`, then the delta's.
    let spaceLock = PthreadLock()
    /// One commit at a time (the maintenance tick's, an operation's automatic one, an
    /// unmount's). Taken first.
    let commitLock = PthreadLock()
    /// Guards `journal`, which chain operations append to: appends (a frame copied into
    /// the chain's segment; the space lock only when a segment is taken) and the commit's
    /// switch to a new chain. Not the space lock: a commit holds that for its whole
    /// settling, and every operation's frame would wait for it.
    let journalLock = PthreadLock()
    /// Guards `current` and `failure` (`storedCurrent`, `storedFailure`): a commit
    /// publishes its slot and retires its generation from the delta in one step under it,
    /// and a reader takes the delta's layers, the slot and its epoch in one step under it,
    /// so no reader sees a root without the generations laid over it, or a generation
    /// twice. A leaf but for the delta's and the epochs' locks.
    let publishLock = PthreadLock()
    public let space: BlockSpace
    let filesystemPages: BlockSpacePages
    /// The commit's working copy of the filesystem tree (readers open their own at the
    /// published root).
    public let filesystem: FileSystemTree
    public let delta: MetadataDelta
    let logSpace: TreeVolumeLogSpace
    /// The journal chain the current commit slot names (frames since that commit); nil
    /// until the commit that opening runs has started one (none when it failed: the volume
    /// is then read-only, `failure`). Under `journalLock`.
    var journal: MetadataLog?
    /// The chain switches of generations closed and not yet committed, oldest first
    /// (`closeOpenGeneration`). Under `journalLock`.
    var chainSwitches: [ChainSwitch] = []
    /// Journal room granted to operations (`claimJournalRoom`): claimed by those whose
    /// frames are not appended yet, or not claimed (`unclaimedJournalRoom`). The chain's
    /// room covers it. Under `journalLock`.
    var grantedJournalRoom = 0
    /// The part of `grantedJournalRoom` no operation claimed: what claims take from
    /// without the journal lock.
    let unclaimedJournalRoom = Atomic<Int>(0)
    /// The fewest bytes of frames every spare segment of the chain holds: at least the
    /// largest frame claimed and not yet appended (`claimJournalRoom`), and
    /// `largestPooledFrame`. Under `journalLock`.
    var journalSpareFloor = TreeVolume.largestPooledFrame
    /// The room of outstanding claims beyond a pooled frame's claim, summed
    /// (`TreeVolume.largeClaimExcess`): added under the journal lock when a claim for a
    /// frame over `largestPooledFrame` is made, taken away when the claim ends (its append,
    /// or `releaseRoom`, without the lock). What lowers the floor once no large claim is
    /// outstanding, however many small ones are.
    let largeJournalClaims = Atomic<Int>(0)
    /// Claims made under the journal lock (`claimJournalRoom`): the rest took none.
    let journalRoomGrants = Atomic<Int>(0)
    /// Set when a chain switch found no room for the claims made before it
    /// (`restoreJournalRoom`), until the next switch: the chain's room may then be short
    /// of what is granted. Under `journalLock`.
    var journalRoomShort = false
    /// When the last frame was appended (`MonotonicClock` nanoseconds; 0: none this
    /// mount): the maintenance commits a mount gone idle (`secondsSinceLastAppend`).
    /// Under `journalLock`.
    var lastAppendNanoseconds: UInt64 = 0
    /// The sequence number the first chain of this mount starts at
    /// (`firstSequence(after:)`).
    let firstSequence: UInt64
    /// Frames replayed when the volume opened.
    public internal(set) var replayedFrames = 0
    /// The last generation whose pending frees are punched: the next commit may retire
    /// them (delete their items), and their blocks are reused after that commit.
    var punchedThrough: UInt64
    /// The punch a commit started and the next one waits for (`waitForPunches`).
    let punches = VolumePunches()
    /// The commits live readers read (`VolumeReader`): frees of later commits wait.
    let epochs = ReaderEpochs()
    /// The image's syncs, one at a time, and its first failure kept (`SyncLatch`): used
    /// before the image is mapped, then handed to the mapping.
    let syncLatch = SyncLatch()
    /// The journal pages `prepareJournalAppend` last made writable, and the syncs finished
    /// before it did (under the journal lock).
    var preparedJournal: (pages: UpcomingBytes, syncs: UInt64)?
    /// `preparedJournal`'s range in the current segment and its syncs, stored with it, and
    /// the current chain's write position, stored with each append and chain switch: what
    /// `prepareJournalAppend` reads without the journal lock to find its pages prepared.
    let preparedJournalStart = Atomic<UInt64>(0)
    let preparedJournalEnd = Atomic<UInt64>(0)
    let preparedJournalSyncs = Atomic<UInt64>(UInt64.max)
    /// Even when the three above were stored together (`prepareJournalAppend`).
    let preparedJournalVersion = Atomic<UInt64>(0)
    let journalWriteOffset = Atomic<UInt64>(0)
    /// Punches of the image finished so far (`PunchCounter`): files' blocks given disk
    /// space ahead keep it until the next.
    let punchCounter = PunchCounter()
    /// What `scrubFreeSpaceAsGroupsLoad` did (`scrubbedRunCount`).
    let scrub = FreeSpaceScrub()
    /// The nodes readers validated, shared by every reader of every commit
    /// (`NodeReadCache`).
    public let nodeCache = NodeReadCache(leafCapacity: TreeVolume.readerCachedLeaves,
                                         interiorCapacity: TreeVolume.readerCachedInteriorNodes)
    /// When a commit starts by itself: the journal since the last commit reaches
    /// `journalBytes` (what replay after a crash reads), the open generation changed
    /// `dirtyObjects` objects (what the delta holds in RAM; docs/ARCHITECTURE.md, "The
    /// delta has caps"), or the items it adds reach `itemBytes` (`CommitLoad.itemBytes`:
    /// twice the bytes of the xattr values, names, targets and extents it holds, about
    /// the leaves its commit builds in RAM before it writes them; docs/ARCHITECTURE.md,
    /// "The delta's bytes capped"). A maintenance tick may commit earlier.
    public struct Limits: Sendable {
        public var journalBytes: Int
        public var dirtyObjects: Int
        public var itemBytes: Int

        public init(journalBytes: Int = 64 << 20, dirtyObjects: Int = 20_000, itemBytes: Int = 32 << 20) {
            self.journalBytes = journalBytes
            self.dirtyObjects = dirtyObjects
            self.itemBytes = itemBytes
        }

        /// How near `journalBytes` of journal since the last commit and an open generation
        /// of `load` are to these limits (the room aside): `.nearing` from three quarters.
        func use(journalBytes: UInt64, load: CommitLoad) -> BudgetUse {
            if journalBytes >= UInt64(self.journalBytes) || load.objects >= dirtyObjects || load.itemBytes >= itemBytes {
                return .reached
            }
            if journalBytes >= UInt64(self.journalBytes / 4 * 3) || load.objects >= dirtyObjects / 4 * 3
                || load.itemBytes >= itemBytes / 4 * 3 { return .nearing }
            return .under
        }
    }
    public var limits = Limits()
    /// Blocks whose return ends `reclaimFreedSpace` early: 1 MiB (tests lower it). Its
    /// callers reclaim again while a change is still refused and space keeps coming back.
    var reclaimEnoughBlocks: UInt64 = 256
    /// Set by `close` (the unmount): its chains get the usual 64 KiB first segment. Read
    /// and written under the journal lock (`switchChain` holds it).
    var unmounting = false
    /// The last durable commit.
    public internal(set) var current: CommitSlot {
        get { publishLock.withLock { storedCurrent } }
        set { publishLock.withLock { storedCurrent = newValue } }
    }
    private var storedCurrent: CommitSlot {
        didSet { publishedGeneration.store(storedCurrent.generation, ordering: .releasing) }
    }
    /// `current.generation`, read without the publish lock or a copy of the slot: a
    /// request's reader checks it to tell whether a commit has published since the
    /// reader was taken (`VolumeReaderPool`). Stored with `storedCurrent`, under the
    /// publish lock.
    private let publishedGeneration: Atomic<UInt64>
    public var committedGeneration: UInt64 { publishedGeneration.load(ordering: .acquiring) }
    /// The commit the image was at when opened (its flags say whether the last mount
    /// ended cleanly).
    public let opened: CommitSlot
    /// What the commits' slots say of the capacity: set (`--size`, kept for later mounts)
    /// or a mount's default. The bytes are the block space's end. Both are the opened
    /// slot's unless the mount changed them (`TreeVolume+Capacity.swift`).
    public let capacityIsSet: Bool
    /// True on a read-only storage: nothing is written (`open`).
    public var isReadOnly: Bool { storage.isReadOnly }
    /// Files' blocks, once `fileBlocks()` mapped the image. Its own lock (a leaf): syncs
    /// read it while a commit holds the space lock.
    private let filesHolder = PthreadMutex<VolumeFileBlocks?>(nil)
    var files: VolumeFileBlocks? { filesHolder.withLock { $0 } }
    /// True from the end of a commit's settling to its publication (guarded by the space
    /// lock): the block tree then counts what the durable slot does not. A files' store
    /// made meanwhile starts held (`holdExclusivityUntilPublished`), as one made before is.
    var settledUnpublished = false
    /// The filesystem tree's nodes the last commit replaced, between its publication and
    /// their `nodeCache.forget` after the space lock (guarded by the commit lock).
    var replacedNodes: [UInt64] = []
    /// Blocks claimed before the next commit that the block tree holds free: what replayed
    /// frames' image extents name (the crashed mount's unclaimed blocks), or every block
    /// format 1 used (the upgrade). The next commit's extents take them as their first
    /// reference, and it releases the rest.
    var replayClaims = RangeSet<UInt64>()
    /// How many blocks opening claimed for replayed frames (tests, status).
    public let blocksClaimedAtOpen: UInt64
    /// Set by a commit that failed half-way; every later operation and commit throws it
    /// (the image keeps its last durable commit; remounting starts from there).
    /// Every operation reads it first: while the volume has not failed (`hasFailed`, an
    /// atomic stored under the publish lock with the error), without a lock.
    public internal(set) var failure: FSError? {
        get { hasFailed.load(ordering: .acquiring) ? publishLock.withLock { storedFailure } : nil }
        set {
            publishLock.withLock {
                storedFailure = newValue
                hasFailed.store(newValue != nil, ordering: .releasing)
            }
        }
    }
    private var storedFailure: FSError?
    private let hasFailed = Atomic<Bool>(false)

    /// Blocks `admit` let through on a nearly full image for changes the delta does not
    /// count yet (their operations are between admission and their record): what makes
    /// admission a reservation, not a check that operations running at once all pass on
    /// the same count. Added to under `admissionLock`, taken from without it.
    let admittedBlocks = Atomic<Int>(0)
    /// Admissions on a nearly full image take turns: between one's read of the counts and
    /// its add, the admitted count can then only fall (operations that recorded, now in
    /// the delta's count), so no admission is counted nowhere. A compare-and-swap on the
    /// count alone was not enough (the review's case: an admission ending and another of
    /// the same size starting between the read and the swap leave the value as read).
    let admissionLock = PthreadLock()

    /// Operations performed that free something once committed (`JournalChange.frees`).
    let freeingOperations = Atomic<UInt64>(0)

    /// How many times a refused write gave its blocks back at once
    /// (`VolumeFileBlocks.givenBack`): not releases, but blocks free again.
    public var givenBackCount: UInt64 { files?.givenBack.load(ordering: .relaxed) ?? 0 }

    /// How many operations and file block releases so far may give space back once
    /// committed: names and xattrs removed, inodes dropped, file blocks let go of. A
    /// reclaim that found nothing finds nothing again until this changes
    /// (`VolumeNamespace.afterReclaim`).
    public var releaseCount: UInt64 {
        freeingOperations.load(ordering: .relaxed) &+ (files?.releases.load(ordering: .relaxed) ?? 0)
    }

    /// True when no change waits for a commit and no RAM piece is promised blocks: a
    /// commit then gives back nothing a reclaim just before it did not
    /// (`VolumeNamespace.afterReclaim`). Takes the delta's lock and the space lock.
    public var waitsForNoCommit: Bool {
        guard delta.commitLoad(after: space.settledGeneration).objects == 0 else { return false }
        // Backed pieces too: their commit gives back what it did not use of the backing.
        return spaceLock.withLock { (files?.promisedMemoryBlocks ?? 0) == 0 }
    }

    /// `journal`'s appended bytes (what `journalBytesSinceCommit` reads, in every change's
    /// budget): stored under `journalLock` with each append and chain switch.
    let journalBytesMirror = Atomic<UInt64>(0)

    /// `capacity`: the block space's end and what the next slot says of it (nil: the
    /// slot's own; `TreeVolume+Capacity.swift` decides a changed one).
    /// `punchingFirst` false leaves every pending free unpunched until the first commit
    /// is durable (its punch then takes them all, and only later commits retire them):
    /// repair's fall-back to the previous commit, whose pending frees may be blocks the
    /// damaged commit it replaces wrote nodes on (freed nodes reused without a punch), so
    /// that a fall-back that fails leaves that commit as it was.
    init(storage: any ImageStorage, slot: CommitSlot, capacity: (bytes: UInt64, isSet: Bool)? = nil,
         replaying frames: [(generation: UInt64, changes: [JournalChange])],
         oldChain: [LogSegment], nextSequence: UInt64, punchingFirst: Bool = true) throws(FSError) {
        self.storage = storage
        publishedGeneration = Atomic(slot.generation)
        storedCurrent = slot
        opened = slot
        try Self.checkCapacity(of: slot, in: storage)
        let capacity = capacity ?? (slot.capacityBytes, slot.capacityIsSet)
        let endBlock = capacity.bytes >> BackingStore.blockShift
        precondition(endBlock > Self.firstSpaceBlock && endBlock <= BlockReferenceTree.pendingFreeBase,
                     "capacity \(capacity.bytes) was not checked")
        capacityIsSet = capacity.isSet
        // Pending frees are punched once the commit after theirs is durable; a crash may
        // have come between that commit's slot and the punch, so the ones the next commit
        // may retire are punched again first (twice is harmless: nothing uses them).
        let punchedAtOpen = punchingFirst ? slot.generation - 1 : 0
        space = try BlockSpace(io: ImageStoragePageIO(storage: storage), imageID: slot.imageID, blockTreeID: Self.blockTreeID,
                               root: slot.blockTree, firstBlock: Self.firstSpaceBlock, endBlock: endBlock,
                               durableGeneration: punchedAtOpen)
        if !storage.isReadOnly && punchingFirst {
            try Self.punch(try space.blockTree.pendingFrees(through: slot.generation - 1).map(\.blocks), in: storage)
        }
        punchedThrough = punchedAtOpen
        // Every pending free is punched now (above) or by a commit's punch, so freed nodes
        // may stay pending unpunched for the next commits' nodes: a crash forgets which
        // they are, and the next opening punches them.
        space.reusesFreedNodes = true
        space.setReserveTarget(Self.reserveBlocks(capacityBlocks: endBlock - Self.firstSpaceBlock))
        // Metadata blocks (nodes, journal segments, the reserve) get disk space when taken.
        space.prepareBlocks = { [storage] (blocks: Range<UInt64>) throws(FSError) -> Void in
            do throws(FSError) {
                try storage.reserveTaken((blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift))
            } catch .notSupported {
                // Neither fallocate nor holes to fill here: a sparse file is the best there is.
            }
        }
        space.unprepareBlocks = { [storage, punchCounter] (blocks: Range<UInt64>) in
            try? storage.punch((blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift))
            punchCounter.finished()
        }
        filesystemPages = space.pages(forTree: Self.filesystemTreeID)
        filesystem = FileSystemTree(
            tree: try CopyOnWriteTree(pages: filesystemPages, imageID: slot.imageID, treeID: Self.filesystemTreeID,
                                      root: slot.filesystemTree),
            hashes: ItemHashes(siphash: slot.nameHashKey))
        // Every replayed frame goes into the generation after the slot, whatever its tag
        // (the commit window leaves frames of two generations: "Step 7, first part"). The
        // opening commit holds them all, and its slot names a fresh chain: the chains
        // replayed are released by it and never read again, so no frame of a higher tag
        // can come back over later changes (what numbering by the newest tag guards against
        // where the journal is one log truncated by generation).
        delta = MetadataDelta(committedGeneration: slot.generation)
        delta.noteCommittedTree(level: slot.filesystemTree?.level)
        replayClaims = try Self.claimReplayed(oldChain: oldChain, frames: frames, of: slot, in: space)
        blocksClaimedAtOpen = replayClaims.ranges.reduce(0) { $0 + UInt64($1.count) }
        logSpace = TreeVolumeLogSpace(space: space, storage: storage, lock: spaceLock)
        firstSequence = try Self.firstSequence(after: nextSequence)
        let ticket = delta.join()
        defer { delta.leave(ticket) }
        for frame in frames { try delta.record(frame.changes, in: ticket) }
        replayedFrames = frames.count
    }

    /// Seconds since this mount's last frame was appended (nil: none yet).
    public var secondsSinceLastAppend: Double? {
        let last = journalLock.withLock { lastAppendNanoseconds }
        guard last > 0 else { return nil }
        return Double(MonotonicClock.nanoseconds() &- last) / 1e9
    }

    /// The chain operations append to (caller holds the journal lock): opening's commit
    /// starts it; a volume whose opening commit failed has none and is failed.
    func currentJournal() throws(FSError) -> MetadataLog {
        guard let journal else { throw failure ?? .io("the volume has no journal chain") }
        return journal
    }

    /// Journal bytes written since the last commit (what replay after a crash now reads).
    public var journalBytesSinceCommit: UInt64 { journalBytesMirror.load(ordering: .relaxed) }

    /// Makes every operation performed so far survive a power cut (fsync, fdatasync).
    public func sync() throws(FSError) {
        if let failure { throw failure }
        try syncImage()
    }

    /// fdatasync, through the files' mapping once there is one (its sync epochs tell
    /// files when a change is durable); before it, through the same latch, so a failure
    /// on either path fails every later sync (fsyncs run outside the namespace lock, and
    /// of two at once one may see EIO and the other 0).
    func syncImage() throws(FSError) {
        if let image = files?.image { try image.sync() } else { try syncLatch.sync { () throws(FSError) in try storage.sync() } }
    }

    /// The store files keep their blocks in: the image mapped (once, its whole capacity)
    /// on the first call.
    public func fileBlocks() throws(FSError) -> VolumeFileBlocks {
        // Once made, without the space lock: every create asks for it under the namespace
        // lock, and a commit holds the space lock while it settles, so each create, and
        // every request queued behind it, waited for the commit.
        if let files { return files }
        return try spaceLock.withLock { () throws(FSError) -> VolumeFileBlocks in
            if let files { return files }
            // The space's end: the capacity this mount opened with (its opening commit's).
            let image = try ImageMapping(storage: storage, mappedBytes: Int(space.endBlock << BackingStore.blockShift),
                                         syncLatch: syncLatch)
            let made = VolumeFileBlocks(image: image, space: space, delta: delta, lock: spaceLock, punches: punchCounter)
            if settledUnpublished { made.holdExclusivityUntilPublished() }
            try space.refreshFreeEstimate()
            noteHostRoom()
            filesHolder.withLock { $0 = made }
            return made
        }
    }

    /// Makes `slot` the current commit and retires `generation`, which its root holds,
    /// from the delta: one step for readers (`reader`).
    func publish(_ slot: CommitSlot, retiring generation: DeltaGeneration) {
        publishLock.withLock {
            storedCurrent = slot
            delta.noteCommittedTree(level: slot.filesystemTree?.level)
            delta.retire(generation)
        }
    }

    /// Nodes the readers keep between reads (`NodeReadCache`): 2,048 leaves (8 MiB) and
    /// 8,192 interior nodes (32 MiB), enough for every live interior node of an image of
    /// about 10,000,000 files (one made by `offloadfs-genimage` has 747,441 leaves and
    /// 7,706 interior nodes in its filesystem tree). Memory: 40 MiB at most, the live
    /// nodes readers read (each commit lets go of those it replaced), and at rest only
    /// those (`NodeReadCache.releaseFreeSlots`). Before the commits' `forget`, both pools
    /// filled with superseded copies whatever the tree's size.
    public static let readerCachedLeaves = 2048
    public static let readerCachedInteriorNodes = 8192

    /// Changed leaves of the filesystem tree a commit holds in RAM while it applies a
    /// generation, past which they are written ahead (`FileSystemTree.spillingAhead`):
    /// 2,048 (8 MiB; tests lower it). A commit of 20,000 unlinks scattered over a large
    /// directory's names held about 35,000 (140 MB) before.
    var spilledLeavesAbove = 2048

    /// What a request reads: the delta's generations over a tree at the last durable root.
    /// The layers, the slot and the reader's epoch are taken in one step under the publish
    /// lock (a commit publishing between them would give a root without the generation
    /// laid over it, or let its punch take blocks the reader's root uses); the reader's
    /// tree object is then opened over the same page store, whose reads are preads.
    /// A failed volume still reads (read-only, as ext4 remounts itself after an error):
    /// readers open the last durable root, which nothing after it touched (its blocks are
    /// neither punched nor reused before a later commit is durable), under the delta's
    /// generations, which a failed commit leaves unretired.
    public func reader() throws(FSError) -> VolumeReader {
        let (layers, slot) = publishLock.withLock {
            let taken = (delta.layers(), storedCurrent)
            epochs.enter(taken.1.generation)
            return taken
        }
        let generation = slot.generation
        let tree: CopyOnWriteTree
        do {
            tree = try CopyOnWriteTree(pages: filesystemPages, imageID: slot.imageID, treeID: Self.filesystemTreeID,
                                       root: slot.filesystemTree)
            tree.cacheNodes(in: nodeCache)
        } catch {
            epochs.leave(generation)
            throw error
        }
        return VolumeReader(view: LayeredFileSystem(layers: layers, tree: FileSystemTree(tree: tree, hashes: filesystem.hashes),
                                                    committedGeneration: generation),
                            generation: generation, epochs: epochs)
    }
}
