import OffloadCore

/// The contract between the namespace and whatever serves it (the FUSE bridge, tests).
///
/// One method per filesystem operation, in the kernel's terms, so that FuseBridge's
/// handlers are thin: decode the request, call one method, encode the answer. Every
/// method either returns its result or throws an `FSError`; the bridge maps that error to
/// errno in one place. Methods are called concurrently from many FUSE worker threads:
/// implementations do their own locking.
///
/// Lookup counts (the kernel contract): every successful `lookup`, `mknod`, `mkdir`,
/// `symlink`, `link` and `create` hands the kernel one reference to the returned inode;
/// `forget(inode:lookups:)` gives `lookups` of them back. An inode whose link count is 0
/// lives on, with its data, while the kernel still references it or a handle is open on
/// it (the kernel may open it again: a path looked up before it was unlinked or replaced,
/// `/proc/PID/fd`); both are freed once both are gone.
public protocol FileSystemOperations: AnyObject, Sendable {
    // MARK: Names
    func lookup(parent: InodeNumber, name: FileName) throws(FSError) -> Attributes
    func forget(inode: InodeNumber, lookups: UInt64)
    func getattr(inode: InodeNumber) throws(FSError) -> Attributes
    func setattr(inode: InodeNumber, changes: AttributeChanges, context: RequestContext) throws(FSError) -> Attributes
    func readlink(inode: InodeNumber) throws(FSError) -> [UInt8]
    /// `mode` carries the S_IFMT type bits and the permission bits as the caller asked;
    /// the namespace limits them by the parent's default ACL or the context's umask.
    func mknod(parent: InodeNumber, name: FileName, mode: UInt32, rdev: UInt64, context: RequestContext) throws(FSError) -> Attributes
    func mkdir(parent: InodeNumber, name: FileName, mode: UInt32, context: RequestContext) throws(FSError) -> Attributes
    func unlink(parent: InodeNumber, name: FileName) throws(FSError)
    func rmdir(parent: InodeNumber, name: FileName) throws(FSError)
    func symlink(parent: InodeNumber, name: FileName, target: [UInt8], context: RequestContext) throws(FSError) -> Attributes
    /// `context` owns the whiteout RENAME_WHITEOUT leaves (format 2; format 1 refuses the
    /// flag, EINVAL).
    func rename(parent: InodeNumber, name: FileName, newParent: InodeNumber, newName: FileName, flags: RenameFlags,
                context: RequestContext) throws(FSError)
    func link(inode: InodeNumber, newParent: InodeNumber, newName: FileName) throws(FSError) -> Attributes

    // MARK: Files
    /// `flags` are the open(2) flags (O_ACCMODE, O_TRUNC, O_APPEND, ...). O_TRUNC takes
    /// away the set-id bits `context` may not keep (`SetIDRules`).
    func open(inode: InodeNumber, flags: Int32, context: RequestContext) throws(FSError) -> FileHandle
    func create(parent: InodeNumber, name: FileName, mode: UInt32, flags: Int32, context: RequestContext) throws(FSError) -> (Attributes, FileHandle)
    /// Returns up to `count` bytes; fewer only at end of file.
    func read(inode: InodeNumber, handle: FileHandle, offset: UInt64, count: Int) throws(FSError) -> [UInt8]
    /// The same bytes as `read`, without copying them: calls `body` exactly once (unless
    /// it throws first, for a bad handle or argument) with the pieces that make up the
    /// bytes, in order. Image pieces point into the mapping and are valid only until
    /// `body` returns; the file cannot change meanwhile (writers wait), so keep `body`
    /// short and answer the request inside it.
    func read<R>(inode: InodeNumber, handle: FileHandle, offset: UInt64, count: Int,
                 _ body: ([ReadRegion]) -> R) throws(FSError) -> R
    /// Writes all of `data` at `offset` and returns its length.
    func write(inode: InodeNumber, handle: FileHandle, offset: UInt64, data: UnsafeRawBufferPointer) throws(FSError) -> Int
    func flush(inode: InodeNumber, handle: FileHandle) throws(FSError)
    func release(inode: InodeNumber, handle: FileHandle)
    func fsync(inode: InodeNumber, handle: FileHandle?, dataOnly: Bool) throws(FSError)
    func fallocate(inode: InodeNumber, handle: FileHandle, offset: UInt64, length: UInt64, mode: AllocationMode) throws(FSError)
    func lseek(inode: InodeNumber, handle: FileHandle, offset: UInt64, target: SeekTarget) throws(FSError) -> UInt64
    /// Shares the source's image ranges with the destination instead of copying bytes;
    /// returns the number of bytes copied (fewer than `length` only at the source's EOF).
    func copyFileRange(from source: InodeNumber, sourceHandle: FileHandle, sourceOffset: UInt64,
                       to destination: InodeNumber, destinationHandle: FileHandle, destinationOffset: UInt64,
                       length: UInt64) throws(FSError) -> UInt64

    // MARK: Directories
    func opendir(inode: InodeNumber) throws(FSError) -> FileHandle
    /// Entries after the cookie `offset` (0 = from the start, "." and ".." included),
    /// at most `limit` of them. Entries removed during a listing are not returned twice
    /// and entries that stay are not skipped.
    func readdir(inode: InodeNumber, handle: FileHandle, offset: UInt64, limit: Int) throws(FSError) -> [DirectoryEntry]
    /// readdir for READDIRPLUS: each entry other than "." and ".." comes with its
    /// attributes and counts as one lookup of that inode (the kernel will forget it).
    /// The caller calls `forget(inode:lookups: 1)` for every such entry it could not
    /// pass on to the kernel (reply buffer full).
    func readdirplus(inode: InodeNumber, handle: FileHandle, offset: UInt64, limit: Int) throws(FSError) -> [(entry: DirectoryEntry, attributes: Attributes?)]
    func releasedir(inode: InodeNumber, handle: FileHandle)
    func fsyncdir(inode: InodeNumber, handle: FileHandle, dataOnly: Bool) throws(FSError)

    // MARK: Whole filesystem
    func statfs() -> FileSystemStatistics

    // MARK: Extended attributes
    /// `context`: an access ACL takes S_ISGID away from a caller who may not keep it
    /// (`SetIDRules`); the kernel forgets the attributes it cached after the request.
    func setxattr(inode: InodeNumber, name: [UInt8], value: [UInt8], mode: XattrSetMode,
                  context: RequestContext) throws(FSError)
    func getxattr(inode: InodeNumber, name: [UInt8]) throws(FSError) -> [UInt8]
    /// Names, each without its NUL terminator.
    func listxattr(inode: InodeNumber) throws(FSError) -> [[UInt8]]
    func removexattr(inode: InodeNumber, name: [UInt8]) throws(FSError)
}

extension FileSystemOperations {
    /// An open by a caller who keeps set-id bits (in-process callers and tests).
    public func open(inode: InodeNumber, flags: Int32) throws(FSError) -> FileHandle {
        try open(inode: inode, flags: flags, context: .root)
    }

    /// A rename by root (in-process callers and tests).
    public func rename(parent: InodeNumber, name: FileName, newParent: InodeNumber, newName: FileName,
                       flags: RenameFlags) throws(FSError) {
        try rename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags, context: .root)
    }

    /// A setxattr by a caller who keeps set-id bits (in-process callers and tests).
    public func setxattr(inode: InodeNumber, name: [UInt8], value: [UInt8], mode: XattrSetMode) throws(FSError) {
        try setxattr(inode: inode, name: name, value: value, mode: mode, context: .root)
    }
}
