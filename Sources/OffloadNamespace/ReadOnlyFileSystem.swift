import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// A namespace served read-only (`-o ro`): every operation that would change the tree,
/// a file or an attribute is refused with `.readOnly` (EROFS), and the rest go through.
///
/// The kernel already refuses writes on a read-only mount before they reach the daemon;
/// this is the second line, so that nothing (a future caller, a kernel path that skips
/// the check) can reach a store whose image is mapped `PROT_READ` and would fault.
/// Lookups, opens and forgets still change reference counts in memory, which is state of
/// the session, not of the filesystem.
public final class ReadOnlyFileSystem: FileSystemOperations {
    public let base: any FileSystemOperations

    public init(_ base: any FileSystemOperations) { self.base = base }

    // MARK: Refused

    public func setattr(inode: InodeNumber, changes: AttributeChanges, context: RequestContext) throws(FSError) -> Attributes {
        throw .readOnly
    }
    public func mknod(parent: InodeNumber, name: FileName, mode: UInt32, rdev: UInt64, context: RequestContext) throws(FSError) -> Attributes {
        throw .readOnly
    }
    public func mkdir(parent: InodeNumber, name: FileName, mode: UInt32, context: RequestContext) throws(FSError) -> Attributes {
        throw .readOnly
    }
    public func unlink(parent: InodeNumber, name: FileName) throws(FSError) { throw .readOnly }
    public func rmdir(parent: InodeNumber, name: FileName) throws(FSError) { throw .readOnly }
    public func symlink(parent: InodeNumber, name: FileName, target: [UInt8], context: RequestContext) throws(FSError) -> Attributes {
        throw .readOnly
    }
    public func rename(parent: InodeNumber, name: FileName, newParent: InodeNumber, newName: FileName,
                       flags: RenameFlags, context: RequestContext) throws(FSError) {
        throw .readOnly
    }
    public func link(inode: InodeNumber, newParent: InodeNumber, newName: FileName) throws(FSError) -> Attributes {
        throw .readOnly
    }
    public func create(parent: InodeNumber, name: FileName, mode: UInt32, flags: Int32,
                       context: RequestContext) throws(FSError) -> (Attributes, FileHandle) {
        throw .readOnly
    }
    public func write(inode: InodeNumber, handle: FileHandle, offset: UInt64, data: UnsafeRawBufferPointer) throws(FSError) -> Int {
        throw .readOnly
    }
    public func fallocate(inode: InodeNumber, handle: FileHandle, offset: UInt64, length: UInt64,
                          mode: AllocationMode) throws(FSError) {
        throw .readOnly
    }
    public func copyFileRange(from source: InodeNumber, sourceHandle: FileHandle, sourceOffset: UInt64,
                              to destination: InodeNumber, destinationHandle: FileHandle, destinationOffset: UInt64,
                              length: UInt64) throws(FSError) -> UInt64 {
        throw .readOnly
    }
    public func setxattr(inode: InodeNumber, name: [UInt8], value: [UInt8], mode: XattrSetMode,
                         context: RequestContext) throws(FSError) {
        throw .readOnly
    }
    public func removexattr(inode: InodeNumber, name: [UInt8]) throws(FSError) { throw .readOnly }

    /// Opening for writing, or with O_TRUNC, is refused; reading opens go through.
    public func open(inode: InodeNumber, flags: Int32, context: RequestContext) throws(FSError) -> FileHandle {
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { throw .readOnly }
        return try base.open(inode: inode, flags: flags, context: context)
    }

    // MARK: Passed through

    public func lookup(parent: InodeNumber, name: FileName) throws(FSError) -> Attributes {
        try base.lookup(parent: parent, name: name)
    }
    public func forget(inode: InodeNumber, lookups: UInt64) { base.forget(inode: inode, lookups: lookups) }
    public func getattr(inode: InodeNumber) throws(FSError) -> Attributes { try base.getattr(inode: inode) }
    public func readlink(inode: InodeNumber) throws(FSError) -> [UInt8] { try base.readlink(inode: inode) }
    public func read(inode: InodeNumber, handle: FileHandle, offset: UInt64, count: Int) throws(FSError) -> [UInt8] {
        try base.read(inode: inode, handle: handle, offset: offset, count: count)
    }
    public func read<R>(inode: InodeNumber, handle: FileHandle, offset: UInt64, count: Int,
                        _ body: ([ReadRegion]) -> R) throws(FSError) -> R {
        try base.read(inode: inode, handle: handle, offset: offset, count: count, body)
    }
    public func flush(inode: InodeNumber, handle: FileHandle) throws(FSError) { try base.flush(inode: inode, handle: handle) }
    public func release(inode: InodeNumber, handle: FileHandle) { base.release(inode: inode, handle: handle) }
    /// Nothing was written, so there is nothing to make durable.
    public func fsync(inode: InodeNumber, handle: FileHandle?, dataOnly: Bool) throws(FSError) {}
    public func lseek(inode: InodeNumber, handle: FileHandle, offset: UInt64, target: SeekTarget) throws(FSError) -> UInt64 {
        try base.lseek(inode: inode, handle: handle, offset: offset, target: target)
    }
    public func opendir(inode: InodeNumber) throws(FSError) -> FileHandle { try base.opendir(inode: inode) }
    public func readdir(inode: InodeNumber, handle: FileHandle, offset: UInt64, limit: Int) throws(FSError) -> [DirectoryEntry] {
        try base.readdir(inode: inode, handle: handle, offset: offset, limit: limit)
    }
    public func readdirplus(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                            limit: Int) throws(FSError) -> [(entry: DirectoryEntry, attributes: Attributes?)] {
        try base.readdirplus(inode: inode, handle: handle, offset: offset, limit: limit)
    }
    public func releasedir(inode: InodeNumber, handle: FileHandle) { base.releasedir(inode: inode, handle: handle) }
    public func fsyncdir(inode: InodeNumber, handle: FileHandle, dataOnly: Bool) throws(FSError) {}
    public func statfs() -> FileSystemStatistics { base.statfs() }
    public func getxattr(inode: InodeNumber, name: [UInt8]) throws(FSError) -> [UInt8] {
        try base.getxattr(inode: inode, name: name)
    }
    public func listxattr(inode: InodeNumber) throws(FSError) -> [[UInt8]] { try base.listxattr(inode: inode) }
}
