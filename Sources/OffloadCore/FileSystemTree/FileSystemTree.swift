/// Format 2's filesystem tree seen as a filesystem: the inodes, names, xattrs, symlink
/// targets, extents and orphans of docs/ARCHITECTURE.md's "Keys and items", read and
/// changed item by item over a `CopyOnWriteTree` (docs/FORMAT.md, "Version 2 (in
/// progress): items").
///
/// Changes come as `JournalChange`s (`apply`), the same self-contained records the
/// journal holds, so the commit that writes a generation's changes into the tree and a
/// test model speak one language. Every change is all or nothing: it is checked against
/// the tree before anything changes (a refused change throws and changes nothing), and its
/// item changes run as one `groupedChange`, so a failure in the middle fails the tree
/// rather than leaving half of it for a commit.
///
/// Image extents hold one reference on every block their bytes touch (as format 1's
/// files do); `apply` records the references its extent items gained and lost in
/// `referenceChanges`, which the commit hands to the block tree.
///
/// Not thread-safe, like the tree under it: the commit is the one user of a tree being
/// changed; a reader opens its own `FileSystemTree` over a tree object at a committed root.
public final class FileSystemTree {
    public let tree: CopyOnWriteTree
    public let hashes: ItemHashes
    /// Block references gained and lost by the changes applied since the caller last took
    /// them (`takeReferenceChanges`).
    public internal(set) var referenceChanges = ExtentReferenceChanges()
    /// Inode items the changes applied since the caller last took them added (an
    /// attributes change of an inode the tree lacked) less those they removed (drops), and
    /// the highest inode number they stated attributes of (0: none); the commit keeps the
    /// slot's inode count and next inode number with them (`takeInodeChanges`).
    public internal(set) var inodeChanges = InodeChanges()
    /// Set by a commit while it applies a generation: once more than `leaves` nodes were
    /// changed since the last spill, after a change, the changed leaves are written ahead
    /// (`CopyOnWriteTree.spillLeaves(beyond:)`), stamped with `generation`, the commit's. Bounds
    /// what a commit holds whatever its changes touched (docs/ARCHITECTURE.md, "A
    /// commit's changed leaves written ahead").
    public var spillingAhead: (generation: UInt64, leaves: Int)?
    /// Calls of `links(of:)`, each a scan of all of an inode's back references (a check
    /// reads it to see that fsck scans an inode of many links once, not once a link).
    public internal(set) var linkScans = 0

    /// See `inodeChanges`.
    public struct InodeChanges: Equatable, Sendable {
        public var added = 0
        public var removed = 0
        public var highest: UInt64 = 0

        public init() {}
    }

    public init(tree: CopyOnWriteTree, hashes: ItemHashes) {
        self.tree = tree
        self.hashes = hashes
    }

    /// Writes the changed leaves ahead when `spillingAhead` says so (between changes).
    func spillIfOver() throws(FSError) {
        guard let spillingAhead else { return }
        try tree.spillLeaves(beyond: spillingAhead.leaves, generation: spillingAhead.generation)
    }

    /// The reference changes recorded so far; the record starts over empty.
    public func takeReferenceChanges() -> ExtentReferenceChanges {
        defer { referenceChanges = ExtentReferenceChanges() }
        return referenceChanges
    }

    /// The inode changes counted so far; the count starts over.
    public func takeInodeChanges() -> InodeChanges {
        defer { inodeChanges = InodeChanges() }
        return inodeChanges
    }

    /// Gives up every change since the last commit: the tree goes back to its committed
    /// root (`CopyOnWriteTree.abandon`) and the references and inode counts recorded
    /// meanwhile go too.
    public func abandonChanges() {
        tree.abandon()
        referenceChanges = ExtentReferenceChanges()
        inodeChanges = InodeChanges()
    }

    // MARK: - Keys

    static func key(_ object: UInt64, _ kind: ItemKind, _ offset: UInt64) -> TreeKey {
        TreeKey(object: object, kind: kind.rawValue, offset: offset)
    }

    static func inodeKey(_ inode: UInt64) -> TreeKey { key(inode, .inode, 0) }
    static func indexKey(_ directory: UInt64, _ index: UInt64) -> TreeKey { key(directory, .index, index) }
    static func orphanKey(_ inode: UInt64) -> TreeKey { key(ReservedObject.orphans, .orphan, inode) }
    func nameKey(_ directory: UInt64, _ name: [UInt8]) -> TreeKey { Self.key(directory, .name, hashes.name(name)) }
    func backReferenceKey(_ inode: UInt64, _ directory: UInt64, _ name: [UInt8]) -> TreeKey {
        Self.key(inode, .backReference, hashes.backReference(directory: directory, name: name))
    }

    // MARK: - Decoding what the tree holds

    /// The item under `key` decoded as `V`; damage when it does not decode.
    func item<V: TreeItemValue>(_ key: TreeKey, as type: V.Type = V.self) throws(FSError) -> V? {
        try tree.withValue(key) { (raw) throws(FSError) -> V? in
            guard let raw else { return nil }
            return try Self.decode(key, raw)
        }
    }

    static func decode<V: TreeItemValue>(_ key: TreeKey, _ raw: UnsafeRawBufferPointer) throws(FSError) -> V {
        do {
            return try V.decode(raw)
        } catch {
            throw .damagedImage("filesystem tree item \(key): \(error.description)")
        }
    }

    /// Visits the items of `object` of `kind` with offsets in `offsets`, in order; `body`
    /// returns false to stop.
    func scan(_ object: UInt64, _ kind: ItemKind, _ offsets: ClosedRange<UInt64> = 0...UInt64.max,
              _ body: (UInt64, UnsafeRawBufferPointer) throws(FSError) -> Bool) throws(FSError) {
        try tree.scan(from: Self.key(object, kind, offsets.lowerBound), through: Self.key(object, kind, offsets.upperBound)) {
            (key, value) throws(FSError) in try body(key.offset, value)
        }
    }

    // MARK: - Reads

    /// The inode's attributes, or nil when it has none.
    public func inode(_ inode: UInt64) throws(FSError) -> InodeItem? {
        try item(Self.inodeKey(inode))
    }

    /// The entry named `name` in `directory`, or nil.
    public func lookup(directory: UInt64, name: [UInt8]) throws(FSError) -> NamedEntry? {
        let bucket: NameItem? = try item(nameKey(directory, name))
        return bucket?.entries.first { $0.name == name }
    }

    /// Up to `limit` entries of `directory` from entry index `index` on, in index order
    /// (readdir: an entry's index is its cookie, and indexes only grow).
    public func entries(directory: UInt64, from index: UInt64 = 3, limit: Int = .max) throws(FSError) -> [NamedEntry] {
        var found: [NamedEntry] = []
        guard limit > 0 else { return found }
        try scan(directory, .index, max(index, 3)...UInt64.max) { (index, raw) throws(FSError) in
            let item: IndexItem = try Self.decode(Self.indexKey(directory, index), raw)
            found.append(NamedEntry(name: item.name, child: item.child, type: item.type, index: index))
            return found.count < limit
        }
        return found
    }

    /// Every link of `inode` (its back references), in key order.
    public func links(of inode: UInt64) throws(FSError) -> [Link] {
        linkScans += 1
        var found: [Link] = []
        try scan(inode, .backReference) { (hash, raw) throws(FSError) in
            let item: BackReferenceItem = try Self.decode(Self.key(inode, .backReference, hash), raw)
            found.append(contentsOf: item.links)
            return true
        }
        return found
    }

    /// The inode's orphan item, or nil.
    public func orphan(_ inode: UInt64) throws(FSError) -> OrphanItem? {
        try item(Self.orphanKey(inode))
    }

    /// What an orphan item or a drop names must be an inode: a reserved object (the
    /// orphan list itself) dropped would take every orphan item with it.
    static func requireInode(_ number: UInt64) throws(FSError) {
        guard ItemCoding.isInode(number) else {
            throw .damagedImage("an orphan or a drop names \(number), which is not an inode number")
        }
    }

    /// Up to `limit` orphans from inode `first` on, in inode order (mount frees them).
    public func orphans(from first: UInt64 = 0, limit: Int = .max) throws(FSError) -> [(inode: UInt64, item: OrphanItem)] {
        var found: [(inode: UInt64, item: OrphanItem)] = []
        guard limit > 0 else { return found }
        try scan(ReservedObject.orphans, .orphan, first...UInt64.max) { (inode, raw) throws(FSError) in
            try Self.requireInode(inode)
            found.append((inode, try Self.decode(Self.orphanKey(inode), raw)))
            return found.count < limit
        }
        return found
    }

    /// Whether any item of `inode` remains (an inode dropped has none).
    public func hasItems(_ inode: UInt64) throws(FSError) -> Bool {
        var any = false
        try tree.scan(from: Self.key(inode, .inode, 0), through: TreeKey(object: inode, kind: .max, offset: .max)) {
            (_, _) throws(FSError) in
            any = true
            return false
        }
        return any
    }
}
