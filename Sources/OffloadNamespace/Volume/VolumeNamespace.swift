#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import Synchronization

/// The namespace of a format 2 image (docs/ARCHITECTURE.md, "Steps" 4d): names,
/// attributes, directories and xattrs read from the volume's layered view (the delta's
/// generations over the committed tree) and changed by one journal frame per operation,
/// with no copy of the tree in memory; files' data through cached `OffloadedFile`s
/// (`VolumeNamespace+Files.swift`). Mounted through `VolumeFileSystem`.
///
/// What it keeps in memory: the kernel's lookup counts of the inodes it references, the
/// open handles, and the data of files open or changed since the last commit. Every answer comes from the layered view, which holds
/// every answered operation at once; the kernel's caches sit in front of it.
///
/// The POSIX rules are format 1's (`Namespace`): the same errors in the same order, the
/// same timestamps, the same ownership and ACLs of new inodes (`NewInodeRules`), an
/// inode that loses its last name living on while the kernel references it (an orphan
/// item, dropped at the last FORGET).
///
/// Locking (docs/ARCHITECTURE.md, "Lock order"): the namespace lock (`lock`), a
/// reader-writer lock whose shared side writes only a counter of the caller's CPU
/// (`ShardedReadWriteLock`), around every change: a change's join of the open generation,
/// which a close holds back while it waits for the changes in flight. Operations that only read (lookup, getattr,
/// readlink, the directory listing calls, getxattr, listxattr: `reading`, each with a
/// reader of its own from the pool, `readers`; reads of an open file, lseek, flush:
/// `readingOpenFile`) take no namespace lock. The changes of an open file's data (write,
/// fallocate, copy_file_range: `changingData`) share it, and so do the changes of names
/// in one directory (mkdir, mknod, symlink, create, unlink, rmdir: `changingNames`) and
/// renames (`changingNamesOfARename`; one across directories takes
/// `renamesAcrossDirectories` first), which also hold the inode locks (`inodeLocks`) of
/// the directories and of the inodes they name, and the changes of one or two inodes
/// (setattr, setxattr, removexattr, link, open, release: `changingInodes`; a truncate's
/// resize runs as a write), which hold those inodes' locks, and the frames of drops of
/// forgotten inodes (`dropForgottenNow`), which hold the forgotten inodes' locks. Every
/// close of a generation (the maintenance's, an operation's own commit: the close only,
/// its commit runs outside), the ENOSPC reruns and the reclaim, and the unmount hold it
/// alone (`locked`, `changing`). Inside it, a file's write lock, then the inode
/// locks, then the leaf locks of the state shared holders change (`kernelReferences`'
/// and `fileCache`'s shards by inode, each taken alone; `handles`' shards, `failureHolder`,
/// `directoriesWithoutDefaultACLHolder`), and the volume's locks.
public final class VolumeNamespace: @unchecked Sendable {
    let volume: TreeVolume
    let memoryLimiter: MemoryLimiter
    let clock: @Sendable () -> Timestamp
    let lock = ShardedReadWriteLock()
    /// References the kernel holds, by inode, and which of them have no name left. Its
    /// own locks, a shard's per inode (`KernelReferenceTable`): lookups (no namespace
    /// lock) add to it, FORGET takes from it before any namespace lock, and what decides
    /// on a count reads it in one hold of the inode's shard's lock: an unlink's or rmdir's
    /// orphan or drop, a last close's, a rename's (the namespace lock shared, with the
    /// inode's lock, `changingNames`, `changingInodes`, `changingNamesOfARename`), and the
    /// drop of a forgotten inode (the same, in a frame of drops, `dropForgottenNow`; or in
    /// the frame of a change holding the lock alone). A lookup takes no inode lock, so an
    /// in-process caller's lookup racing an unlink of the same last name may add a
    /// reference to an inode the unlink drops (through the kernel the directory's
    /// `i_rwsem` keeps the two apart, and an unlink's target is always referenced, so it
    /// leaves an orphan).
    let kernelReferences = KernelReferenceTable()
    /// Handle numbers and the open directory handles (opendir, readdir and releasedir
    /// take no namespace lock; `VolumeHandles`: an atomic counter, and the directory
    /// handles in shards by directory).
    let handles = VolumeHandles()
    /// The inode locks of the changes that share the namespace lock (`changingNames`,
    /// `changingInodes`, a file change's frame, `journal`, a frame of drops,
    /// `dropForgottenNow`).
    let inodeLocks = InodeLocks()
    /// Taken by a rename across directories before the namespace lock, and held until its
    /// frame is written (`changingNamesOfARename`): its cycle check reads the parents of
    /// its new directory without their inode locks, and only such a rename changes them
    /// (the kernel's `s_vfs_rename_mutex`, which the kernel already holds around each).
    let renamesAcrossDirectories = PthreadLock()
    /// The cached regular files and the open file handles (`VolumeFileCache`).
    let fileCache = VolumeFileCache()
    /// The last reclaim after ENOSPC that found nothing (`afterReclaim`).
    let fruitlessReclaim = FruitlessReclaim()
    /// Unlinked files a refused change waited for the FORGET of in vain
    /// (`awaitForgetsOfUnlinkedFiles`): later refusals do not wait for them again.
    let forgetsWaitedFor = PthreadMutex<Set<UInt64>>([])
    /// Readers for the reads (no namespace lock) and the changes that share the lock.
    let readers: VolumeReaderPool
    /// Set when a file's change could not be journaled (`journal`): thrown by every later
    /// operation. Its own lock: file changes share the namespace lock.
    private let failureHolder = PthreadMutex<FSError?>(nil)
    /// Set with `failureHolder`'s failure: the reads, which take no namespace lock, look
    /// at it alone until a failure comes (no shared lock's cache line per request).
    private let journalFailed = Atomic<Bool>(false)
    var journalFailure: FSError? {
        journalFailed.load(ordering: .acquiring) ? failureHolder.withLock { $0 } : nil
    }
    /// The number the next new inode gets (an atomic: creates in different directories
    /// take numbers at once).
    let nextInode: Atomic<UInt64>
    /// Inodes in the image, orphans included: the last commit's count, plus the inodes
    /// created and less those dropped since (statfs), counted as their frames are written.
    private let inodesCounted: Atomic<UInt64>
    var inodeCount: UInt64 { inodesCounted.load(ordering: .relaxed) }
    /// Directories known to have no default ACL: every create asks of its parent, and a
    /// lookup of the xattr in the layered view was 1,300 instructions of a create's
    /// 21,000. A number goes when a default ACL is set on it (`setxattr`, the only way
    /// one comes to an existing directory, holding the directory's inode lock, which every
    /// create in it holds, so no create asks meanwhile); numbers are never given out
    /// twice in a mount, so a directory
    /// removed leaves only a stale number. Cleared at `maximumDirectoriesWithoutDefaultACL`.
    let directoriesWithoutDefaultACLHolder = PthreadMutex(Set<UInt64>())
    static let maximumDirectoriesWithoutDefaultACL = 1 << 16
    // Guarded by `lock` (changed only with it held alone):
    /// Idle commits the maintenance still owes (`commitIfChanged`).
    var settling = 0
    /// When the maintenance last closed a generation (`MonotonicClock`; the mount's start
    /// before the first): `VolumeCommitPolicy.maximumAgeSeconds` counts from it.
    var lastMaintenanceCommit = MonotonicClock.nanoseconds()
    /// Called when an operation leaves the open generation near the volume's limits
    /// (`TreeVolume.budget`): a mount's maintenance commits then, off the
    /// operations' path (`VolumeFileSystem.startMaintenance`). Its own lock: set when the
    /// maintenance starts and stops, read by operations after they let go of the
    /// namespace lock (`commitIfOverBudget`).
    private let nearingBudgetHandler = PthreadMutex<(@Sendable () -> Void)?>(nil)

    /// The namespace of `volume`; a volume without a root gets one (mode 0755, owned by the
    /// user running the daemon, as format 1's new images). Inodes a crash or an unmount
    /// left unlinked while open (orphan items) are dropped: nothing references them in a
    /// new mount. (Drops larger than a commit's budget carry on by themselves, under their
    /// dropping orphan items.)
    public init(volume: TreeVolume, memoryLimiter: MemoryLimiter,
                clock: @escaping @Sendable () -> Timestamp = Namespace.systemClock) throws(FSError) {
        self.volume = volume
        self.memoryLimiter = memoryLimiter
        self.clock = clock
        readers = VolumeReaderPool(volume: volume)
        nextInode = Atomic(max(2, volume.current.nextInode))
        inodesCounted = Atomic(volume.current.inodeCount)
        if volume.isReadOnly || volume.failure != nil {
            // Nothing is changed (read-only, or a full image served read-only): orphans
            // stay until a writable mount drops them.
            guard try volume.reader().inode(1) != nil else {
                throw .invalidArgument("'\(volume.storage.name)' holds no filesystem yet, and a read-only mount cannot create one")
            }
            return
        }
        for (number, orphan) in try volume.reader().orphans() where orphan.state != .dropping {
            try volume.perform([.orphan(inode: number, nil), .drop(inode: number)])
            inodesCounted.subtract(1, ordering: .relaxed)
        }
        if try volume.reader().inode(1) == nil {
            let now = clock().record
            try volume.perform([.attributes(inode: 1, InodeItem(
                type: Self.typeCode(.directory), permissions: 0o755, uid: UInt32(getuid()), gid: UInt32(getgid()),
                linkCount: 2, size: 0, rdev: 0, accessTime: now, modificationTime: now, changeTime: now,
                birthTime: now, parent: 1, nextIndex: 3))])
            inodesCounted.add(1, ordering: .relaxed)
        }
    }

    /// Copies, for tests and checks: the cached files, the open file handles, and the
    /// directories known to have no default ACL.
    var cachedFiles: [UInt64: VolumeCachedFile] { fileCache.all.files }
    var fileHandles: [UInt64: VolumeFileHandle] { fileCache.all.handles }
    var directoriesWithoutDefaultACL: Set<UInt64> { directoriesWithoutDefaultACLHolder.withLock { $0 } }

    // MARK: - Reading

    /// Lets go of the pool's idle readers (after a commit): a reader holds back the punch
    /// of what later commits free. One given back as a commit publishes is either stale,
    /// and not kept, or let go here (`VolumeReaderPool.give`).
    func dropIdleReaders() {
        readers.drain()
    }

    /// The inode's item; `.staleInode` when it has none (as format 1 answers an inode
    /// number it does not know).
    func item(_ number: UInt64, in reader: VolumeReader) throws(FSError) -> InodeItem {
        guard let item = try reader.inode(number) else { throw .staleInode }
        return item
    }

    /// A directory's item: `.notDirectory` for another kind.
    func directory(_ number: UInt64, in reader: VolumeReader) throws(FSError) -> InodeItem {
        let item = try item(number, in: reader)
        guard item.type == Self.typeCode(.directory) else { throw .notDirectory }
        return item
    }

    /// A directory names may be added to: removed ones are `.notFound`.
    func liveDirectory(_ number: UInt64, in reader: VolumeReader) throws(FSError) -> InodeItem {
        let item = try directory(number, in: reader)
        guard item.linkCount > 0 else { throw .notFound }
        return item
    }

    /// What stat shows. A regular file's size and st_blocks (512-byte units of image and
    /// RAM bytes, holes and fills excluded) come from its cached data, else from its
    /// extents in the layered view (a file with changes no commit holds is cached), read
    /// by `reader`. A cached file evicted while this read it (`VolumeCachedFile.evicted`:
    /// unloaded, it shows size 0) is clean, so its item and extents in the view say the
    /// same as its data did. Caller holds no
    /// inode lock (the file's lock is taken, `changingNames`); `sizes` stands for the
    /// cached data of a new file no one else can reach yet.
    func attributes(_ number: UInt64, _ item: InodeItem, _ reader: VolumeReader,
                    sizes: (size: UInt64, stored: UInt64)? = nil) throws(FSError) -> Attributes {
        guard let kind = FileKind(mode: UInt32(item.type) << 12) else {
            throw .damagedImage("inode \(number) has type \(item.type)")
        }
        var size = kind == .directory ? Inode.directorySize : item.size
        var stored: UInt64 = 0
        if kind == .regular {
            if let sizes {
                (size, stored) = sizes
            } else if let read = fileCache.file(number)?.sizesUnlessEvicted {
                (size, stored) = read
            } else {
                stored = try reader.view.storedBytes(number, size: item.size)
            }
        }
        return Attributes(inode: InodeNumber(number), generation: InodeTable.generation, kind: kind,
                          permissions: item.permissions & 0o7777, linkCount: item.linkCount, uid: item.uid,
                          gid: item.gid, rdev: item.rdev, size: size, blocks: stored / 512 + (stored % 512 == 0 ? 0 : 1),
                          accessTime: Timestamp(item.accessTime),
                          modificationTime: Timestamp(item.modificationTime), changeTime: Timestamp(item.changeTime),
                          birthTime: Timestamp(item.birthTime))
    }

    static func typeCode(_ kind: FileKind) -> UInt8 { UInt8(kind.modeBits >> 12) }

    // MARK: - Changing

    /// Runs `body` with a reader of its own and no namespace lock (docs/ARCHITECTURE.md,
    /// "Step 7, seventh part"): for the operations that change nothing the namespace or
    /// the volume hold (lookup, getattr, readlink, the directory listing calls, getxattr,
    /// listxattr, and the answers changes read after their frames; the kernel's lookup
    /// counts and the handles have their own locks). Nothing such a read sees needs the
    /// lock:
    ///
    /// - Its reader (`VolumeReaderPool.take`) holds every generation the open one was
    ///   among when it was taken, over a root whose blocks its epoch keeps from the punch;
    ///   a generation closed meanwhile only leaves out what was answered after the read
    ///   began (a change concurrent with it), and a commit publishing meanwhile only
    ///   retires a generation the reader still lays over its older root.
    /// - A frame's changes reach a generation's objects under their shards' locks, as
    ///   they do for the shared changes that ran beside reads before.
    /// - A cached file evicted while it is read is marked first
    ///   (`VolumeCachedFile.evicted`), and its clean state is the view's.
    /// - What decides on a kernel reference (an unlink's orphan or drop, `dropForgotten`)
    ///   reads the count under `kernelReferences`; a lookup finds only an inode with a
    ///   name, which no drop takes, except one whose last name an unlink removes at once,
    ///   which the kernel never asks (the directory's `i_rwsem`; `kernelReferences`).
    ///
    /// Before, reads shared the lock, and a writer waiting for it (a generation's close, a
    /// rename across directories, a frame of drops) held back every read that came after
    /// it until the reads before it were done: a stat behind a slow cold lookup waited
    /// for it. Fails once a file change failed to reach the journal (`journalFailure`).
    func reading<R>(_ body: (VolumeReader) throws(FSError) -> R) throws(FSError) -> R {
        if let journalFailure { throw journalFailure }
        let taken = try readers.take()
        defer { readers.give(taken) }
        return try body(taken.reader)
    }

    /// `reading` without a reader: for the calls on an open file's data or handle that
    /// change nothing (read, lseek, flush, the handle checks of fsync and fsyncdir), which
    /// reach the file through its handle: an open file is never evicted, and its data's
    /// own lock orders its reads with its changes (a write releases the blocks it
    /// replaces only holding that lock, and a read's reply is sent inside it). No
    /// namespace lock.
    func readingOpenFile<R>(_ body: () throws(FSError) -> R) throws(FSError) -> R {
        if let journalFailure { throw journalFailure }
        return try body()
    }

    /// Runs `body` with the namespace lock shared: for the changes that share it
    /// (`changingData`, `changingNames`, `changingInodes`), whose frames must stay in the
    /// generation they joined (a generation closes only with the lock held alone). Fails
    /// once a file change failed to reach the journal (`changingData` also fails the
    /// change during which that happened).
    func sharing<R>(_ body: () throws(FSError) -> R) throws(FSError) -> R {
        try lock.withReadLock { () throws(FSError) -> R in
            if let journalFailure { throw journalFailure }
            return try body()
        }
    }

    /// Fails the namespace: a file change could not be journaled (`journal`). The first
    /// failure is kept.
    func failJournal(_ failure: FSError) {
        failureHolder.withLock { if $0 == nil { $0 = failure } }
        journalFailed.store(true, ordering: .releasing)
    }

    /// Commits when the journal or the open generation reached the volume's limits
    /// (`TreeVolume.isOverBudget`), after an operation: the operations of a namespace
    /// perform with `commitsAtBudget: false`, since a commit closes the open generation,
    /// which must not happen while an operation sharing the lock is between its file's
    /// block calls and its frame. Caller holds no namespace lock: the close takes it alone
    /// for the close only (docs/ARCHITECTURE.md, "Step 7, eighth part"). The operation is
    /// done whatever the commit does: a failed commit fails the volume, and every later
    /// change throws it. Near the limits (`TreeVolume.BudgetUse.nearing`) it only wakes
    /// the mount's maintenance, which commits off the operations' path.
    func commitIfOverBudget() {
        // A failed or read-only volume commits nothing (each try would throw at once).
        guard volume.failure == nil, !volume.isReadOnly else { return }
        switch volume.budget {
        case .under: return
        case .nearing: return wakeForNearingBudget()
        case .reached: break
        }
        // Closed with the lock held alone, between changes; committed outside it, while
        // the changes go on in the next generation (as the maintenance commits). A
        // generation closed already (by another change over the budget, or by the
        // maintenance) is not closed again: its commit, by whichever caller takes the
        // volume's commit lock first, is what brings the journal back under its budget,
        // and this waits for it. The budget is read again under the lock: a commit that
        // ended while this waited for the lock leaves only a young generation open.
        if !volume.delta.hasClosedGeneration {
            lock.withWriteLock {
                guard volume.budget == .reached, !volume.delta.hasClosedGeneration else { return }
                _ = try? volume.closeOpenGeneration()
            }
        }
        _ = try? volume.commitClosed()
        // The idle pooled readers would hold back the commit's punch.
        dropIdleReaders()
    }

    /// `handler` is called (on the operation's thread, which must not wait for it) each
    /// time an operation leaves the open generation near the volume's limits
    /// (`TreeVolume.BudgetUse.nearing`).
    public func onNearingBudget(_ handler: (@Sendable () -> Void)?) {
        nearingBudgetHandler.withLock { $0 = handler }
    }

    func wakeForNearingBudget() {
        nearingBudgetHandler.withLock { $0 }?()
    }

    /// Runs `body` under the namespace lock held alone, after letting go of the files a
    /// commit made clean; then commits, when the journal or the open generation is over
    /// its budget, with the lock let go (`commitIfOverBudget`). Once a file change failed to reach the journal
    /// (`journalFailure`), it fails, and so does the operation during which that
    /// happened: its answer would claim a change the journal does not hold.
    func locked<R>(_ body: () throws(FSError) -> R) throws(FSError) -> R {
        let result = try lock.withWriteLock { () throws(FSError) -> R in
            if let journalFailure { throw journalFailure }
            evictCommittedFiles()
            let result = try body()
            if let journalFailure { throw journalFailure }
            return result
        }
        commitIfOverBudget()
        return result
    }

    /// Runs `body` under the namespace lock held alone with a reader of the current state;
    /// the changes it states are performed as one journal frame.
    func changing<R>(preparingJournal: Bool = true,
                     _ body: (VolumeReader, inout VolumeOperation) throws(FSError) -> R) throws(FSError) -> R {
        try changing(preparingJournal: preparingJournal, body) { (result, _) throws(FSError) -> R in result }
    }

    /// `changing`, then `after` with the result, under the same hold of the lock, once
    /// the frame is written: what must hold only for a change the journal has (a new
    /// inode's kernel reference, a handle on it) goes there. `preparingJournal: false`
    /// leaves out the journal's pages made writable before the lock, for an operation
    /// that seldom writes a frame (a close), which pays for that call every time.
    ///
    /// A change whose frame is refused for want of space on a nearly full image runs again
    /// after the reclaim's commits (`afterReclaim`), as a file's data change does. The
    /// eighteenth session's first version failed volumes on full images; the cause was
    /// commits that did not fit (docs/ARCHITECTURE.md, "Commits that fit a full image"),
    /// which file data's hold-back and `TreeVolume.admit` now prevent.
    func changing<R, S>(preparingJournal: Bool = true,
                        _ body: (VolumeReader, inout VolumeOperation) throws(FSError) -> R,
                        then after: (R, VolumeReader) throws(FSError) -> S) throws(FSError) -> S {
        if preparingJournal { volume.prepareJournalAppend() }
        return try locked { () throws(FSError) -> S in
            var refusedFrame = false
            func attempt() throws(FSError) -> S {
                let taken = try readers.take()
                defer { readers.give(taken) }
                let reader = taken.reader
                var operation = VolumeOperation()
                let result: R
                do throws(FSError) {
                    result = try body(reader, &operation)
                } catch {
                    restoreDroppedFiles(&operation)
                    throw error
                }
                do throws(FSError) {
                    try writeFrame(&operation, reader)
                } catch {
                    restoreDroppedFiles(&operation)
                    if case .noSpace = error { refusedFrame = true }
                    throw error
                }
                return try after(result, reader)
            }
            do throws(FSError) {
                return try attempt()
            } catch .noSpace where refusedFrame && volume.isNearlyFullNow {
                // Its frame refused on a nearly full image (its commit would not fit the
                // room left, `TreeVolume.admit`, or the journal had no room): it runs again
                // after the commits that give back what earlier operations freed, as a
                // file's data change does (an rm of a big file, then a new file: the create
                // waited for the maintenance's ticks). Not where the image has room: the
                // refusal then came from the disk under it, where commits fail.
                return try afterReclaim(attempt)
            }
        }
    }

    /// Writes an operation's changes as one frame; unless `dropsForgotten` is false, with
    /// the drops of the inodes forgotten since the last frame (`dropForgotten`, which needs
    /// the lock held alone). An operation that changed nothing writes nothing: it may have
    /// done what cannot be undone (an open's handle), and a frame of drops that failed
    /// would fail it. Drops whose frame failed wait for the next one. Caller holds the
    /// lock alone, or shared with the inode locks of what the frame changes
    /// (`changingNames`, `changingInodes`, `dropForgottenNow`).
    func writeFrame(_ operation: inout VolumeOperation, _ reader: VolumeReader, dropsForgotten: Bool = true) throws(FSError) {
        // The drops join the operation's own changes in place (a copy made here copied
        // every change of the frame whenever a drop came along).
        let dropped = !dropsForgotten || operation.changes.isEmpty ? [] : dropForgotten(reader, into: &operation)
        guard !operation.changes.isEmpty else { return }
        do throws(FSError) {
            try volume.perform(operation.changes, born: operation.bornNumbers, commitsAtBudget: false)
        } catch {
            kernelReferences.giveBack(dropped)
            restoreDroppedFiles(&operation)
            throw error
        }
        // The dropped files let go of their blocks now that the frame holds the drop, as a
        // journaled change lets go of them: a block one shared with another file stays
        // copied on that file's writes until a sync covers the drop (`releaseAll`'s
        // unshared marks). Freed with the operation instead, they went without the marks,
        // and a power cut that lost the drop's frame brought the file back showing the
        // other file's bytes written in place meanwhile (`VolumeInodeLifetimeTests`).
        for (_, file) in operation.droppedFiles { file.data.releaseAll() }
        operation.droppedFiles = []
        // A number a refused operation took is skipped, not counted.
        if operation.born != nil { inodesCounted.add(1, ordering: .relaxed) }
        var drops: UInt64 = 0
        for i in operation.changes.indices { if case .drop = operation.changes[i] { drops += 1 } }
        if drops > 0 { inodesCounted.subtract(drops, ordering: .relaxed) }
        noteJournaled(operation.changes)
    }

    /// Puts the cached files an operation's drops took out of the cache back, when the
    /// operation or its frame failed: their inodes are still in the image, and an
    /// operation run again (with the lock held alone, after ENOSPC) finds them.
    func restoreDroppedFiles(_ operation: inout VolumeOperation) {
        guard !operation.droppedFiles.isEmpty else { return }
        let restored = operation.droppedFiles
        operation.droppedFiles = []
        for (number, file) in restored {
            fileCache.changing(number) { cache in if cache.files[number] == nil { cache.files[number] = file } }
        }
    }

    /// Keeps the cached files' remembered items (`VolumeCachedFile.journaledItem`) equal to
    /// what the frame just written states of them. Caller holds the lock alone, or the
    /// inode locks of the inodes the frame states.
    private func noteJournaled(_ changes: [JournalChange]) {
        for change in changes {
            switch change {
            case .attributes(let inode, let item): fileCache.file(inode)?.journaledItem = item
            case .drop(let inode): fileCache.file(inode)?.journaledItem = nil
            default: continue
            }
        }
    }

    /// The changes that state `item`, an inode that just lost a name, a handle or a
    /// reference: its new attributes while a name is left; with only handles or the
    /// kernel's references left, its attributes under an orphan item, its data as it is
    /// (the kernel may open it again: a path looked up before a rename replaced it, which
    /// the open then names, or `/proc/PID/fd` of an `O_PATH` descriptor); with nothing
    /// left, its drop (and its orphan item's), which frees its data. Caller holds the lock
    /// alone, or shared with the inode's inode lock.
    ///
    /// (Until the twenty-eighth session a regular file that only the kernel referenced was
    /// emptied here, so that `rm` freed its space before the kernel's FORGET came: a
    /// reader that opened a file a `rename` was replacing read it empty, or as zeros up to
    /// the size it had stat'ed. docs/ARCHITECTURE.md, "An unlinked file keeps its data
    /// while the kernel references it".)
    func state(_ number: UInt64, _ item: InodeItem, hadOrphan: Bool, into operation: inout VolumeOperation) {
        let open = fileCache.changing(number) { cache in (cache.files[number]?.openCount ?? 0) > 0 }
        if item.linkCount > 0 {
            operation.changes.append(.attributes(inode: number, item))
        } else if kernelReferences.keepUnlinked(number) || open {
            operation.changes.append(.attributes(inode: number, item))
            if !hadOrphan { operation.changes.append(.orphan(inode: number, OrphanItem(state: .unlinkedWhileOpen))) }
        } else {
            if hadOrphan { operation.changes.append(.orphan(inode: number, nil)) }
            operation.changes.append(.drop(inode: number))
            kernelReferences.clearUnlinked(number)
            // Kept until the frame is written (`writeFrame`): letting go of the file
            // releases its blocks, which must not happen for a drop the journal lacks.
            let removed = fileCache.changing(number) { cache -> VolumeCachedFile? in
                fileCache.sweep.withLock { _ = $0.awaitingCommit.remove(number) }
                return cache.files.removeValue(forKey: number)
            }
            if let removed { operation.droppedFiles.append((number, removed)) }
        }
    }

    /// Sizes in 4 KiB blocks: total = the capacity, free = what the block space can still
    /// hand out. Inodes: those in the image (the commit slots count them), orphans
    /// included, of format 1's maximum.
    public func statfs() -> FileSystemStatistics {
        // Forgotten inodes waiting for a frame still count; they are gone for a client.
        dropForgottenNow()
        let blockSize = UInt64(BackingStore.blockSize)
        // Available is less than free where the disk under the image has less left.
        let (free, available) = (try? volume.fileBlocks())?.spaceCounts() ?? (0, 0)
        // The count as the frames written so far leave it; the slot through the volume's
        // publish lock.
        let used = inodeCount
        let capacityBytes = volume.current.capacityBytes
        let total = InodeTable.maximumInodeCount
        return FileSystemStatistics(blockSize: blockSize, totalBlocks: capacityBytes / blockSize,
                                    freeBlocks: free / blockSize, availableBlocks: available / blockSize, totalInodes: total,
                                    freeInodes: total > used ? total - used : 0,
                                    maximumNameLength: UInt64(FileName.maximumLength))
    }

    /// Hands the kernel one more reference to `number` (a lookup or readdirplus with no
    /// namespace lock, or a change holding it).
    func referenced(_ number: UInt64) { kernelReferences.reference(number) }
}

extension VolumeNamespace: FileSystemOperations {}
