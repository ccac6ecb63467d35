import OffloadCore

/// Every inode the filesystem or the kernel still knows, by number.
///
/// Numbers: allocated from a counter that only grows and is never reset, so a number is
/// never reused while the namespace lives and the kernel can never confuse an old inode
/// with a new one. With 2^64 numbers that cannot run out; `generation` is therefore the
/// same for every inode (`InodeTable.generation`) and only exists so that a later,
/// persistent namespace can bump it if it ever reuses numbers.
///
/// The number of inodes is limited (`maximumInodeCount`, ENOSPC past it) because each
/// one lives in RAM; statfs reports that limit as the inode total.
///
/// Locking: guarded by the namespace lock.
struct InodeTable {
    static let generation: UInt64 = 1
    static let maximumInodeCount: UInt64 = 1 << 32

    private var inodes: [InodeNumber: Inode] = [:]
    private var nextNumber = InodeNumber.root.rawValue + 1

    init(root: Inode) {
        precondition(root.number == .root && root.kind == .directory)
        inodes[.root] = root
    }

    var count: Int { inodes.count }

    /// A table rebuilt by recovery; numbers continue at `nextNumber`.
    init(restoring inodes: [InodeNumber: Inode], nextNumber: UInt64) {
        precondition(inodes[.root]?.kind == .directory, "a restored table needs its root")
        self.inodes = inodes
        self.nextNumber = max(nextNumber, (inodes.keys.max()?.rawValue ?? 1) + 1)
    }

    func contains(_ number: InodeNumber) -> Bool { inodes[number] != nil }

    /// Regular files that have no name and no handle but are kept by the kernel's
    /// references (a walk of the table, for a change refused for space; their sizes are
    /// not read: a file's lock comes before the namespace lock).
    func unlinkedFilesOnlyTheKernelReferences() -> [InodeNumber] {
        inodes.values.compactMap { inode in inode.hasOnlyKernelReferences && inode.regularFile != nil ? inode.number : nil }
    }

    /// The next number `allocate` would hand out (checkpoints store it).
    var nextInodeNumber: UInt64 { nextNumber }

    /// Every inode, for checkpoints (caller holds the namespace lock).
    var allNumbers: [InodeNumber] { Array(inodes.keys) }

    func existing(_ number: InodeNumber) -> Inode? { inodes[number] }

    /// The inode with this number; ESTALE-like when the kernel names one we do not know,
    /// which only happens if the kernel and the namespace disagree about lookup counts.
    func inode(_ number: InodeNumber) throws(FSError) -> Inode {
        guard let inode = inodes[number] else { throw .staleInode }
        return inode
    }

    /// The directory with this number: ENOTDIR when it is something else.
    func directory(_ number: InodeNumber) throws(FSError) -> (inode: Inode, directory: Directory) {
        let inode = try inode(number)
        guard let directory = inode.directory else { throw .notDirectory }
        return (inode, directory)
    }

    /// A directory that new entries may go into: ENOENT once it has been removed
    /// (Linux refuses to create in a deleted directory the same way).
    func liveDirectory(_ number: InodeNumber) throws(FSError) -> (inode: Inode, directory: Directory) {
        let found = try directory(number)
        guard found.inode.linkCount > 0 else { throw .notFound }
        return found
    }

    /// Makes and registers a new inode. Its lookup count starts at 0; the caller counts
    /// the reference it hands the kernel.
    mutating func allocate(kind: FileKind, permissions: UInt32, uid: UInt32, gid: UInt32,
                           rdev: UInt64, content: Inode.Content, now: Timestamp) throws(FSError) -> Inode {
        guard UInt64(inodes.count) < Self.maximumInodeCount else { throw .noSpace }
        let number = InodeNumber(nextNumber)
        nextNumber += 1
        let inode = Inode(number: number, generation: Self.generation, kind: kind,
                          permissions: permissions, uid: uid, gid: gid, rdev: rdev,
                          linkCount: kind == .directory ? 2 : 1, content: content, now: now)
        inodes[number] = inode
        return inode
    }

    /// Drops an inode nothing refers to any more. Returns the file data to free, which
    /// the caller frees after leaving the namespace lock (`StorageDisposal`: freeing a
    /// large file can take a while and must not stall other operations).
    mutating func removeIfUnused(_ inode: Inode) -> OffloadedFile? {
        guard inode.isUnreferenced, inode.number != .root else { return nil }
        inodes.removeValue(forKey: inode.number)
        return inode.regularFile?.data
    }

    /// Walks up from `start` to the root and fails with EINVAL if it meets `ancestor`:
    /// a directory must not move into itself or one of its descendants (rename(2)).
    func refuseCycle(moving ancestor: InodeNumber, into start: InodeNumber) throws(FSError) {
        var cursor = start
        // Bounded by the number of inodes: a longer walk means the tree is damaged.
        for _ in 0...inodes.count {
            if cursor == ancestor {
                throw .invalidArgument("cannot move a directory into itself or a descendant")
            }
            if cursor == .root { return }
            guard let parent = inodes[cursor]?.directory?.parent else {
                throw .io("directory \(cursor) has no parent directory")
            }
            cursor = parent
        }
        throw .io("directory parent chain does not reach the root")
    }
}

/// What to do with a file's storage once the namespace lock is released (freeing a
/// large file takes a while, and a file change takes the namespace lock itself).
enum StorageDisposal {
    /// The inode is gone and its drop is journaled: free everything, unobserved.
    case free(OffloadedFile)

    func run() {
        switch self {
        case .free(let file): file.releaseAll()
        }
    }
}
