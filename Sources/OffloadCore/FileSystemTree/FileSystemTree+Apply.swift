extension FileSystemTree {
    /// Applies one change to the tree's items: all of it, or (when it throws) none of it.
    ///
    /// Refused, with nothing changed: a link whose name the directory already holds
    /// (`.exists`) or whose index is taken (`.exists`); an unlink of an entry the directory
    /// does not hold as stated (`.notFound`); removing an xattr the inode does not have
    /// (`.noAttribute`); a name, link or xattr whose hash item is full of colliding
    /// entries (`.noSpace`: only names chosen to collide under this image's key fill one);
    /// a RAM piece longer than an inline extent (`.invalidArgument`: the commit places
    /// such bytes in the image first). A failure of the tree itself (space, I/O, damage)
    /// after the first item changed fails the tree (see `CopyOnWriteTree.groupedChange`).
    public func apply(_ change: JournalChange) throws(FSError) {
        var references = ExtentReferenceChanges()
        switch change {
        case .attributes(let inode, let item):
            if try tree.upsert(Self.inodeKey(inode), item.encoded()) { inodeChanges.added += 1 }
            inodeChanges.highest = max(inodeChanges.highest, inode)
        case .link(let directory, let entry):
            try link(entry, in: directory)
        case .unlink(let directory, let entry):
            try unlink(entry, from: directory)
        case .setXattr(let inode, let name, let value):
            try setXattr(inode, name: name, value: value)
        case .removeXattr(let inode, let name):
            try removeXattr(inode, name: name)
        case .symlinkTarget(let inode, let target):
            try setSymlinkTarget(inode, target)
        case .fileRange(let inode, let size, let range, let pieces):
            try replaceRange(inode, size: size, range: range, with: pieces, &references)
        case .orphan(let inode, let item):
            if let item {
                try tree.upsert(Self.orphanKey(inode), item.encoded())
            } else {
                _ = try tree.remove(Self.orphanKey(inode))
            }
        case .drop(let inode):
            _ = try dropItems(inode, budget: .max, &references)
        }
        referenceChanges.append(references)
        try spillIfOver()
    }

    // MARK: - Names

    private func link(_ entry: NamedEntry, in directory: UInt64) throws(FSError) {
        let nameKey = nameKey(directory, entry.name)
        var names: NameItem = try item(nameKey) ?? NameItem(entries: [])
        guard !names.entries.contains(where: { $0.name == entry.name }) else { throw .exists }
        guard names.fits(adding: entry) else { throw .noSpace }
        let indexKey = Self.indexKey(directory, entry.index)
        guard try !tree.contains(indexKey) else { throw .exists }
        let backKey = backReferenceKey(entry.child, directory, entry.name)
        var back: BackReferenceItem = try item(backKey) ?? BackReferenceItem(links: [])
        let link = Link(directory: directory, index: entry.index, name: entry.name)
        // A back reference for this name without the name is damage, not a second link.
        guard !back.links.contains(where: { $0.directory == directory && $0.name == entry.name }) else {
            throw .damagedImage("inode \(entry.child) has a back reference to \(directory)/\(entry.name) the directory lacks")
        }
        guard back.fits(adding: link) else { throw .noSpace }
        names.entries.append(entry)
        back.links.append(link)
        try tree.groupedChange { () throws(FSError) in
            try tree.upsert(nameKey, names.encoded())
            try tree.upsert(indexKey, IndexItem(name: entry.name, child: entry.child, type: entry.type).encoded())
            try tree.upsert(backKey, back.encoded())
        }
    }

    private func unlink(_ entry: NamedEntry, from directory: UInt64) throws(FSError) {
        let nameKey = nameKey(directory, entry.name)
        var names: NameItem = try item(nameKey) ?? NameItem(entries: [])
        guard let position = names.entries.firstIndex(of: entry) else { throw .notFound }
        let backKey = backReferenceKey(entry.child, directory, entry.name)
        var back: BackReferenceItem = try item(backKey) ?? BackReferenceItem(links: [])
        let link = Link(directory: directory, index: entry.index, name: entry.name)
        guard let linkPosition = back.links.firstIndex(of: link) else {
            throw .damagedImage("inode \(entry.child) lacks the back reference of \(directory)/\(entry.name)")
        }
        // The index item must name this entry: on a damaged image it may name another,
        // which removing it would take out of readdir.
        let indexKey = Self.indexKey(directory, entry.index)
        let indexed: IndexItem? = try item(indexKey)
        guard let indexed, indexed.name == entry.name, indexed.child == entry.child else {
            throw .damagedImage("directory \(directory): index item \(entry.index) does not name \(entry.name) (inode \(entry.child))")
        }
        names.entries.remove(at: position)
        back.links.remove(at: linkPosition)
        try tree.groupedChange { () throws(FSError) in
            try replaceOrRemove(nameKey, names.entries.isEmpty ? nil : names.encoded())
            _ = try tree.remove(indexKey)
            try replaceOrRemove(backKey, back.links.isEmpty ? nil : back.encoded())
        }
    }

    /// Stores `value` under `key`, or removes the item when `value` is nil.
    func replaceOrRemove(_ key: TreeKey, _ value: [UInt8]?) throws(FSError) {
        if let value {
            try tree.upsert(key, value)
        } else {
            _ = try tree.remove(key)
        }
    }

    // MARK: - Dropping an inode

    /// Removes items of the dropped `inode` in key order, at most `budget` of them (at
    /// least one, so its attributes, the first, go with the first chunk and it is gone for
    /// readers at once), releasing what its extents referenced. `done` when none remain.
    /// Its orphan item is the caller's: a drop that needs several chunks (a file of
    /// millions of extents) carries on across commits, its orphan item in the `.dropping`
    /// state (`continueDrops`); each chunk starts again at the first item left, so a crash
    /// between chunks only repeats a lookup.
    func dropItems(_ inode: UInt64, budget: Int, _ references: inout ExtentReferenceChanges) throws(FSError)
        -> (removed: Int, done: Bool) {
        try Self.requireInode(inode)
        var keys: [TreeKey] = []
        var more = false
        try tree.scan(from: Self.key(inode, .inode, 0), through: TreeKey(object: inode, kind: .max, offset: .max)) {
            (key, raw) throws(FSError) in
            guard keys.count < max(1, budget) else {
                more = true
                return false
            }
            keys.append(key)
            if key.kind == ItemKind.extent.rawValue {
                references.release(try Self.decode(key, raw) as ExtentItem)
            }
            return true
        }
        try tree.groupedChange { () throws(FSError) in
            for key in keys { _ = try tree.remove(key) }
        }
        // The inode item sorts first among an inode's items: the first batch takes it.
        if keys.first == Self.inodeKey(inode) { inodeChanges.removed += 1 }
        return (keys.count, !more)
    }

    /// Drops `inode` within `budget` items (at least its attributes); when items remain,
    /// its orphan item says it is being dropped, so the next commits (and a mount) carry
    /// on; when none do, its orphan item goes. Returns the items removed.
    public func drop(_ inode: UInt64, budget: Int) throws(FSError) -> Int {
        var references = ExtentReferenceChanges()
        let (removed, done) = try dropItems(inode, budget: budget, &references)
        try replaceOrRemove(Self.orphanKey(inode), done ? nil : OrphanItem(state: .dropping).encoded())
        referenceChanges.append(references)
        try spillIfOver()
        return removed
    }

    /// Carries on with the drops earlier commits left unfinished (orphans in the
    /// `.dropping` state), removing about `budget` items in all. Returns the items removed.
    public func continueDrops(budget: Int) throws(FSError) -> Int {
        var removed = 0
        for (inode, item) in try orphans() where item.state == .dropping {
            guard removed < budget else { break }
            removed += try drop(inode, budget: budget - removed)
        }
        return removed
    }
}
