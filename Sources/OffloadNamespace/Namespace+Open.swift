#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import OffloadCore

// Handles on regular files: open, create, flush, release, fsync.
//
// Kernel contract: every open/create is matched by exactly one release, after the last
// flush. A handle keeps its inode, and so an unlinked file's data, alive. The kernel
// never sends FUSE_OPEN for FIFOs, sockets or devices (it does their I/O itself), and
// opens directories with opendir.

extension NamespaceState {
    /// Opens a handle on `inode`. Access modes are recorded, not checked: the kernel
    /// checked permission. Reads are allowed through O_WRONLY handles because with the
    /// writeback cache the kernel reads pages through whatever handle it has.
    mutating func openHandle(on inode: Inode, flags: Int32) throws(FSError) -> (FileHandle, RegularFile) {
        switch inode.content {
        case .regular(let file):
            let writable = flags & O_ACCMODE != O_RDONLY
            let append = flags & O_APPEND != 0
            inode.openCount += 1
            let handle = handles.insert(OpenHandle(
                inode: inode.number, kind: .file(file, writable: writable, append: append)))
            return (handle, file)
        case .directory: throw .isDirectory
        // open(O_NOFOLLOW) of a symlink: the kernel only gets here if it did not follow.
        case .symlink: throw .symlinkLoop
        case .special: throw .notSupported
        }
    }

    /// create: a new regular file, or, when the name exists and O_EXCL is not set, the
    /// existing file opened (the kernel only sends CREATE for a name it believed absent,
    /// but another request may have made it meanwhile; open(2) then opens that file).
    /// Returns whether the file existed, since only then does O_TRUNC have work to do.
    mutating func create(parent: InodeNumber, name: FileName, mode: UInt32, flags: Int32,
                         context: RequestContext, now: Timestamp,
                         makeFile: () -> RegularFile) throws(FSError)
        -> (snapshot: AttributeSnapshot, handle: FileHandle, file: RegularFile, existed: Bool) {
        let (_, directory) = try table.liveDirectory(parent)
        if let entry = directory.entry(named: name) {
            guard flags & O_EXCL == 0 else { throw .exists }
            let inode = try table.inode(entry.inode)
            let (handle, file) = try openHandle(on: inode, flags: flags)
            inode.lookupCount += 1
            return (inode.snapshot(), handle, file, true)
        }
        let inode = try makeNode(parent: parent, name: name, kind: .regular, permissions: mode,
                                 rdev: 0, context: context, now: now) { .regular(makeFile()) }
        let (handle, file) = try openHandle(on: inode, flags: flags)
        return (inode.snapshot(), handle, file, false)
    }

    /// Drops a handle; returns the storage to free when that was the last thing keeping an
    /// unlinked inode (one the kernel still references keeps its data).
    mutating func release(inode number: InodeNumber, handle: FileHandle) -> StorageDisposal? {
        guard handles.remove(handle, inode: number) != nil,
              let inode = try? table.inode(number) else { return nil }
        precondition(inode.openCount > 0, "handle released on an inode with no open handles")
        inode.openCount -= 1
        guard inode.isUnreferenced else { return nil }
        var records: [MetadataRecord] = []
        defer { logUnreserved(records) }
        return dropIfUnused(inode, into: &records)
    }
}

extension Namespace {
    /// O_TRUNC truncates here (the kernel passes it when FUSE_CAP_ATOMIC_O_TRUNC is on),
    /// taking away the set-id bits the caller may not keep.
    public func open(inode: InodeNumber, flags: Int32, context: RequestContext) throws(FSError) -> FileHandle {
        let (handle, file) = try state.withLock { (state) throws(FSError) -> (FileHandle, RegularFile) in
            try state.openHandle(on: state.table.inode(inode), flags: flags)
        }
        if flags & O_TRUNC != 0 {
            do throws(FSError) {
                _ = try truncateOnOpen(inode: inode, file: file, context: context)
            } catch {
                release(inode: inode, handle: handle)
                throw error
            }
        }
        return handle
    }

    public func create(parent: InodeNumber, name: FileName, mode: UInt32, flags: Int32,
                       context: RequestContext) throws(FSError) -> (Attributes, FileHandle) {
        let created = try state.withLock { (state) throws(FSError) in
            try state.create(parent: parent, name: name, mode: mode, flags: flags,
                             context: context, now: clock(), makeFile: makeRegularFile)
        }
        if created.existed && flags & O_TRUNC != 0 {
            let inode = created.snapshot.attributes.inode
            do throws(FSError) {
                return (try truncateOnOpen(inode: inode, file: created.file, context: context), created.handle)
            } catch {
                // The kernel gets no entry: give back the handle and its lookup.
                release(inode: inode, handle: created.handle)
                forget(inode: inode, lookups: 1)
                throw error
            }
        }
        return (created.snapshot.resolved(), created.handle)
    }

    /// open(2) with O_TRUNC marks mtime and ctime even if the file was already empty
    /// (a truncation that emptied it marked them with its frame, `FileJournal`), and takes
    /// away the set-id bits `context` may not keep (`SetIDRules`: the kernel does not).
    /// The inode cannot have gone: the handle just opened keeps it.
    private func truncateOnOpen(inode: InodeNumber, file: RegularFile, context: RequestContext) throws(FSError) -> Attributes {
        let truncated = try file.data.truncate()
        return try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            let opened = try state.table.inode(inode)
            let dropped = opened.permissions & SetIDRules.bits == 0 ? 0
                : SetIDRules.droppedByTruncatingOpen(permissions: opened.permissions, fileGID: opened.gid, caller: context)
            if !truncated || dropped != 0 {
                try state.reserveJournal(for: [opened], extra: 0)
                if !truncated { opened.markModified(clock()) }
                if dropped != 0 {
                    opened.permissions &= ~dropped
                    opened.markChanged(clock())
                }
                state.log([opened.record])
            }
            return opened.snapshot()
        }.resolved()
    }

    public func flush(inode: InodeNumber, handle: FileHandle) throws(FSError) {
        try state.withLock { (state) throws(FSError) in
            _ = try state.handles.handle(handle, inode: inode)
        }
    }

    public func release(inode: InodeNumber, handle: FileHandle) {
        let freed = state.withLock { state in state.release(inode: inode, handle: handle) }
        freed?.run()
    }

    /// Every change is in the journal the moment it is answered; fsync makes the image
    /// durable (data and journal, one fdatasync), which covers this file and everything
    /// before it. fdatasync is the same call: the journal holds the metadata needed to
    /// reach the data, which fdatasync(2) must make durable too.
    public func fsync(inode: InodeNumber, handle: FileHandle?, dataOnly: Bool) throws(FSError) {
        let journal = try state.withLock { (state) throws(FSError) -> NamespaceJournal? in
            _ = try state.table.inode(inode)
            if let handle { _ = try state.handles.handle(handle, inode: inode) }
            return state.journal
        }
        try journal?.sync()
    }
}
