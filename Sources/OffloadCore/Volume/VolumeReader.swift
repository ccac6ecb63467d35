/// A reader of a `TreeVolume` at one commit: the delta's generations over that commit's
/// filesystem tree (`LayeredFileSystem`). While it lives, no block that commit's trees
/// use is punched or handed out again (a reader epoch: docs/ARCHITECTURE.md, "Reuse is
/// counted in commits"): commits go on, and their frees wait until the oldest reader is
/// gone. Before readers had epochs, a reader kept across commits read a punched root.
/// The generations it took are the delta's own objects: the one open when it was taken
/// keeps changing until it closes, and the reader sees those changes (a request's reader
/// lives for the request; a snapshot is a different thing, for later).
public final class VolumeReader {
    public let view: LayeredFileSystem
    /// The commit whose root the reader reads.
    public let generation: UInt64
    let epochs: ReaderEpochs

    init(view: LayeredFileSystem, generation: UInt64, epochs: ReaderEpochs) {
        self.view = view
        self.generation = generation
        self.epochs = epochs
    }

    deinit { epochs.leave(generation) }

    public func inode(_ inode: UInt64) throws(FSError) -> InodeItem? { try view.inode(inode) }
    public func lookup(directory: UInt64, name: [UInt8]) throws(FSError) -> NamedEntry? {
        try view.lookup(directory: directory, name: name)
    }
    public func entries(directory: UInt64, from index: UInt64 = 3, limit: Int = .max) throws(FSError) -> [NamedEntry] {
        try view.entries(directory: directory, from: index, limit: limit)
    }
    public func xattr(_ inode: UInt64, name: [UInt8]) throws(FSError) -> [UInt8]? { try view.xattr(inode, name: name) }
    public func xattrNames(_ inode: UInt64) throws(FSError) -> [[UInt8]] { try view.xattrNames(inode) }
    public func symlinkTarget(_ inode: UInt64) throws(FSError) -> [UInt8]? { try view.symlinkTarget(inode) }
    public func orphans() throws(FSError) -> [(inode: UInt64, item: OrphanItem)] { try view.orphans() }
    public func orphan(_ inode: UInt64) throws(FSError) -> OrphanItem? { try view.orphan(inode) }
}

/// The commits live readers read, counted: the oldest bounds which frees may be punched.
final class ReaderEpochs: @unchecked Sendable {
    // @unchecked: `readers` is reached only through its lock.
    private let readers = PthreadMutex([UInt64: Int]())

    func enter(_ generation: UInt64) { readers.withLock { $0[generation, default: 0] += 1 } }

    func leave(_ generation: UInt64) {
        readers.withLock { readers in
            guard let count = readers[generation] else { preconditionFailure("a reader left generation \(generation) twice") }
            readers[generation] = count == 1 ? nil : count - 1
        }
    }

    /// The oldest commit a live reader reads, or nil.
    var oldest: UInt64? { readers.withLock { $0.keys.min() } }
}
