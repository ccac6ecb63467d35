import Synchronization

/// Format 2's image as a whole, below the namespace: the two commit slots (blocks 0 and
/// 1), the block space (block tree and allocator) and the filesystem tree over the image's
/// blocks, and the delta of changes since the last commit (docs/ARCHITECTURE.md, "Metadata
/// at scale", step 4a).
///
/// Operations `perform` their changes into the delta and append one journal frame each
/// (they survive the process being killed at once, and a power cut after the next
/// `sync`); `commit` makes the oldest closed generation durable in the trees and
/// continues the journal in a new chain (`TreeVolume+Commit.swift`); `open` reads the
/// current commit slot, replays the journal frames newer than it into the delta and
/// commits them: its cost follows the journal, bounded by the commit budget, never the
/// tree's size.
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
    private let admissionLock = PthreadLock()

    /// Operations performed that free something once committed (`JournalChange.frees`).
    private let freeingOperations = Atomic<UInt64>(0)

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

    /// Numbers between mounts that no chain uses (docs/FORMAT.md, "The journal of format 2").
    static let sequenceGap: UInt64 = 1 << 32

    /// The first sequence number of a mount's chains, after a replay that ended before
    /// `replayEnd`: the first multiple of `sequenceGap` above `replayEnd + sequenceGap`. Where
    /// replay ended is not where the crashed mount stopped writing: a power cut between a
    /// chain switch and its commit's first sync keeps frames of the new chain but not the
    /// link to it, and their blocks are free again. With the numbers going on from the
    /// replay's end, a chain of this mount on those blocks whose last frame ended where one
    /// of them began, numbered as its next would be, let the next replay take that frame
    /// and the ones after it for this mount's (`TreeVolumeStaleFramesTests`).
    /// Past the gap, every frame the crashed mount wrote has a number lower than any this
    /// mount's chains expect; it would need 2^32 frames (at least 160 GiB of journal)
    /// written after its last durable frame to reach them. Numbers last 2^30 mounts; an
    /// image whose journal numbers are used up (made so, in practice) is refused.
    static func firstSequence(after replayEnd: UInt64) throws(FSError) -> UInt64 {
        let first = (replayEnd / sequenceGap + 2).multipliedReportingOverflow(by: sequenceGap)
        guard !first.overflow, first.partialValue <= Superblock.maximumCounter - sequenceGap else {
            throw .damagedImage("the journal's sequence numbers are used up (the last replayed is \(replayEnd))")
        }
        return first.partialValue
    }

    /// Writes a new, empty format 2 image of `capacityBytes` on `storage` (both slots: the
    /// first commit, and a zeroed other slot, so that nothing of an earlier image there
    /// counts) and opens it.
    /// `capacityIsSet`: the capacity was asked for (`--size`) rather than a mount's default.
    public static func format(_ storage: any ImageStorage, capacityBytes: UInt64, capacityIsSet: Bool = true,
                              imageID: UInt64, nameHashKey: SipHash24) throws(FSError) -> TreeVolume {
        guard capacityBytes >> BackingStore.blockShift > firstSpaceBlock else {
            throw .invalidArgument("a capacity of \(capacityBytes) bytes leaves no room after the commit slots")
        }
        guard imageID != 0 else { throw .invalidArgument("image id 0") }
        // Whole blocks: the block space's end is what the slots say.
        let capacityBytes = (capacityBytes >> BackingStore.blockShift) << BackingStore.blockShift
        if storage.length < capacityBytes { try storage.setLength(capacityBytes) }
        try [UInt8](repeating: 0, count: BackingStore.blockSize).withUnsafeBytes { raw in
            Result { () throws(FSError) in try storage.write(raw, at: 0) }
        }.get()
        let first = CommitSlot(imageID: imageID, generation: 1, cleanlyUnmounted: true, capacityIsSet: capacityIsSet,
                               capacityBytes: capacityBytes, unmountError: 0, nameHashKey: nameHashKey,
                               filesystemTree: nil, blockTree: nil, journal: LogSegment(start: 0, length: 0),
                               journalSequence: 0, nextInode: 2, inodeCount: 0, usedBlocks: 0)
        try CommitSlots.write(first, to: storage)
        return try open(storage)
    }

    /// Opens the image at its current commit (the slots and the two roots), replays the
    /// journal frames newer than that commit into the delta, and commits: the new slot
    /// names a new journal chain, which the frames of this mount go to (the old chain may
    /// end in a torn frame, after which nothing can be appended), and the old chain's
    /// segments are released.
    ///
    /// On a read-only storage it writes nothing: the replayed frames stay in the delta,
    /// readable, nothing is punched or committed, and every change, sync and commit throws
    /// `.readOnly` (`failure`).
    /// `capacity`: the mount's `--size` or default (nil: the slot's own), applied as
    /// `TreeVolume+Capacity.swift` says: a larger one by the opening commit, a smaller one
    /// too when everything in use lies below it, otherwise refused before anything is
    /// written (`.capacityTooSmall`) or, a default, cut to the smallest that fits. A
    /// read-only open keeps the slot's.
    /// `reserveTarget` overrides the metadata reserve's size (tests of a full image).
    /// `frameLimit`: replays only the first that many frames after the commit and leaves
    /// the rest out, as a crash after them would have (repair of a journal whose replay
    /// fails, `VolumeCheck.longestReplay`); the chain is still read to its end, so that
    /// the opening commit lets go of all of it.
    public static func open(_ storage: any ImageStorage, capacity request: CapacityRequest? = nil,
                            reserveTarget: UInt64? = nil, replayingAtMost frameLimit: Int = .max) throws(FSError) -> TreeVolume {
        let slot = try CommitSlots.read(storage).current
        var frames: [(generation: UInt64, changes: [JournalChange])] = []
        var damage: FSError?
        let journal = SlotJournal(storage, slot) { frame, _ in
            switch frame {
            case .failure(let error):
                damage = error
                return false
            case .success(let frame):
                // Past the limit nothing is replayed, so nothing needs to be right.
                guard frame.generation <= slot.generation || frames.count < frameLimit else { return true }
                // Two generations at most follow the last durable commit: the one its
                // successor was committing (closed under the namespace lock) and the one
                // requests went on in meanwhile (the maintenance commits outside that
                // lock; an operation's own commit of the next one waits for the commit
                // lock, so a third never starts before the slot). A frame of a later one
                // is damage.
                guard frame.generation <= slot.generation + Self.generationsPastTheSlot else {
                    damage = .damagedImage("a journal frame of generation \(frame.generation) after commit \(slot.generation)")
                    return false
                }
                if frame.generation > slot.generation { frames.append(frame) }
                return true
            }
        }
        if let damage { throw damage }
        let oldChain = journal.segments
        // The new chain's numbers go on past the old one's (`firstSequence(after:)`), so no
        // frame left in a reused block can pass for one of the new chain.
        let nextSequence = journal.nextSequence
        var capacity = (bytes: slot.capacityBytes, isSet: slot.capacityIsSet)
        if let request, !storage.isReadOnly {
            capacity = try Self.capacity(for: request, slot: slot, storage: storage, replaying: frames, oldChain: oldChain)
        }
        let volume = try TreeVolume(storage: storage, slot: slot, capacity: capacity, replaying: frames, oldChain: oldChain,
                                    nextSequence: nextSequence)
        if storage.isReadOnly {
            volume.failure = .readOnly
            return volume
        }
        // Claims are made: from here on the free space is scrubbed where allocations go.
        try volume.scrubFreeSpaceAsGroupsLoad()
        try volume.growFile()
        if let reserveTarget { volume.space.setReserveTarget(reserveTarget) }
        // The old chain goes with the commit that stops naming it (a pending free of it).
        for segment in oldChain { volume.logSpace.releaseLogSegment(segment.range) }
        do {
            try volume.commit()
        } catch .noSpace {
            // A full image (its last mount ran out of space in a commit, whose replay
            // needs the same room): it opens read-only, every replayed change readable,
            // and refuses changes (`failure`) until it is opened with more room.
        }
        volume.scrub.setOpening(false)
        volume.cutFile(shrunkFrom: slot.capacityBytes)
        return volume
    }

    /// How many generations' frames the journal may hold past the durable slot: the one a
    /// crashed commit was writing and the next, which requests went on in.
    public static let generationsPastTheSlot: UInt64 = 2

    /// The metadata reserve of a space of `capacityBlocks` (`BlockSpace+Reserve.swift`):
    /// a 64th of it, at least 512 KiB (a commit of one operation and a journal segment)
    /// and at most 8 MiB (a commit of a few thousand changes; the maintenance commits at
    /// every tick with changes once the image is low on free space,
    /// `VolumeCommitPolicy.isLowOnSpace`). Its blocks take disk space (they are fallocated, so that a full
    /// disk under the image still leaves the commit room), which `du` shows.
    static func reserveBlocks(capacityBlocks: UInt64) -> UInt64 {
        min(max(capacityBlocks / 64, 128), 2_048)
    }

    /// Claims what replay finds in use that the block tree does not say, in `space` (the
    /// image's at `slot`), and returns the claims of the frames' extents (`replayClaims`).
    ///
    /// The old chain's segments the block tree does not have (the chain grew after the
    /// commit): claimed before anything is allocated, so that nothing overwrites them
    /// until the commit that follows replay is durable (until then, a crash replays
    /// them again).
    /// A segment the block tree holds must be a journal run, whole; one it does not
    /// hold must be free, not pending (`claimData` checks): anything else names blocks
    /// of something else.
    static func claimReplayed(oldChain: [LogSegment], frames: [(generation: UInt64, changes: [JournalChange])],
                              of slot: CommitSlot, in space: BlockSpace) throws(FSError) -> RangeSet<UInt64> {
        for segment in oldChain {
            let blocks = (segment.start >> BackingStore.blockShift)..<(segment.range.upperBound >> BackingStore.blockShift)
            let runs = try space.blockTree.runs(overlapping: blocks)
            if runs.isEmpty {
                try space.claimData(blocks, use: .journal)
            } else if !(runs.allSatisfy { $0.use == .journal }
                        && runs.first!.blocks.lowerBound <= blocks.lowerBound && runs.last!.blocks.upperBound >= blocks.upperBound
                        && zip(runs, runs.dropFirst()).allSatisfy { $0.blocks.upperBound == $1.blocks.lowerBound }) {
                throw .damagedImage("journal segment \(segment) of commit \(slot.generation) lies on blocks that are not the journal's")
            }
        }
        return try claimBlocks(namedBy: frames.flatMap(\.changes), in: space)
    }

    /// Claims the blocks `changes`' image extents name that the block tree holds free: the
    /// write path of the mount that crashed took them, and no commit recorded them. A
    /// block pending in the tree, or outside the space, is damage (`claimData`).
    static func claimBlocks(namedBy changes: [JournalChange], in space: BlockSpace) throws(FSError) -> RangeSet<UInt64> {
        var named = RangeSet<UInt64>()
        for change in changes {
            guard case .fileRange(_, _, _, let pieces) = change else { continue }
            for piece in pieces {
                if case .mmapOffload(let offset, let size) = piece.extent, size > 0 {
                    named.insert(contentsOf: ExtentReferenceChanges.blocks(offset: offset, length: size))
                }
            }
        }
        var unrecorded = named
        for part in named.ranges {
            for run in try space.blockTree.runs(overlapping: part) {
                // A file extent over tree nodes or the journal: retaining it would let the
                // node's block be freed and reused under the extent.
                guard run.use == .data else {
                    throw .damagedImage("a journal frame's file extent names blocks \(run.blocks.clamped(to: part)), which hold \(run.use)")
                }
                unrecorded.remove(contentsOf: run.blocks)
            }
        }
        try space.claimData(unrecorded)
        return unrecorded
    }

    /// Runs one operation: makes room for its journal frame, joins the open generation,
    /// records `changes`, appends the frame, leaves. An operation the journal has no room
    /// for (the image is full) or that the delta refuses fails having changed nothing; a
    /// frame that cannot be written after all (an I/O error) fails the volume: the delta
    /// holds a change the journal does not.
    /// `reserved`: room `reserveRoom` reserved for this operation, which ends here.
    /// `commitsAtBudget`: commit after the frame when the journal or the open generation
    /// reached `limits` (false: the caller commits, `isOverBudget`).
    /// `born`: the inode numbers this operation gave out, so that one made and dropped
    /// within a generation leaves it altogether (`DeltaGeneration.record`).
    public func perform(_ changes: [JournalChange], born: Range<UInt64> = 0..<0, reserved: Int = 0,
                        commitsAtBudget: Bool = true) throws(FSError) {
        // The claim ends here, whatever happens: spent by the append, or given back on the
        // way out.
        var held = reserved
        defer { releaseRoom(held) }
        // So does an admission, once the delta counts the changes (or on the way out).
        var admitted = 0
        defer { endAdmission(&admitted) }
        if let failure { throw failure }
        // Encoded once, before joining: the generation is patched in afterwards.
        var payload = VolumeJournalFrame.encode(generation: 0, changes)
        guard payload.count <= FrameHeader.maximumPayload else {
            throw .invalidArgument("an operation of \(payload.count) journal bytes exceeds a frame's \(FrameHeader.maximumPayload)")
        }
        let frame = FrameHeader.size + payload.count
        // A file's data change (it reserved its room) and an operation that releases are
        // let through: the data is bounded by what it leaves free (`blocksHeldForCommits`),
        // and a release is what gives a full image its space back.
        if reserved == 0, !JournalChange.release(changes) { admitted = try admit(changes, born: born) }
        // The frame's room: claimed by the reservation, or now (on the common path without
        // the journal lock: `TreeVolume+JournalRoom.swift`).
        let claim = Self.journalClaim(forFrame: frame)
        // A reservation that holds the claim was made for a frame at least this large (one
        // claim a frame: `reserveRoom`'s callers reserve a change's room anew, not in
        // parts), under the journal lock when that frame is over `largestPooledFrame`,
        // which raised the spares' floor to it; a top-up is claimed on this frame.
        if held < claim {
            try claimJournalRoom(claim - held, frame: frame, toppingUp: held)
            held = claim
        }
        let ticket = delta.join()
        let appended: MetadataLog
        do {
            defer { delta.leave(ticket) }
            try delta.record(changes, born: born, in: ticket)
            endAdmission(&admitted)
            if JournalChange.frees(changes) { freeingOperations.add(1, ordering: .relaxed) }
            VolumeJournalFrame.tag(&payload, generation: ticket.generation.number)
            do {
                // The chain a commit may have switched to meanwhile: the frame goes there.
                appended = try journalLock.withLock { () throws(FSError) -> MetadataLog in
                    let journal = try currentJournal()
                    assertJournalRoomCovered(in: journal)
                    try journal.append(payload: payload)
                    journalBytesMirror.store(journal.appendedBytes, ordering: .relaxed)
                    journalWriteOffset.store(journal.writeOffset, ordering: .relaxed)
                    lastAppendNanoseconds = MonotonicClock.nanoseconds()
                    spendJournalRoom(held, onFrame: frame, in: journal)
                    held = 0
                    return journal
                }
            } catch {
                failure = error
                throw error
            }
        }
        // Outside the generation (a commit waits for the operations inside it). The
        // operation is done whatever the commit does: its frame is in the journal, so a
        // commit that fails here fails the volume (`failure`, thrown by every later change)
        // but not this operation, which replay brings back.
        let load = ticket.generation.commitLoad
        if commitsAtBudget, limits.use(journalBytes: appended.appendedBytes, load: load) == .reached
            || roomUse(openObjects: load.objects) == .reached {
            _ = try? commit()
        }
    }

    /// True when the journal since the last commit, or the open generation's changed
    /// objects, reached `limits`: what makes `perform` commit by itself. Callers that
    /// perform with `commitsAtBudget: false` (operations that share a lock the commit's
    /// close must not interleave with) commit when they can.
    public var isOverBudget: Bool { budget == .reached }

    /// How near the journal since the last commit and the open generation's changed
    /// objects are to `limits`: `.reached` makes `perform` commit by itself (or its
    /// caller, `isOverBudget`); from `.nearing` (three quarters) a mount's maintenance
    /// commits without waiting for its next tick, so that operations seldom reach the
    /// limits and commit on their own path (docs/ARCHITECTURE.md, "When format 2
    /// commits").
    public var budget: BudgetUse {
        let load = delta.openLoad
        // The room's use is read once (it takes the delta's lock below `ampleRoomBlocks`).
        let room = roomUse(openObjects: load.objects)
        let limited = limits.use(journalBytes: journalBytesSinceCommit, load: load)
        if limited == .reached || room == .reached { return .reached }
        return limited == .nearing || room == .nearing ? .nearing : .under
    }

    public enum BudgetUse: Sendable, Equatable {
        case under, nearing, reached
    }

    /// Blocks the commit of one changed object may take on a full image: a leaf of the
    /// filesystem tree written anew, a leaf of the block tree for the old leaf's release,
    /// and its share of the journal and of both trees' inner nodes.
    static let commitBlocksPerObject: UInt64 = 3
    /// Blocks a commit takes whatever it writes: its new journal chain's first segment (16),
    /// both trees' paths to their roots, the block tree's leaves for the old chain.
    static let commitOverheadBlocks: UInt64 = 32

    /// Blocks the commits of `load` may take on a full image: `commitBlocksPerObject` an
    /// object, the leaves its items fill (`CommitLoad.itemBytes`), and two for each leaf
    /// elsewhere in the tree its keys may land in (`CommitLoad.scatteredLeaves`).
    static func commitBlocks(_ load: CommitLoad) -> UInt64 {
        commitBlocksPerObject * UInt64(load.objects)
            + UInt64((load.itemBytes + CommitLoad.leafBytes - 1) / CommitLoad.leafBytes)
            + UInt64(CommitLoad.scatteredKeyBlocks * load.scatteredLeaves)
    }

    /// The free blocks file data must leave for the commits of `load`, the changes not
    /// yet committed, beside what the metadata reserve of `space` is sure to give a
    /// commit (its blocks, less the quarter of its target that journal segments may still
    /// take): nothing while the reserve covers them. docs/ARCHITECTURE.md, "Commits that
    /// fit a full image".
    static func blocksHeldForCommits(of load: CommitLoad, space: BlockSpace) -> UInt64 {
        let need = commitOverheadBlocks + commitBlocks(load)
        let sure = min(space.reserveBlocks, space.reserveTarget - space.reserveTarget / 4)
        return need > sure ? need - sure : 0
    }

    /// Refuses with ENOSPC, before it joins (nothing changed), an operation whose commit
    /// may take `load` (`CommitLoad.of`: its changes, every key taken as new) that grows
    /// the tree on a nearly full image (`isNearlyFull`) when that commit would not fit,
    /// with those of the changes waiting and those admitted before it, in the room the
    /// commits can take, keeping aside the overhead of five commits
    /// (`growthAsideBlocks`). Without it, creates on a full image, committed at each
    /// maintenance tick, took the reserve until a commit found nothing and failed the
    /// volume. docs/ARCHITECTURE.md, "Commits that fit a full image".
    /// Returns the blocks admitted (0 where the image is not nearly full), counted in
    /// `admittedBlocks` until `endAdmission`: the caller ends it once the delta counts
    /// the changes, and on every way out.
    func admit(_ load: CommitLoad) throws(FSError) -> Int {
        guard isNearlyFull(metadataRoom) else { return 0 }
        do {
            return try admitOnce(load)
        } catch {
            // The disk under the image may have room again (files beside the image were
            // deleted, or it refused a punch and is no limit any more) since it was last
            // read: read it, and ask once more.
            refreshHostRoom()
            return try admitOnce(load)
        }
    }

    /// `admit`'s one look at the counts and the room (caller holds no volume lock).
    private func admitOnce(_ load: CommitLoad) throws(FSError) -> Int {
        let blocks = Int(Self.commitBlocks(load))
        return try admissionLock.withLock { () throws(FSError) -> Int in
            // The admitted count first: an operation leaving it between the two reads
            // counts twice, never not at all (it records before it leaves). The room after
            // the counts: a commit settling between them took its blocks already.
            let admitted = admittedBlocks.load(ordering: .sequentiallyConsistent)
            let waiting = delta.commitLoad(after: space.settledGeneration)
            let room = metadataRoom
            let need = growthAsideBlocks + Self.commitBlocks(waiting) + UInt64(admitted + blocks)
            if room < need { throw .noSpace }
            admittedBlocks.add(blocks, ordering: .sequentiallyConsistent)
            return blocks
        }
    }

    /// `admit` of an operation's `changes` (`born`: the inode numbers it gave out), counted
    /// only where the image is nearly full: elsewhere one atomic load.
    func admit(_ changes: [JournalChange], born: Range<UInt64>) throws(FSError) -> Int {
        guard isNearlyFull(metadataRoom) else { return 0 }
        return try admit(CommitLoad.of(changes, born: born))
    }

    /// Ends an admission (`admit`) of `admitted` blocks; sets it to 0.
    func endAdmission(_ admitted: inout Int) {
        guard admitted > 0 else { return }
        let before = admittedBlocks.subtract(admitted, ordering: .sequentiallyConsistent).oldValue
        precondition(before >= admitted, "an admission ended twice")
        admitted = 0
    }

    /// Reads what the disk under the image can still give it into the block space
    /// (`BlockSpace.hostFreeBlocks`): at each maintenance tick (other files on the disk
    /// change it), after each commit's punch and refill, and after file data took disk
    /// space (`VolumeFileBlocks.noteHostRoom`).
    public func refreshHostRoom() {
        // Read before the lock: statvfs may be a round trip (NFS).
        let bytes = storage.hostAvailableBytes
        spaceLock.withLock { space.noteHostRoom(availableBytes: bytes) }
    }

    /// `refreshHostRoom` with the space lock held.
    func noteHostRoom() {
        space.noteHostRoom(availableBytes: storage.hostAvailableBytes)
    }

    /// What the commits can take (`BlockSpace.metadataRoom`).
    var metadataRoom: UInt64 { space.metadataRoom }

    /// True when the room left is under twice the metadata reserve's target: file data
    /// took the rest. Only then does `admit` read the counts (elsewhere an
    /// operation costs them one atomic load).
    func isNearlyFull(_ room: UInt64) -> Bool {
        room < 2 * space.reserveTarget
    }

    /// True when the room left is under twice the metadata reserve's target
    /// (`isNearlyFull`): a change refused for space then runs after a reclaim.
    public var isNearlyFullNow: Bool { isNearlyFull(metadataRoom) }

    /// The room `admit` keeps aside from what grows the tree: five commits' overhead (what
    /// a commit frees is handed out again four commits later, and the maintenance keeps
    /// committing meanwhile), at most three quarters of the reserve's target (a reserve at
    /// its 128-block minimum holds less than five).
    var growthAsideBlocks: UInt64 {
        let target = space.reserveTarget
        return min(5 * Self.commitOverheadBlocks, target - target / 4)
    }

    /// `.reached` when the open generation (not empty) must be committed before `admit`
    /// refuses what grows the tree: the commits of the changes waiting, and an operation's
    /// worth more (`changesAhead`), need all of the room left after the aside; `.nearing`
    /// at three quarters of it.
    func roomUse(openObjects: Int) -> BudgetUse {
        guard openObjects > 0 else { return .under }
        let room = metadataRoom
        // Not only on a nearly full image: a generation whose estimate outgrew the room
        // while the image was not (metadata changes alone, on an image of a few GiB) would
        // otherwise meet admission, once the image filled, with a commit larger than the
        // room. Past `ampleRoomBlocks` no count is read.
        guard room < Self.ampleRoomBlocks else { return .under }
        let usable = room - min(room, growthAsideBlocks)
        // With the changes admitted and not yet recorded: what admission counts.
        let waiting = delta.commitLoad(after: space.settledGeneration)
        let need = Self.commitBlocks(waiting) + UInt64(admittedBlocks.load(ordering: .relaxed))
            + Self.commitBlocksPerObject * UInt64(Self.changesAhead)
        if need >= usable { return .reached }
        return 4 * need >= 3 * usable ? .nearing : .under
    }

    /// Changes an operation may bring (a rename's, about), for `roomUse`.
    static let changesAhead = 8

    /// Room past which `roomUse` reads no counts: the commits of four generations at
    /// the default dirty cap fit in it (about 938 MiB).
    static let ampleRoomBlocks: UInt64 = 5 * commitOverheadBlocks + 4 * 20_000 * commitBlocksPerObject

    /// True when file data is refused blocks that are free, held for the commits of the
    /// changes not yet committed (`blocksHeldForCommits`): one commit gives them back.
    public var holdsFreeBlocksForCommits: Bool {
        guard let files else { return false }
        return spaceLock.withLock {
            let held = files.heldForCommits, promised = files.unbackedPromisedBlocks, free = space.usableFree
            return held > 0 && free > promised && free <= promised + held
        }
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

    /// Makes the journal's next pages writable (`ImageStorage.prepareForWrite`) for the
    /// frame of an operation about to start: callers that will append under a lock other
    /// requests wait for call this before taking it, so that the page fault of the append,
    /// and what the host file system makes it wait for (a punch of the image, its journal
    /// commit), is not spent holding that lock. Two pages: a frame is at most a few KiB,
    /// and may cross into the next page. Pages prepared since the last sync finished are
    /// not prepared again (a sync's writeback write-protects the pages it cleans; the
    /// kernel's own writeback may too, and then the append faults as it did before).
    /// The pages are read under the journal lock and prepared after it: a call held up
    /// across two commits could prepare blocks the chain has let go of since, which
    /// changes no byte (a punched block may get disk space back until it is used again).
    /// Whether they were prepared already is read first without the lock
    /// (`arePreparedJournalPagesAhead`), which is how nearly every call ends.
    public func prepareJournalAppend() {
        guard !isReadOnly else { return }
        // Read before the pages are prepared: a sync that ends after it may have cleaned them.
        let syncs = syncLatch.finishedSyncs
        if arePreparedJournalPagesAhead(syncs: syncs) { return }
        let pages = journalLock.withLock { () -> UpcomingBytes? in
            // Whole blocks (a journal segment is whole blocks), as bytes.
            let pages = (journal?.upcomingBytes(Self.preparedJournalBytes) ?? UpcomingBytes()).wholeBlocks()
            if pages.isEmpty { return nil }
            if let last = preparedJournal, last.syncs == syncs, last.pages.covers(pages) { return nil }
            return pages
        }
        guard let pages else { return }
        if let range = pages.current { storage.prepareForWrite(range) }
        if let range = pages.spare { storage.prepareForWrite(range) }
        // Recorded once done: an operation that comes meanwhile prepares them too rather
        // than faulting under the lock while this call still waits (for a punch).
        journalLock.withLock {
            preparedJournal = (pages, syncs)
            // A seqlock: the version is odd while the three change, so a reader that finds
            // the same even version before and after read three stored together.
            preparedJournalVersion.add(1, ordering: .sequentiallyConsistent)
            preparedJournalSyncs.store(syncs, ordering: .sequentiallyConsistent)
            preparedJournalStart.store(pages.current?.lowerBound ?? 0, ordering: .sequentiallyConsistent)
            preparedJournalEnd.store(pages.current?.upperBound ?? 0, ordering: .sequentiallyConsistent)
            preparedJournalVersion.add(1, ordering: .sequentiallyConsistent)
        }
    }

    /// True when the pages prepared last (`preparedJournal`, with `syncs` finished syncs)
    /// hold the next `preparedJournalBytes` from the current chain's write position as of
    /// its last append: those bytes then lie in the current segment (the prepared range
    /// ends at the segment's end at the latest), which takes the next frame of up to
    /// `largestPooledFrame`. Without the journal lock; a wrong answer costs only a fault
    /// under it.
    private func arePreparedJournalPagesAhead(syncs: UInt64) -> Bool {
        let version = preparedJournalVersion.load(ordering: .sequentiallyConsistent)
        guard version & 1 == 0, preparedJournalSyncs.load(ordering: .sequentiallyConsistent) == syncs else { return false }
        let start = preparedJournalStart.load(ordering: .sequentiallyConsistent)
        let end = preparedJournalEnd.load(ordering: .sequentiallyConsistent)
        guard preparedJournalVersion.load(ordering: .sequentiallyConsistent) == version else { return false }
        let at = journalWriteOffset.load(ordering: .relaxed)
        return start <= at && at + UInt64(Self.preparedJournalBytes) <= end
    }

    /// How far ahead of the write position `prepareJournalAppend` prepares.
    static let preparedJournalBytes = 2 * BackingStore.blockSize

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

extension JournalChange {
    /// True when `changes` free something once committed: a name or an xattr removed, or
    /// an inode dropped (carried on any frame). `TreeVolume.releaseCount` counts them.
    static func frees(_ changes: [JournalChange]) -> Bool {
        for change in changes {
            switch change {
            case .unlink, .removeXattr, .drop: return true
            default: continue
            }
        }
        return false
    }

    /// True for the changes of an operation that gives space back once committed: one
    /// with a name removed or an xattr removed (an rm, a rename, a removexattr), or a frame
    /// of drops of forgotten inodes alone (with their orphan items' removals: a drop of an
    /// inode unlinked while the kernel referenced it removes both; counted as no release,
    /// such a frame was refused on a full image, and an `rm` of a big file gave its space
    /// back only at a later operation's frame). `TreeVolume.admit` lets those through.
    /// Drops carried on another operation's frame (`VolumeNamespace.writeFrame` adds them
    /// to any) do not make a create one.
    static func release(_ changes: [JournalChange]) -> Bool {
        var onlyDrops = true
        for change in changes {
            switch change {
            case .unlink, .removeXattr: return true
            case .drop, .orphan(_, nil): continue
            default: onlyDrops = false
            }
        }
        return onlyDrops && !changes.isEmpty
    }
}
