/// Format 2's image as a whole, below the namespace: the two commit slots (blocks 0 and
/// 1), the block space (block tree and allocator) and the filesystem tree over the image's
/// blocks, and the delta of changes since the last commit (docs/ARCHITECTURE.md, "Metadata
/// at scale", step 4a).
///
/// Operations `perform` their changes into the delta; `commit` makes the oldest closed
/// generation durable (`TreeVolume+Commit.swift`); `open` starts at the current commit
/// slot and reads nothing else: the cost of opening does not depend on the tree's size.
/// The journal (so that an operation is durable before its commit) is step 4c; until
/// then a change is durable once the commit holding it returns.
///
/// Not thread-safe yet: one caller at a time (the request path's locks are step 7).
public final class TreeVolume {
    public static let filesystemTreeID: UInt32 = 1
    public static let blockTreeID: UInt32 = 2
    /// Blocks 0 and 1 are the commit slots; everything else is the block space's.
    public static let firstSpaceBlock: UInt64 = 2

    public let storage: any ImageStorage
    public let space: BlockSpace
    let filesystemPages: BlockSpacePages
    /// The commit's working copy of the filesystem tree (readers open their own at the
    /// published root).
    public let filesystem: FileSystemTree
    public let delta: MetadataDelta
    /// The last durable commit.
    public internal(set) var current: CommitSlot
    /// Set by a commit that failed half-way; every later operation and commit throws it
    /// (the image keeps its last durable commit; remounting starts from there).
    public internal(set) var failure: FSError?

    private init(storage: any ImageStorage, slot: CommitSlot) throws(FSError) {
        self.storage = storage
        current = slot
        let endBlock = slot.capacityBytes >> BackingStore.blockShift
        guard endBlock > Self.firstSpaceBlock, endBlock <= BlockReferenceTree.pendingFreeBase else {
            throw .damagedImage("a capacity of \(slot.capacityBytes) bytes in commit \(slot.generation)")
        }
        space = try BlockSpace(io: ImageStoragePageIO(storage: storage), imageID: slot.imageID, blockTreeID: Self.blockTreeID,
                               root: slot.blockTree, firstBlock: Self.firstSpaceBlock, endBlock: endBlock)
        filesystemPages = space.pages(forTree: Self.filesystemTreeID)
        filesystem = FileSystemTree(
            tree: try CopyOnWriteTree(pages: filesystemPages, imageID: slot.imageID, treeID: Self.filesystemTreeID,
                                      root: slot.filesystemTree),
            hashes: ItemHashes(siphash: slot.nameHashKey))
        delta = MetadataDelta(committedGeneration: slot.generation)
    }

    /// Writes a new, empty format 2 image of `capacityBytes` on `storage` (both slots: the
    /// first commit, and a zeroed other slot, so that nothing of an earlier image there
    /// counts) and opens it.
    public static func format(_ storage: any ImageStorage, capacityBytes: UInt64, imageID: UInt64,
                              nameHashKey: SipHash24) throws(FSError) -> TreeVolume {
        guard capacityBytes >> BackingStore.blockShift > firstSpaceBlock else {
            throw .invalidArgument("a capacity of \(capacityBytes) bytes leaves no room after the commit slots")
        }
        guard imageID != 0 else { throw .invalidArgument("image id 0") }
        if storage.length < capacityBytes { try storage.setLength(capacityBytes) }
        try [UInt8](repeating: 0, count: BackingStore.blockSize).withUnsafeBytes { raw in
            Result { () throws(FSError) in try storage.write(raw, at: 0) }
        }.get()
        let first = CommitSlot(imageID: imageID, generation: 1, cleanlyUnmounted: true, capacityIsSet: true,
                               capacityBytes: capacityBytes, unmountError: 0, nameHashKey: nameHashKey,
                               filesystemTree: nil, blockTree: nil, journal: LogSegment(start: 0, length: 0),
                               journalSequence: 0, nextInode: 2, inodeCount: 0, usedBlocks: 0)
        try CommitSlots.write(first, to: storage)
        return try open(storage)
    }

    /// Opens the image at its current commit: the slots and the two roots, nothing more.
    public static func open(_ storage: any ImageStorage) throws(FSError) -> TreeVolume {
        try TreeVolume(storage: storage, slot: try CommitSlots.read(storage).current)
    }

    /// Runs one operation: joins the open generation, records `changes`, leaves.
    public func perform(_ changes: [JournalChange]) throws(FSError) {
        if let failure { throw failure }
        let ticket = delta.join()
        defer { delta.leave(ticket) }
        try delta.record(changes, in: ticket)
    }

    /// What a request reads: the delta's generations over a tree at the last durable root.
    /// Single-threaded for now: the reader's tree object is opened here, over the same
    /// page store.
    public func reader() throws(FSError) -> LayeredFileSystem {
        let layers = delta.layers()
        let tree = try CopyOnWriteTree(pages: filesystemPages, imageID: current.imageID, treeID: Self.filesystemTreeID,
                                       root: current.filesystemTree)
        return LayeredFileSystem(layers: layers, tree: FileSystemTree(tree: tree, hashes: filesystem.hashes),
                                 committedGeneration: current.generation)
    }
}
