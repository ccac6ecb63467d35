#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import OffloadCore
import Synchronization

/// The filesystem's tree in RAM: inodes, directories, links, attributes and xattrs, with
/// every regular file's bytes in an `OffloadedFile` on the shared `BackingStore`.
///
/// ## Locking
/// One lock, `state` (a `PthreadMutex`), guards the inode table, every directory,
/// every inode's metadata and the handle table. It is held for short, bounded work only: never across
/// file data I/O. Reads, writes, truncates, fallocate and copy_file_range look up the
/// `RegularFile` under the lock, release it, do the I/O under the file's own lock, and
/// take the namespace lock again briefly to update timestamps. No `OffloadedFile` lock
/// is ever taken while the namespace lock is held (sizes for attributes are read after
/// it is released, see `AttributeSnapshot`), so the two kinds of lock cannot deadlock and
/// a long write to one file never stalls lookups, creates or I/O on other files.
///
/// ## Inode lifetime (the kernel contract)
/// lookup, mknod, mkdir, symlink, link, create and each readdirplus entry give the kernel
/// one reference (`lookupCount`); forget gives them back. Open handles count in
/// `openCount`. An inode without names (unlinked, or a removed directory) stays in the
/// table, fully usable through its handles (read, write, fstat, ftruncate), until both
/// counts are 0; then it is removed and its storage freed with `releaseAll()`, outside
/// the lock. A regular file with neither names nor handles keeps its data while the
/// kernel references it: the kernel may open it again. Inode numbers are never reused
/// (see `InodeTable`).
///
/// ## Timestamps
/// As POSIX says: data changes mark mtime+ctime of the file; metadata changes (chmod,
/// chown, link count, xattrs, rename of the inode) mark its ctime; creating, removing or
/// renaming entries marks the directory's mtime+ctime. Reads do NOT update atime (like a
/// `noatime` mount): an atime write per read would take the namespace lock on the hot
/// read path for a field almost nothing uses. atime changes only through setattr.
///
/// ## What the kernel does instead of us
/// Permission checks (mounted with `default_permissions`, and POSIX ACLs, which the
/// kernel reads from the `system.posix_acl_*` xattrs kept here), sticky-directory deletion
/// rules, symlink resolution (so ELOOP from path walks), stripping the
/// set-group-ID bit from new files of callers outside the group (`vfs_prepare_mode`),
/// clearing set-id bits on write and truncate (it sends the mode change as a setattr),
/// and, with the writeback cache, O_APPEND positioning. With ACLs the kernel leaves us
/// the umask and default ACLs of new inodes, and keeping mode and access ACL in step
/// (`Inode+ACL.swift`).
public final class Namespace: FileSystemOperations {
    /// EMLINK past this many names for a file or subdirectories (+2) for a directory.
    public static let maximumLinkCount: UInt32 = 65000
    /// PATH_MAX - 1: longer symlink targets are ENAMETOOLONG.
    public static let maximumSymlinkTargetLength = 4095

    /// The wall clock, CLOCK_REALTIME.
    public static let systemClock: @Sendable () -> Timestamp = {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Timestamp(seconds: Int64(now.tv_sec), nanoseconds: Int64(now.tv_nsec))
    }

    let store: BackingStore
    let memoryLimiter: MemoryLimiter
    let clock: @Sendable () -> Timestamp
    let state: PthreadMutex<NamespaceState>
    /// FORGETs that dropped an inode and are freeing its data (`forget`), for
    /// `afterPendingForgets`.
    let forgetsFreeing = Atomic<Int>(0)

    /// An empty filesystem: a root directory with mode 0755, owned by the user running
    /// the daemon (so a user mount is writable by that user under default_permissions).
    public convenience init(store: BackingStore, memoryLimiter: MemoryLimiter,
                            clock: @escaping @Sendable () -> Timestamp = Namespace.systemClock) {
        let root = Inode(number: .root, generation: InodeTable.generation, kind: .directory,
                         permissions: 0o755, uid: UInt32(getuid()), gid: UInt32(getgid()),
                         rdev: 0, linkCount: 2, content: .directory(Directory(parent: .root)),
                         now: clock())
        self.init(store: store, memoryLimiter: memoryLimiter, clock: clock, table: InodeTable(root: root))
    }

    init(store: BackingStore, memoryLimiter: MemoryLimiter,
         clock: @escaping @Sendable () -> Timestamp, table: sending InodeTable) {
        self.store = store
        self.memoryLimiter = memoryLimiter
        self.clock = clock
        state = PthreadMutex(NamespaceState(table: table))
        // Weak: the state holds this closure.
        let makeFileJournal: @Sendable (InodeNumber) -> FileJournal = { [weak lock = state] number in
            FileJournal(inode: number, state: lock, clock: clock)
        }
        state.withLock { state in
            state.makeFileJournal = makeFileJournal
            for number in state.table.allNumbers {
                if let inode = state.table.existing(number) { state.observe(inode) }
            }
        }
    }

    // MARK: Names

    public func lookup(parent: InodeNumber, name: FileName) throws(FSError) -> Attributes {
        try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            let (_, directory) = try state.table.directory(parent)
            guard let entry = directory.entry(named: name) else { throw .notFound }
            let inode = try state.table.inode(entry.inode)
            inode.lookupCount += 1
            return inode.snapshot()
        }.resolved()
    }

    public func forget(inode number: InodeNumber, lookups: UInt64) {
        let freed = state.withLock { state -> StorageDisposal? in
            // The kernel never forgets more than it looked up; if it names an inode we
            // do not know or forgets too much, clamping is the only safe answer.
            guard let inode = try? state.table.inode(number) else { return nil }
            inode.lookupCount -= min(lookups, inode.lookupCount)
            guard inode.isUnreferenced else { return nil }
            var records: [MetadataRecord] = []
            defer { state.logUnreserved(records) }
            let freed = state.dropIfUnused(inode, into: &records)
            if freed != nil { forgetsFreeing.add(1, ordering: .relaxed) }
            return freed
        }
        if let freed {
            freed.run()
            forgetsFreeing.subtract(1, ordering: .relaxed)
        }
    }

    public func getattr(inode number: InodeNumber) throws(FSError) -> Attributes {
        try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            try state.table.inode(number).snapshot()
        }.resolved()
    }

    public func readlink(inode number: InodeNumber) throws(FSError) -> [UInt8] {
        try state.withLock { (state) throws(FSError) -> [UInt8] in
            guard case .symlink(let target) = try state.table.inode(number).content else {
                throw .invalidArgument("not a symbolic link")
            }
            return target
        }
    }

    // MARK: Whole filesystem

    /// Sizes in 4 KiB blocks from the store: total = capacity, free = what allocations can
    /// still get (blocks in use by data and metadata, and the metadata reserve, are not
    /// free). Inodes: `InodeTable.maximumInodeCount` total.
    public func statfs() -> FileSystemStatistics {
        let statistics = store.statistics
        let blockSize = UInt64(BackingStore.blockSize)
        let capacityBytes = UInt64(statistics.capacityBytes)
        // What allocations can still get: quarantined blocks count (they come back at
        // the next sync), the metadata reserve does not.
        let freeBytes = store.availableBytes
        let inodeCount = UInt64(state.withLock { $0.table.count })
        let totalInodes = InodeTable.maximumInodeCount
        return FileSystemStatistics(
            blockSize: blockSize, totalBlocks: capacityBytes / blockSize,
            freeBlocks: freeBytes / blockSize, availableBlocks: freeBytes / blockSize,
            totalInodes: totalInodes,
            freeInodes: totalInodes > inodeCount ? totalInodes - inodeCount : 0,
            maximumNameLength: UInt64(FileName.maximumLength))
    }
}

/// Everything the namespace lock guards.
struct NamespaceState {
    var table: InodeTable
    var handles = HandleTable()
    /// Where changes are recorded; nil for a namespace that is not persisted (tests).
    var journal: NamespaceJournal?
    /// Makes the observer that marks a regular file's times and journals its changes.
    var makeFileJournal: (@Sendable (InodeNumber) -> FileJournal)?
    /// Journal bytes the operation under way reserved (`reserveJournal`); its `log` uses
    /// them. A failed operation's leftover is given back by the next reservation.
    var journalCredit = 0

    /// Records one operation's results as one journal frame (atomic on replay), in the
    /// room the operation reserved.
    mutating func log(_ records: [MetadataRecord]) {
        journal?.record(records, reserved: journalCredit)
        journalCredit = 0
    }

    /// Records the frame of an operation that cannot fail and so reserved nothing (forget,
    /// release): a reservation left by an earlier operation that failed is not its own.
    mutating func logUnreserved(_ records: [MetadataRecord]) {
        journal?.release(journalCredit)
        journalCredit = 0
        journal?.record(records)
    }

    /// Reserves journal room for the frame of the operation under way, before it changes
    /// anything: the records of `inodes` as they will be (their current size plus
    /// `extra`, which covers what the operation adds: names, entries, an xattr value).
    /// `.noSpace` when the image cannot give the journal that room; the operation then
    /// fails with ENOSPC having changed nothing (`NamespaceJournal.reserve`).
    mutating func reserveJournal(for inodes: [Inode], extra: Int) throws(FSError) {
        guard let journal else { return }
        journal.release(journalCredit)
        journalCredit = 0
        let bytes = FrameHeader.size + inodes.reduce(extra) { $0 + $1.recordBound }
        try journal.reserve(bytes)
        journalCredit = bytes
    }

    /// `InodeTable.removeIfUnused`, plus the record that the inode is gone, which must
    /// reach the journal before its storage is freed (the caller frees it afterwards,
    /// with `StorageDisposal.run`). A regular file that only the kernel still references
    /// (no name, no handle) keeps its data: the kernel may open it again (a path looked
    /// up before a rename replaced it, `/proc/PID/fd`). A write refused for space waits
    /// for the FORGETs of such files first (`afterPendingForgets`).
    mutating func dropIfUnused(_ inode: Inode, into records: inout [MetadataRecord]) -> StorageDisposal? {
        guard inode.isUnreferenced, inode.number != .root else {
            if table.contains(inode.number) { records.append(inode.record) }
            return nil
        }
        records.append(.drop(inode: inode.number.rawValue))
        return table.removeIfUnused(inode).map(StorageDisposal.free)
    }

    /// From now on a regular file's data changes mark its mtime and ctime and are
    /// journaled (`FileJournal`). Takes the file's write lock under the namespace lock,
    /// which is safe only because nobody else can reach the file yet (it is being
    /// created, or the namespace is being built before it serves).
    func observe(_ inode: Inode) {
        if let makeFileJournal, let file = inode.regularFile {
            file.data.attach(makeFileJournal(inode.number))
        }
    }
}
