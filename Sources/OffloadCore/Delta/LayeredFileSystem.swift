/// What a request reads: the delta's generations (newest first) over a committed
/// filesystem tree. A generation that mentions a key decides it; one that dropped the
/// object hides everything older of it; else the next generation, and last the tree.
///
/// A file with changes in the delta is held by the inode cache with its `OffloadedFile`
/// until the commit that writes them (docs/ARCHITECTURE.md, "The inode cache"), so a read
/// of its bytes needs the delta's file ranges only on a read-only volume, whose replayed
/// frames stay in the delta (`filePieces`).
public struct LayeredFileSystem {
    public let layers: [DeltaGeneration]
    public let tree: FileSystemTree

    /// Take `layers` from the delta before opening `tree` at the published root of
    /// commit `committedGeneration` (see `MetadataDelta`). Layers that commit already
    /// holds are passed over: a reader descheduled across two commits would otherwise
    /// lay an old generation's net state over a root that holds a newer one (a name
    /// unlinked since, and its dropped inode, would come back). Every generation newer
    /// than the root is in the list, since a generation retires only after its root is
    /// published.
    public init(layers: [DeltaGeneration], tree: FileSystemTree, committedGeneration: UInt64) {
        self.layers = layers.filter { $0.number > committedGeneration }
        self.tree = tree
    }

    /// The newest layer's say on `object`: `decide` returns a value to stop at (nil: this
    /// layer does not decide); a dropped object stops with nil.
    private func newest<T: Sendable>(_ object: UInt64, _ decide: (borrowing ObjectChanges) -> T??) -> T?? {
        for layer in layers {
            // nil: the layer has no changes of the object; .some(nil): it does not decide.
            let said = layer.withChanges(of: object) { (changes) -> T?? in
                if let decided = decide(changes) { return decided }
                return changes.cleared ? .some(nil) : nil
            }
            if case .some(.some(let decided)) = said { return decided }
        }
        return nil
    }

    /// The pieces of file `inode` of size `size` (its attributes' here): the tree's extents
    /// with the file ranges of the newer generations applied, oldest first, as the commit
    /// would write them. Holes are left out.
    public func filePieces(_ inode: UInt64, size: UInt64) throws(FSError) -> [FilePiece] {
        var ranges: [JournalChange] = []
        var fromTree = true
        for layer in layers {
            guard let changes = layer.changes(of: inode) else { continue }
            ranges.insert(contentsOf: changes.fileRanges, at: 0)
            if changes.cleared {
                fromTree = false
                break
            }
        }
        var committed: [FilePiece] = []
        var committedSize: UInt64 = 0
        if fromTree, let item = try tree.inode(inode) {
            committedSize = item.size
            for (offset, extent) in try tree.extents(inode, overlapping: 0..<UInt64.max) {
                committed.append(FilePiece(offset: offset, extent: extent.fileExtent))
            }
        }
        // Extent items lie inside the file's size (FORMAT.md): one past it is damage,
        // whether or not newer generations change the file (they would cut it to the size
        // and hide the damage from this load, not from fsck). Without them the file is
        // loaded as the tree has it, so never with bytes past its size here either (a frame
        // stating a size without its file range may have taken it below the tree's).
        let bound = ranges.isEmpty ? min(size, committedSize) : committedSize
        if let last = committed.last, last.offset + last.extent.size > bound {
            throw .damagedImage("inode \(inode): its extent at byte \(last.offset) ends past its size, \(bound)")
        }
        guard !ranges.isEmpty else { return committed }
        let file = ReplayedFile()
        file.apply(size: committedSize, range: 0..<committedSize, pieces: committed)
        for case .fileRange(_, let fileSize, let range, let pieces) in ranges {
            file.apply(size: fileSize, range: range, pieces: pieces)
        }
        if file.size > size { file.apply(size: size, range: size..<file.size, pieces: []) }
        return file.pieceList
    }

    /// The bytes file `inode` (of size `size`) stores in image and RAM pieces, as
    /// `filePieces` would count them: read from the tree's extent items' lengths alone
    /// when no newer generation changed the file's data (the common case of a stat or a
    /// READDIRPLUS entry), else from `filePieces`. The caller has the inode's item: an
    /// inode the tree does not hold has no extent items there either (numbers are never
    /// reused, and a drop removes every item), so the tree's item is not read again.
    public func storedBytes(_ inode: UInt64, size: UInt64) throws(FSError) -> UInt64 {
        if layers.contains(where: { layer in layer.withChanges(of: inode) { !$0.fileRanges.isEmpty || $0.cleared } ?? false }) {
            return try filePieces(inode, size: size).reduce(0) { $0 + $1.extent.storedBytes }
        }
        return try tree.storedBytes(inode)
    }

    public func inode(_ inode: UInt64) throws(FSError) -> InodeItem? {
        if let decided = newest(inode, { $0.attributes.map { .some($0) } }) { return decided }
        return try tree.inode(inode)
    }

    public func lookup(directory: UInt64, name: [UInt8]) throws(FSError) -> NamedEntry? {
        if let decided = newest(directory, { $0.names[NameKey(name)].map { $0.value } }) { return decided }
        return try tree.lookup(directory: directory, name: name)
    }

    /// Up to `limit` entries of `directory` from index `index` on, in index order: the
    /// tree's, without the names the delta changed, and the delta's.
    public func entries(directory: UInt64, from index: UInt64 = 3, limit: Int = .max) throws(FSError) -> [NamedEntry] {
        var overrides: [NameKey: DeltaValue<NamedEntry>] = [:]
        var treeHidden = false
        // Oldest first, so newer generations overwrite.
        for layer in layers.reversed() {
            guard let changes = layer.changes(of: directory) else { continue }
            if changes.cleared {
                treeHidden = true
                overrides = [:]
            }
            overrides.merge(changes.names) { $1 }
        }
        var merged = overrides.values.compactMap(\.value).filter { $0.index >= index }
        if !treeHidden {
            // Each override hides at most one of the tree's entries.
            let wanted = limit == .max ? .max : limit + overrides.count
            merged += try tree.entries(directory: directory, from: index, limit: wanted).filter { overrides[NameKey($0.name)] == nil }
        }
        return Array(merged.sorted { $0.index < $1.index }.prefix(limit))
    }

    public func xattr(_ inode: UInt64, name: [UInt8]) throws(FSError) -> [UInt8]? {
        if let decided = newest(inode, { $0.xattrs[NameKey(name)].map { $0.value } }) { return decided }
        return try tree.xattr(inode, name: name)
    }

    public func xattrNames(_ inode: UInt64) throws(FSError) -> [[UInt8]] {
        var overrides: [NameKey: DeltaValue<[UInt8]>] = [:]
        for layer in layers.reversed() {
            guard let changes = layer.changes(of: inode) else { continue }
            if changes.cleared { return [] }
            overrides.merge(changes.xattrs) { $1 }
        }
        let names = try tree.xattrNames(inode).filter { overrides[NameKey($0)] == nil }
        return names + overrides.filter { $0.value != .removed }.keys.sorted(by: NameKey.byteOrder).map(\.bytes)
    }

    public func symlinkTarget(_ inode: UInt64) throws(FSError) -> [UInt8]? {
        if let decided = newest(inode, { $0.symlinkTarget.map { .some($0) } }) { return decided }
        return try tree.symlinkTarget(inode)
    }

    public func orphan(_ inode: UInt64) throws(FSError) -> OrphanItem? {
        for layer in layers {
            if let change = layer.orphanChange(of: inode) { return change.value }
        }
        return try tree.orphan(inode)
    }

    /// Every orphan, in inode order (mount frees them; work follows their number).
    public func orphans() throws(FSError) -> [(inode: UInt64, item: OrphanItem)] {
        var overrides: [UInt64: DeltaValue<OrphanItem>] = [:]
        for layer in layers.reversed() { overrides.merge(layer.allOrphanChanges()) { $1 } }
        var all = try tree.orphans().filter { overrides[$0.inode] == nil }
        all += overrides.compactMap { inode, change in change.value.map { (inode, $0) } }
        return all.sorted { $0.inode < $1.inode }
    }
}
