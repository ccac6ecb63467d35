extension FileSystemTree {
    /// Writes a quiet generation's net state into the tree's items (the commit's second
    /// step; the tree's own `commit` then writes the nodes): each item once, however often
    /// it changed within the generation.
    ///
    /// Order: first every name the generation removed or replaced is unlinked from the
    /// tree (taking its child's back reference while the child still has it), then
    /// attributes, xattrs, targets and file ranges (in the order they were written), new
    /// names, the orphan list, and last the inodes it dropped: their attributes at once,
    /// their other items within `dropBudget` items in all, the rest left to later commits
    /// (`continueDrops`) with an orphan item in the `.dropping` state. Reads the tree for
    /// what the generation's names replace; applies nothing twice.
    ///
    /// A throw leaves part of the generation in the tree's working copy: the caller
    /// gives it up (`abandonChanges`) and keeps the generation.
    ///
    /// `placeMemory` writes the bytes of a RAM piece longer than an inline extent into
    /// newly allocated image blocks and returns the image extents holding them, in order
    /// (the commit's; without it such a piece is refused, `.invalidArgument`).
    /// Returns the items it removed for drops (what is left of `dropBudget` is for
    /// `continueDrops`).
    ///
    /// `progress` hears how far it got, every `stride` units (a commit of a whole tree,
    /// the upgrade's, reports through it): in `.applying`, the names of the first pass and
    /// the objects of the second; in `.linking`, the names linked.
    @discardableResult
    public func apply(_ generation: DeltaGeneration, dropBudget: Int = FileSystemTree.dropBudget,
                      progress: CommitProgress? = nil,
                      placeMemory: (([UInt8]) throws(FSError) -> [Extent])? = nil) throws(FSError) -> Int {
        let objects = generation.allChanges()
        var visited = 0, units = 0
        if progress != nil { units = objects.reduce(objects.count) { $0 + $1.changes.names.count } }
        func visit() {
            if let progress, progress.isDue(visited) { progress.report(visited, units) }
            visited += 1
        }
        // 1. Names removed or replaced, by what the tree holds under them.
        var linksToMake: [(directory: UInt64, entry: NamedEntry)] = []
        for (directory, changes) in objects {
            for name in changes.names.keys.sorted(by: NameKey.byteOrder) {
                visit()
                let wanted = changes.names[name]!.value
                let held = try lookup(directory: directory, name: name.bytes)
                if let held, held != wanted { try apply(.unlink(directory: directory, held)) }
                if let wanted, wanted != held { linksToMake.append((directory, wanted)) }
            }
        }
        // 2. Everything else the generation states of the inodes it did not drop.
        for (inode, changes) in objects {
            visit()
            guard !changes.cleared else { continue }
            if let attributes = changes.attributes { try apply(.attributes(inode: inode, attributes)) }
            for name in changes.xattrs.keys.sorted(by: NameKey.byteOrder) {
                switch changes.xattrs[name]! {
                case .set(let value):
                    try apply(.setXattr(inode: inode, name: name.bytes, value: value))
                case .removed:
                    if try xattr(inode, name: name.bytes) != nil { try apply(.removeXattr(inode: inode, name: name.bytes)) }
                }
            }
            if let target = changes.symlinkTarget { try apply(.symlinkTarget(inode: inode, target)) }
            for range in changes.fileRanges { try apply(Self.placing(range, placeMemory)) }
        }
        progress?.began(.linking)
        for (linked, (directory, entry)) in linksToMake.enumerated() {
            if let progress, progress.isDue(linked) { progress.report(linked, linksToMake.count) }
            try apply(.link(directory: directory, entry))
        }
        for (inode, change) in generation.allOrphanChanges().sorted(by: { $0.key < $1.key }) {
            try apply(.orphan(inode: inode, change.value))
        }
        // 3. Inodes dropped, last: a drop's own orphan item decides over the generation's.
        var removed = 0
        for (inode, changes) in objects where changes.cleared {
            removed += try drop(inode, budget: dropBudget - removed)
        }
        return removed
    }

    /// `change` with its RAM pieces longer than an inline extent placed in the image.
    static func placing(_ change: JournalChange, _ placeMemory: (([UInt8]) throws(FSError) -> [Extent])?) throws(FSError) -> JournalChange {
        guard case .fileRange(let inode, let size, let range, let pieces) = change, let placeMemory else { return change }
        var placed: [FilePiece] = []
        for piece in pieces {
            guard case .inMemory(let bytes) = piece.extent, bytes.count > ExtentItem.inlineLimit else {
                placed.append(piece)
                continue
            }
            var offset = piece.offset
            for extent in try placeMemory(bytes) {
                placed.append(FilePiece(offset: offset, extent: extent))
                offset += extent.size
            }
            precondition(offset == piece.offset + UInt64(bytes.count), "placed extents must hold the piece's bytes exactly")
        }
        return .fileRange(inode: inode, size: size, range: range, pieces: placed)
    }

    /// Items a commit removes for drops (about 20 ms of tree work): a file of millions of
    /// extents is dropped across commits, never in one.
    public static let dropBudget = 20_000
}
