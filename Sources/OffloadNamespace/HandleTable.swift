import OffloadCore

/// What an open, create or opendir handed out.
struct OpenHandle {
    enum Kind {
        /// `writable`: opened O_WRONLY or O_RDWR. `append`: opened O_APPEND.
        case file(RegularFile, writable: Bool, append: Bool)
        case directory
    }

    let inode: InodeNumber
    let kind: Kind
}

/// The open handles, by number.
///
/// Handle numbers come from a counter that only grows, so a stale handle number can
/// never name a newer handle. Each handle counts in its inode's `openCount`, which keeps
/// an unlinked inode (and its data) alive until the last handle is released.
///
/// Locking: guarded by the namespace lock.
struct HandleTable {
    private var handles: [FileHandle: OpenHandle] = [:]
    private var nextHandle: UInt64 = 1

    var count: Int { handles.count }

    mutating func insert(_ handle: OpenHandle) -> FileHandle {
        let number = FileHandle(nextHandle)
        nextHandle += 1
        handles[number] = handle
        return number
    }

    /// The handle, checked to be one we gave out for this inode (EBADF otherwise).
    func handle(_ number: FileHandle, inode: InodeNumber) throws(FSError) -> OpenHandle {
        guard let handle = handles[number], handle.inode == inode else { throw .badHandle }
        return handle
    }

    /// The file behind a file handle, with its open mode.
    func file(_ number: FileHandle, inode: InodeNumber) throws(FSError)
        -> (file: RegularFile, writable: Bool, append: Bool) {
        guard case .file(let file, let writable, let append) = try handle(number, inode: inode).kind else {
            throw .badHandle
        }
        return (file, writable, append)
    }

    /// Checks that a directory handle is one we gave out for this inode.
    func requireDirectory(_ number: FileHandle, inode: InodeNumber) throws(FSError) {
        guard case .directory = try handle(number, inode: inode).kind else { throw .badHandle }
    }

    mutating func remove(_ number: FileHandle, inode: InodeNumber) -> OpenHandle? {
        guard let handle = handles[number], handle.inode == inode else { return nil }
        handles.removeValue(forKey: number)
        return handle
    }
}
