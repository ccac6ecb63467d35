import OffloadCore

/// Writes the namespace into its image: every change as a journal frame, the moment it
/// is made, and from time to time a checkpoint of the whole tree.
///
/// ## Journal
/// Each namespace operation appends one frame (`record`) while holding the lock that
/// orders it: the namespace lock for names and attributes, the file's write lock for
/// file data (`FileJournal`). Frames go into the image's page cache, so everything the
/// daemon has answered survives `kill -9`; `sync()` (fsync, fdatasync, unmount) makes
/// it survive power loss too. Records state results, not deltas, so replaying a record
/// on a state that already has it changes nothing (see `MetadataRecord`).
///
/// ## Checkpoint
/// 1. Under the journal mutex, the journal continues in a new chain (a link frame ends
///    the old one), so from here on every change lands in the new chain.
/// 2. The tree is written as records into a new checkpoint chain, one object at a time
///    under its own lock, while operations go on: whatever changed meanwhile is also in
///    the new journal chain and replays on top (idempotence).
/// 3. fdatasync; both superblocks name the new checkpoint and the new journal chain as
///    the current commit, and the commit that was current as the previous one.
/// 4. The chains of the commit before that are released (quarantined until the next
///    sync, like any freed block); the previous commit's stay until the next checkpoint,
///    for `fsck --repair` to salvage from should the new checkpoint be damaged.
/// Until step 3 is durable the old superblock still leads, through the link frame, to
/// every change: a crash during a checkpoint loses nothing. A journal chain with no frame
/// yet is not switched (no link frame, no new segment): the new superblock names it, and
/// everything appended during the checkpoint lands in it. That chain is always reachable
/// from the superblock on disk, except at open, where nothing changes until the first
/// checkpoint (or `keepCheckpoint`) is durable.
public final class NamespaceJournal: Sendable {
    let store: BackingStore
    public let imageID: UInt64
    private let state: PthreadMutex<State>
    /// One checkpoint at a time.
    private let checkpointing = PthreadLock()

    struct State {
        var current: MetadataLog
        /// Journal chains closed since the commit in use began: they lead from its
        /// journal to `current`.
        var closed: [MetadataLog] = []
        /// The commit the live tree descends from (recovered from, or last written): the
        /// next checkpoint names it as the previous commit. Nil when there is none to
        /// keep (a new image, a clean mount, a repair that could not trust it).
        var inUse: Superblock.Commit?
        /// Its segments other than `closed` and `current`'s: its checkpoint, and the
        /// journal chains recovery read.
        var inUseSegments: [LogSegment]
        /// The previous commit's segments, kept while the superblock on disk names it.
        var previousSegments: [LogSegment] = []
        /// Segments to free after the next checkpoint.
        var retired: [LogSegment]
        /// The durable checkpoint's segments.
        var checkpoint: [LogSegment] = []
        var generation: UInt64
        /// The superblock both copies on disk hold (the last one written or read).
        var durable: Superblock
        /// Set when a frame could not be written: the journal misses changes until the
        /// next checkpoint, which captures the whole tree again.
        var failure: FSError?
        var appendedSinceCheckpoint: UInt64 = 0
        /// Bytes reserved by operations under way and not appended yet (`reserve`).
        var reserved = 0
    }

    /// The metadata chains recovery read, and what becomes of them.
    public struct Recovered: Sendable {
        /// The commit the tree was recovered from, kept as the previous commit by the first
        /// checkpoint (nil: none to keep), and its segments.
        public var commit: Superblock.Commit?
        public var segments: [LogSegment]
        /// Chains freed after the first checkpoint (or `keepCheckpoint`).
        public var retired: [LogSegment]

        public init(commit: Superblock.Commit?, segments: [LogSegment], retired: [LogSegment]) {
            self.commit = commit
            self.segments = segments
            self.retired = retired
        }

        public static let nothing = Recovered(commit: nil, segments: [], retired: [])
    }

    /// A journal for an image whose superblock is `superblock`; `recovered` says which
    /// chains recovery read and which of them to keep; `nextSequence` continues the
    /// journal's sequence numbers. Call `checkpoint` (or `keepCheckpoint`) before any change.
    public init(store: BackingStore, superblock: Superblock, recovered: Recovered, nextSequence: UInt64) throws(FSError) {
        self.store = store
        self.imageID = superblock.imageID
        let log = try MetadataLog(store: store, imageID: superblock.imageID, stream: 0, firstSequence: nextSequence)
        state = PthreadMutex(State(current: log, inUse: recovered.commit, inUseSegments: recovered.segments,
                                   retired: recovered.retired, generation: superblock.generation,
                                   durable: superblock))
    }

    /// Reserves room for `bytes` of frames (headers included) before an operation changes
    /// anything, so that its frames cannot fail for lack of space afterwards: an
    /// operation that changed the tree and then could not be journaled would be answered
    /// and lost by the next crash. `.noSpace` when the image cannot give the journal that
    /// room even from the metadata reserve; the operation must then fail with ENOSPC
    /// before it changes anything (jbd2 reserves credits before a handle the same way).
    /// The reservation ends with the `record` that passes it as `reserved`, or `release`.
    func reserve(_ bytes: Int) throws(FSError) {
        try state.withLock { (s) throws(FSError) in
            // Twice: a frame that does not fit the rest of a segment leaves that rest
            // (less than the frame) unused, so frames of N bytes in all need at most 2N.
            try s.current.ensureRoom(total: 2 * (s.reserved + bytes), largestFrame: bytes)
            s.reserved += bytes
        }
    }

    /// Ends a reservation that no frame used (the operation failed or changed nothing).
    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        state.withLock { $0.reserved -= bytes }
    }

    /// Appends one frame holding `records`, atomically, using `reserved` bytes reserved
    /// beforehand (0: none; the append may then fail for lack of space).
    func record(_ records: [MetadataRecord], reserved: Int = 0) {
        guard !records.isEmpty else { return release(reserved) }
        var payload = ByteWriter(capacity: 256)
        for record in records { record.encode(into: &payload) }
        assert(reserved == 0 || payload.count + FrameHeader.size <= reserved,
               "a frame of \(payload.count + FrameHeader.size) bytes overran its reservation of \(reserved)")
        state.withLock { s in
            s.reserved -= reserved
            do throws(FSError) {
                try s.current.append(payload: payload.bytes)
                s.appendedSinceCheckpoint += UInt64(payload.count + FrameHeader.size)
            } catch {
                if s.failure == nil { store.holdReclaim(true) }
                s.failure = error
            }
        }
    }

    /// Bytes of journal written since the last checkpoint.
    public var journalBytesSinceCheckpoint: UInt64 { state.withLock { $0.appendedSinceCheckpoint } }
    /// The generation of the last checkpoint written (or tried: a failed one's number is
    /// not reused); one more with each.
    public var generation: UInt64 { state.withLock { $0.generation } }
    /// True when a frame could not be written since the last checkpoint (the next
    /// checkpoint, which captures the whole tree, repairs it).
    public var hasFailed: Bool { state.withLock { $0.failure != nil } }
    /// The frame's failure `hasFailed` says there is.
    public var failure: FSError? { state.withLock { $0.failure } }

    /// Bytes the durable checkpoint occupies.
    public var checkpointBytes: UInt64 {
        state.withLock { $0.checkpoint.reduce(UInt64(0)) { $0 + $1.length } }
    }

    /// Instead of a first checkpoint: keeps the checkpoint `superblock` names (its
    /// segments are `checkpoint`), which must hold the whole tree (a clean unmount left
    /// no journal), and points both superblocks at the new, empty journal. Mounting a
    /// cleanly unmounted image then writes no checkpoint. The superblocks name no previous
    /// commit until the next checkpoint: recovery did not read the one on disk, so its
    /// blocks were not kept.
    public func keepCheckpoint(of superblock: Superblock, segments checkpoint: [LogSegment]) throws(FSError) {
        try checkpointing.withLock { () throws(FSError) in
            let (journal, firstSequence, generation) = state.withLock { s in
                (s.current, s.current.nextSequence, s.generation + 1)
            }
            precondition(journal.appendedBytes == 0, "keepCheckpoint must come before any change")
            var next = superblock
            next.generation = generation
            next.cleanlyUnmounted = false
            next.journal = journal.head
            next.journalSequence = firstSequence
            next.capacityBytes = store.capacityBytes
            next.capacityIsSet = store.capacityIsSet
            next.unmountError = 0
            next.previous = nil
            try store.writeSuperblocks(next)
            install(checkpoint: checkpoint, superblock: next)
        }
    }

    /// fsync/syncfs: everything recorded so far, and the file data it points to, is
    /// durable when this returns. Also the moment quarantined blocks become reusable.
    public func sync() throws(FSError) {
        if let failure = state.withLock({ $0.failure }) {
            throw failure == .noSpace ? .noSpace : .io("the journal could not be written: \(failure)")
        }
        try store.syncAndReclaim()
    }

    /// Writes a checkpoint of `namespace` (see the type's documentation). `clean` marks
    /// the image cleanly unmounted (the last checkpoint before closing). `meter` counts the
    /// inodes written.
    public func checkpoint(_ namespace: Namespace, clean: Bool = false, meter: ProgressMeter? = nil) throws(FSError) {
        try checkpointing.withLock { () throws(FSError) in
            // A frame that failed before the switch is covered by this checkpoint (it
            // captures every object after the switch); one that fails after it is not.
            let (journal, firstSequence, generation, previous, earlierFailure) = try state.withLock {
                (s) throws(FSError) -> (MetadataLog, UInt64, UInt64, Superblock.Commit?, FSError?) in
                if s.current.appendedBytes > 0 {
                    let next = try s.current.continueInNewLog()
                    s.closed.append(s.current)
                    s.current = next
                    // Operations under way reserved room in the old chain; the new one
                    // takes its spares, and gets the rest if the image has it (if not,
                    // such an append may still fail, which the journal survives).
                    try? next.ensureRoom(total: 2 * s.reserved, largestFrame: s.reserved)
                }
                s.appendedSinceCheckpoint = 0
                defer { s.failure = nil }
                return (s.current, s.current.nextSequence, s.generation + 1, s.inUse, s.failure)
            }
            func restoreFailure() {
                if let earlierFailure { state.withLock { $0.failure = $0.failure ?? earlierFailure } }
            }
            let snapshot: MetadataLog
            do throws(FSError) {
                snapshot = try MetadataLog(store: store, imageID: imageID, stream: generation,
                                           firstSequence: 0, segmentBytes: 1 << 20,
                                           firstSegmentBytes: Namespace.checkpointFrameBytes * 2)
            } catch {
                restoreFailure()
                throw error
            }
            var superblockAttempted = false
            let written: Superblock
            do throws(FSError) {
                try namespace.writeCheckpoint(into: snapshot, meter: meter)
                try store.sync()
                superblockAttempted = true
                written = Superblock(
                    imageID: imageID, generation: generation, cleanlyUnmounted: clean,
                    checkpoint: snapshot.head, checkpointFrames: snapshot.nextSequence,
                    journal: journal.head, journalSequence: firstSequence, capacityBytes: store.capacityBytes,
                    previous: previous, capacityIsSet: store.capacityIsSet)
                try store.writeSuperblocks(written)
            } catch {
                if superblockAttempted {
                    // One superblock copy may already name the new checkpoint: keep its
                    // blocks until a later checkpoint has rewritten both copies, and never
                    // reuse this generation.
                    state.withLock { s in
                        s.retired += snapshot.segments
                        s.generation = generation
                    }
                } else {
                    // Nothing on disk names the new checkpoint: give its blocks back.
                    snapshot.releaseSegments()
                }
                // The journal still misses what it missed before.
                restoreFailure()
                throw error
            }
            install(checkpoint: snapshot.segments, superblock: written)
        }
    }

    /// Records in both superblocks that the last unmount's final checkpoint failed with
    /// `errno` (Linux numbering), for `offloadfs unmount` to report and the next mount to
    /// explain. Nothing else changes: the superblocks still name the last durable
    /// checkpoint and the journal that leads from it to every change (the chains of a
    /// failed checkpoint are kept until a later one succeeds). Overwriting the two
    /// superblock blocks takes no new disk space, so this usually works on a full disk.
    public func recordUnmountFailure(errno: Int32) throws(FSError) {
        try checkpointing.withLock { () throws(FSError) in
            let next = state.withLock { s in
                var next = s.durable
                // Never reuse a generation, even if this write fails halfway.
                s.generation += 1
                next.generation = s.generation
                next.cleanlyUnmounted = false
                next.unmountError = UInt32(clamping: max(errno, 1))
                return next
            }
            try store.writeSuperblocks(next)
            state.withLock { $0.durable = next }
        }
    }

    /// Both superblocks now name `checkpoint` (`superblock`, just written) and the current
    /// journal chain as the current commit, and the commit that was in use as the previous
    /// one: that commit's chains are kept, the ones of the commit before it are garbage, a
    /// journal failure from before the switch is covered, and the metadata reserve
    /// follows the new size. Caller holds `checkpointing`.
    private func install(checkpoint: [LogSegment], superblock: Superblock) {
        let obsolete = state.withLock { s -> [LogSegment] in
            // Without a previous commit (`keepCheckpoint`), what was in use is garbage too.
            let outgoing = s.inUseSegments + s.closed.filter { $0 !== s.current }.flatMap(\.segments)
            let obsolete = s.previousSegments + s.retired + (superblock.previous == nil ? outgoing : [])
            s.previousSegments = superblock.previous == nil ? [] : outgoing
            s.inUse = superblock.current
            s.inUseSegments = checkpoint
            s.checkpoint = checkpoint
            s.retired = []
            s.closed = []
            s.generation = superblock.generation
            s.durable = superblock
            // Everything before the switch is in this checkpoint; if no frame failed
            // since, the image no longer misses a change and freed blocks may be reused.
            if s.failure == nil { store.holdReclaim(false) }
            return obsolete
        }
        for segment in obsolete { store.release(segment.range) }
        // Room for the next checkpoint and journal even when files fill the image.
        store.setMetadataReserve(bytes: 2 << 20 + 2 * checkpointBytes)
    }
}

/// Hears of one regular file's data changes (`OffloadedFile` calls it under the file's
/// write lock, before releasing storage the change freed): marks the file's mtime and
/// ctime, and journals the change.
///
/// The file range and the inode's record (with the new times) go in ONE frame, written
/// under the namespace lock, which is taken inside the file's write lock (see the lock
/// order in docs/ARCHITECTURE.md). A power cut then keeps the new bytes with their new
/// mtime or neither, and the frame's place among the namespace's own frames (chmod,
/// utimes) is the order in which the inode changed, so replay ends with the attributes
/// the daemon had.
///
/// The journal room a change reserved (`willChange`) is held here until its frame is
/// written: the file's write lock serialises a file's changes, so one field suffices.
///
/// `@unchecked Sendable`: `state` is a weak reference set once in `init`; `credit` is
/// only touched under the file's write lock.
final class FileJournal: FileChangeObserver, @unchecked Sendable {
    let inode: InodeNumber
    /// The namespace's state, to mark the times, read the inode's record and log. Weak:
    /// the state owns the file that owns this observer.
    private weak var state: PthreadMutex<NamespaceState>?
    private let clock: @Sendable () -> Timestamp
    private var credit = 0
    /// The inode record's size the credit counted (it may grow before the frame is
    /// written: a setxattr between `willChange` and `fileChanged`).
    private var inodeBound = 0

    init(inode: InodeNumber, state: PthreadMutex<NamespaceState>?, clock: @escaping @Sendable () -> Timestamp) {
        self.inode = inode
        self.state = state
        self.clock = clock
    }

    /// Reserves room for the file-range records and the inode's record (`NamespaceJournal.reserve`).
    func willChange(recordBytes: Int) throws(FSError) {
        try state?.withLock { (s) throws(FSError) in
            guard let journal = s.journal, let node = s.table.existing(inode) else { return }
            let bytes = recordBytes + node.recordBound
            try journal.reserve(bytes)
            credit += bytes
            inodeBound = node.recordBound
        }
    }

    func changeAbandoned() {
        guard credit > 0 else { return }
        let reserved = credit
        credit = 0
        state?.withLock { $0.journal?.release(reserved) }
    }

    /// A change over very many extents goes as consecutive frames for consecutive parts
    /// of the range, the last one with the inode; each states its part's final state and
    /// the final size, so a crash between them leaves part of a change that had not been
    /// answered yet, like a torn write.
    func fileChanged(_ change: FileChange) {
        let records = MetadataRecord.fileRanges(inode: inode.rawValue, size: change.size, range: change.range,
                                                pieces: change.pieces)
        var reserved = credit
        credit = 0
        state?.withLock { s in
            guard let node = s.table.existing(inode) else {
                s.journal?.release(reserved)
                return
            }
            // The change cannot fail now; if the record grew, reserve the difference if
            // the image has it (if not, the append may still fail, which the journal
            // survives).
            let growth = node.recordBound - inodeBound
            if reserved > 0, growth > 0, (try? s.journal?.reserve(growth)) != nil { reserved += growth }
            node.markModified(clock())
            for record in records.dropLast() { s.journal?.record([record]) }
            s.journal?.record([records[records.count - 1], node.record], reserved: reserved)
        }
    }
}
