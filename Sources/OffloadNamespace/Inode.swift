import OffloadCore

/// The data of one regular file, shared by every handle open on it.
///
/// It is `Sendable` so that reads and writes run OUTSIDE the namespace lock: a handle
/// lookup takes the lock for a moment, then the I/O runs under `OffloadedFile`'s own
/// lock only, so I/O on different files runs in parallel.
final class RegularFile: Sendable {
    let data: OffloadedFile
    /// Serialises O_APPEND writes so that "find EOF, write there" is atomic between
    /// appenders (POSIX requires it). Writes at explicit offsets never take it. Shared
    /// with other files (`AppendLocks`), chosen by this object's address, which stays the
    /// same while anyone holds it.
    var appendLock: PthreadLock {
        AppendLocks.lock(for: UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())))
    }

    init(data: OffloadedFile) { self.data = data }
}

/// One inode: the metadata `stat` shows plus what the inode holds.
///
/// Locking: every `var` here is guarded by the namespace lock (`Namespace.state`); an
/// `Inode` object never leaves the lock's region (Swift's region checking enforces it:
/// the class is not `Sendable`). What must be used outside the lock is copied out as an
/// `AttributeSnapshot` or, for file data, the `Sendable` `RegularFile`.
///
/// Lifetime: an inode stays in the table while any of `linkCount` (names; for a
/// directory 2 + subdirectories, 0 once removed), `lookupCount` (references the kernel
/// holds) or `openCount` (open file and directory handles) is non-zero. When all three
/// reach zero it is removed and its storage freed (`InodeTable.removeIfUnused`).
final class Inode {
    /// What the inode holds; fixed at creation because the kind never changes.
    enum Content {
        case regular(RegularFile)
        case directory(Directory)
        case symlink(target: [UInt8])
        /// FIFOs, sockets and device nodes: metadata only, the kernel does their I/O.
        case special
    }

    let number: InodeNumber
    let generation: UInt64
    let kind: FileKind
    let rdev: UInt64
    let birthTime: Timestamp
    let content: Content

    var permissions: UInt32
    var uid: UInt32
    var gid: UInt32
    var linkCount: UInt32
    var lookupCount: UInt64 = 0
    var openCount: UInt64 = 0
    var accessTime: Timestamp
    var modificationTime: Timestamp
    var changeTime: Timestamp
    var xattrs = ExtendedAttributes()

    init(number: InodeNumber, generation: UInt64, kind: FileKind, permissions: UInt32,
         uid: UInt32, gid: UInt32, rdev: UInt64, linkCount: UInt32, content: Content,
         now: Timestamp) {
        self.number = number
        self.generation = generation
        self.kind = kind
        self.permissions = permissions & 0o7777
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.linkCount = linkCount
        self.content = content
        self.birthTime = now
        self.accessTime = now
        self.modificationTime = now
        self.changeTime = now
    }

    var regularFile: RegularFile? {
        if case .regular(let file) = content { return file }
        return nil
    }

    var directory: Directory? {
        if case .directory(let directory) = content { return directory }
        return nil
    }

    /// True when nothing refers to the inode any more: no name, no kernel reference and
    /// no open handle. The root is never unreferenced (its link count never drops).
    var isUnreferenced: Bool { linkCount == 0 && lookupCount == 0 && openCount == 0 }

    /// No name and no open handle: only the kernel's lookups keep the inode (which the
    /// kernel may still open: a path looked up before its unlink, `/proc/PID/fd`).
    var hasOnlyKernelReferences: Bool { linkCount == 0 && openCount == 0 && lookupCount > 0 }

    /// The contents changed: POSIX marks mtime and ctime.
    func markModified(_ now: Timestamp) {
        modificationTime = now
        changeTime = now
    }

    /// Only the metadata changed (chmod, chown, link, unlink of this inode, xattrs).
    func markChanged(_ now: Timestamp) { changeTime = now }

    /// The attributes as of now. For regular files the size and block count come from
    /// the file data, which has its own lock: `AttributeSnapshot.resolved()` reads them
    /// after the namespace lock is released so a long write cannot stall the namespace.
    func snapshot() -> AttributeSnapshot {
        var size: UInt64 = 0
        var file: OffloadedFile?
        switch content {
        case .regular(let regular): file = regular.data
        case .directory: size = Inode.directorySize
        case .symlink(let target): size = UInt64(target.count)
        case .special: size = 0
        }
        let attributes = Attributes(
            inode: number, generation: generation, kind: kind, permissions: permissions,
            linkCount: linkCount, uid: uid, gid: gid, rdev: rdev, size: size, blocks: 0,
            accessTime: accessTime, modificationTime: modificationTime,
            changeTime: changeTime, birthTime: birthTime)
        return AttributeSnapshot(attributes: attributes, file: file)
    }

    /// Directories report one block's worth of size like ext4 does; their entries live in
    /// RAM, not in the image, so they occupy no blocks (like tmpfs).
    static let directorySize: UInt64 = 4096
}

/// Attributes copied out under the namespace lock, completed outside it.
struct AttributeSnapshot: Sendable {
    var attributes: Attributes
    /// The file whose size and allocation still have to be read, for regular files.
    var file: OffloadedFile?

    /// Fills in size and st_blocks (512-byte units really occupied, holes and fills
    /// excluded, rounded up) from the file data.
    func resolved() -> Attributes {
        guard let file else { return attributes }
        var result = attributes
        result.size = file.size
        let allocated = file.allocatedByteCount
        result.blocks = allocated / 512 + (allocated % 512 == 0 ? 0 : 1)
        return result
    }
}
