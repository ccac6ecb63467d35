#if canImport(Glibc)
import Glibc
#endif

extension VolumeRepair {
    /// Repair's first pass over the loaded tree: every item kept only when it holds, and
    /// the three records of a name (name, index, back reference) made to agree.
    ///
    /// Decisions read the loaded tree as it was (`original`, a tree object of its own at
    /// the loaded root), never the changes made so far, so each record is judged by the
    /// same rule whichever of its partners the scan meets first; changes go to the
    /// volume's tree, over new nodes (the scan and the lookups read the committed root).
    /// A removal takes out an item only while the volume's tree still holds the loaded
    /// bytes, so it never undoes a record a partner restored under the same key.
    ///
    /// The rules:
    /// - an object whose inode item is gone or does not decode loses every item (the rest
    ///   of a drop under a dropping orphan item excepted); the root is remade if lost;
    /// - a name entry holds when its directory is a directory, its child's inode has the
    ///   type it states, it is under its hash, and its index slot is free or names it: its
    ///   missing index entry and back reference are restored;
    /// - an index entry whose name is gone brings the name back when its child holds;
    ///   one that disagrees with its name is removed;
    /// - a back reference stays when the link it states is a name (or an index entry that
    ///   brings one back) of this inode;
    /// - extents must decode, lie inside the block space, follow each other without
    ///   overlap, and end within the size of a regular file; orphan items must name an
    ///   inode (or a dropping one).
    struct NameRepair {
        let target: FileSystemTree
        let original: FileSystemTree
        let scanned: FileSystemTree
        let spaceBytes: Range<UInt64>
        let progress: VolumeCheck.Progress?
        var changes = PassChanges()
        /// The object being scanned: its inode item (nil: its items go), and where its last
        /// extent ended.
        private var object: UInt64?
        private var inode: InodeItem?
        private var keepsItems = false
        private var extentEnd: UInt64 = 0
        /// The last xattr item scanned and the attributes repair keeps of it: its chunk
        /// items come right after it in key order.
        private var xattrItem: (key: TreeKey, kept: [XattrItem.Attribute])?
        /// Chunk items removed because no kept attribute names them.
        private var strayChunks = 0

        init(volume: TreeVolume, root: CopyOnWriteTree.Root?, progress: VolumeCheck.Progress?) throws(FSError) {
            target = volume.filesystem
            original = try Self.tree(volume, root)
            scanned = try Self.tree(volume, root)
            let space = volume.space
            spaceBytes = (space.firstBlock << BackingStore.blockShift)..<(space.endBlock << BackingStore.blockShift)
            self.progress = progress
        }

        /// A tree object of its own at `root` (a tree reads into buffers of its own).
        static func tree(_ volume: TreeVolume, _ root: CopyOnWriteTree.Root?) throws(FSError) -> FileSystemTree {
            FileSystemTree(tree: try CopyOnWriteTree(pages: volume.filesystemPages, imageID: volume.current.imageID,
                                                     treeID: TreeVolume.filesystemTreeID, root: root),
                           hashes: volume.filesystem.hashes)
        }

        mutating func run() throws(FSError) {
            if inodeOf(1)?.type != 4 {
                let now = RepairTime.now()
                let root = InodeItem(type: 4, permissions: 0o755, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0,
                                     accessTime: now, modificationTime: now, changeTime: now, birthTime: now,
                                     parent: 1, nextIndex: 3)
                try target.tree.upsert(FileSystemTree.inodeKey(1), root.encoded())
                changes.repairs.append("the root directory's attributes were lost: it is made again (mode 0755, owner root)")
            }
            var scannedItems: UInt64 = 0
            try scanned.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
                if key.object != object { try start(key.object) }
                try item(key, value)
                scannedItems += 1
                if scannedItems % 65_536 == 0 { progress?("repairing names", scannedItems, 0) }
                return true
            }
            if strayChunks > 0 {
                changes.repairs.append(strayChunks == 1 ? "1 extended attribute chunk item that no attribute names is removed"
                                       : "\(strayChunks) extended attribute chunk items that no attribute names are removed")
            }
        }

        private mutating func start(_ number: UInt64) throws(FSError) {
            object = number
            extentEnd = 0
            inode = number == 1 ? (try? target.inode(1)) ?? nil : inodeOf(number)
            if number == ReservedObject.orphans || inode != nil {
                keepsItems = true
            } else {
                // The rest of an inode whose drop goes on over several commits.
                keepsItems = ((try? original.orphan(number)) ?? nil)?.state == .dropping
            }
        }

        private mutating func item(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            guard keepsItems, let kind = ItemKind(rawValue: key.kind),
                  ItemCoding.isInode(key.object) || (key.object == ReservedObject.orphans && kind == .orphan) else {
                return try remove(key, value)
            }
            switch kind {
            case .inode:
                // One that does not decode is lost as a damaged leaf's would be (the
                // inode's other items go with it, its names are removed).
                if key.offset != 0 || (try? FileSystemTree.decode(key, value) as InodeItem) == nil { try remove(key, value) }
            case .backReference:
                try backReference(key, value)
            case .xattr:
                // The low 16 bits number the chunks of a long value; 0 is the item.
                if key.offset & 0xFFFF == 0 { try xattrs(key, value) } else { try xattrChunk(key, value) }
            case .symlinkTarget:
                if inode?.type != 10 { try remove(key, value) }
            case .extent:
                try extent(key, value)
            case .name:
                try names(key, value)
            case .index:
                try index(key, value)
            case .orphan:
                let orphan = try? FileSystemTree.decode(key, value) as OrphanItem
                if orphan == nil || !ItemCoding.isInode(key.offset) || (inodeOf(key.offset) == nil && orphan?.state != .dropping) {
                    try remove(key, value)
                    changes.repairs.append("the orphan item of inode \(key.offset), which is lost, is removed")
                }
            }
        }

        /// An xattr item: an attribute whose value is in chunk items stays only when each
        /// of them is there with its length (its read fails otherwise); one that does not
        /// decode goes to `damagedXattrs`. The attributes kept are noted for the chunk items
        /// that follow the item in key order (`xattrChunk`).
        private mutating func xattrs(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            if let item = try? FileSystemTree.decode(key, value) as XattrItem {
                var kept: [XattrItem.Attribute] = [], lost: [[UInt8]] = []
                for attribute in item.attributes {
                    if try chunksHold(attribute, under: key) { kept.append(attribute) } else { lost.append(attribute.name) }
                }
                if !lost.isEmpty, try stillHolds(key, value) {
                    try target.replaceOrRemove(key, kept.isEmpty ? nil : XattrItem(attributes: kept).encoded())
                    changes.files.append(FileChange(inode: key.object, what: .lostXattrValues(names: lost)))
                }
            } else {
                try damagedXattrs(key, value)
            }
            xattrItem = (key, ((try? target.item(key) as XattrItem?) ?? nil)?.attributes ?? [])
        }

        /// A chunk item stays when an attribute the repaired item under its hash keeps
        /// names it with its length; any other (of an attribute removed, by repair or by
        /// damage, or of none) goes: nothing can read it, and the check reports it.
        private mutating func xattrChunk(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            // The rest of a drop under way (no inode item) is the drop's to remove: its chunk
            // items may outlive their item by a commit.
            guard inode != nil else { return }
            let itemKey = TreeKey(object: key.object, kind: key.kind, offset: key.offset & ~0xFFFF)
            let chunk = Int(key.offset & 0xFFFF)
            if xattrItem?.key == itemKey,
               xattrItem?.kept.contains(where: { $0.chunks.contains(chunk) && $0.chunkLength(chunk) == value.count }) == true {
                return
            }
            if try stillHolds(key, value) {
                _ = try target.tree.remove(key)
                strayChunks += 1
            }
        }

        /// An xattr item that does not decode: the attributes that can be read, pass the
        /// decoder's checks (`XattrItem.salvage`) and, for a value in chunk items, find
        /// each chunk there with its length, stay; the others go, and the file is named.
        /// (The item went whole before, unnamed, with the attributes of other names under
        /// its hash.) Chunk items of the attributes that go are removed after it
        /// (`xattrChunk`).
        private mutating func damagedXattrs(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            guard try stillHolds(key, value) else { return }
            let salvaged = XattrItem.salvage(value)
            var kept: [XattrItem.Attribute] = []
            for attribute in salvaged?.kept ?? [] where try chunksHold(attribute, under: key) { kept.append(attribute) }
            try target.replaceOrRemove(key, kept.isEmpty ? nil : XattrItem(attributes: kept).encoded())
            let lost = salvaged.map { !$0.readAll || $0.dropped > 0 || kept.count < $0.kept.count } ?? true
            changes.files.append(FileChange(inode: key.object, what: .lostXattrs(kept: kept.map(\.name), lost: lost)))
        }

        /// Whether every chunk item of `attribute`'s value (none for an inline one) is in
        /// the tree under `key`'s hash with the length the value's length gives it: a
        /// value read through them (`FileSystemTree.xattr`) would otherwise fail.
        private func chunksHold(_ attribute: XattrItem.Attribute, under key: TreeKey) throws(FSError) -> Bool {
            for chunk in attribute.chunks {
                let chunkKey = TreeKey(object: key.object, kind: key.kind, offset: key.offset | UInt64(chunk))
                guard let bytes = try target.tree.lookup(chunkKey), bytes.count == attribute.chunkLength(chunk) else { return false }
            }
            return true
        }

        // MARK: - Names

        private mutating func names(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            let directory = key.object
            guard isDirectory(directory), let bucket = try? FileSystemTree.decode(key, value) as NameItem else {
                return try remove(key, value)
            }
            var kept: [NamedEntry] = []
            for entry in bucket.entries {
                if target.hashes.name(entry.name) == key.offset && holds(entry, in: directory) {
                    kept.append(entry)
                    try restorePartners(of: entry, in: directory)
                } else if target.hashes.name(entry.name) == key.offset {
                    changes.files.append(FileChange(inode: entry.child,
                                                    what: .removed(directory: directory, name: entry.name, child: entry.child)))
                }
                // Under another hash no lookup finds it: its index entry brings it back.
            }
            if kept.count != bucket.entries.count {
                try target.replaceOrRemove(key, kept.isEmpty ? nil : NameItem(entries: kept).encoded())
            }
        }

        private mutating func index(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            let directory = key.object
            // The key is the entry's number, which no decoder of the item reads: one no entry
            // may have (below 3, or 2^64 - 1) goes, as it would make a name item that does
            // not decode.
            guard isDirectory(directory), (try? ItemCoding.checkIndex(key.offset)) != nil,
                  let entry = try? FileSystemTree.decode(key, value) as IndexItem else {
                return try remove(key, value)
            }
            let named = NamedEntry(name: entry.name, child: entry.child, type: entry.type, index: key.offset)
            if let existing = nameOf(entry.name, in: directory) {
                // The name decides; an entry that disagrees with it goes.
                if existing != named || !holds(existing, in: directory) { try remove(key, value) }
                return
            }
            guard childHolds(named, in: directory) else {
                changes.files.append(FileChange(inode: entry.child,
                                                what: .removed(directory: directory, name: entry.name, child: entry.child)))
                return try remove(key, value)
            }
            let nameKey = target.nameKey(directory, entry.name)
            var bucket: NameItem = (try? target.item(nameKey)) ?? nil ?? NameItem(entries: [])
            guard !bucket.entries.contains(where: { $0.name == entry.name }), bucket.fits(adding: named) else {
                return try remove(key, value)
            }
            bucket.entries.append(named)
            try target.tree.upsert(nameKey, bucket.encoded())
            try restoreBackReference(of: named, in: directory)
            changes.files.append(FileChange(inode: entry.child, what: .restoredName))
        }

        private mutating func backReference(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            guard let loaded = try? FileSystemTree.decode(key, value) as BackReferenceItem else { return try remove(key, value) }
            let child = key.object
            let holding = loaded.links.filter { finalLink($0)?.child == child }
            // A link kept under another name's hash (the check's "under another hash"):
            // lookups by name would not find it; it moves to its own item.
            let misplaced = holding.filter { target.backReferenceKey(child, $0.directory, $0.name) != key }
            guard holding.count != loaded.links.count || !misplaced.isEmpty else { return }
            // The volume's item may hold links a name restored since: the same rule keeps them.
            let current: BackReferenceItem? = (try? target.item(key)) ?? nil
            let kept = (current ?? loaded).links.filter { link in
                finalLink(link)?.child == child && target.backReferenceKey(child, link.directory, link.name) == key
            }
            try target.replaceOrRemove(key, kept.isEmpty ? nil : BackReferenceItem(links: kept).encoded())
            for link in misplaced { try place(link, of: child) }
        }

        /// The index entry and back reference `entry` needs, where they are missing.
        private mutating func restorePartners(of entry: NamedEntry, in directory: UInt64) throws(FSError) {
            let indexKey = FileSystemTree.indexKey(directory, entry.index)
            if ((try? original.item(indexKey) as IndexItem?) ?? nil) == nil {
                try target.tree.upsert(indexKey, IndexItem(name: entry.name, child: entry.child, type: entry.type).encoded())
                changes.files.append(FileChange(inode: entry.child, what: .restoredEntry))
            }
            try restoreBackReference(of: entry, in: directory)
        }

        private func restoreBackReference(of entry: NamedEntry, in directory: UInt64) throws(FSError) {
            let link = Link(directory: directory, index: entry.index, name: entry.name)
            // Already there: in its own item, or under another name's hash (`backReference`
            // moves it). The own item first: scanning all of a file's links for each of its
            // names made a file of many links quadratic.
            let own: BackReferenceItem? = (try? original.item(original.backReferenceKey(entry.child, directory, entry.name))) ?? nil
            if own?.links.contains(link) ?? false { return }
            if ((try? original.links(of: entry.child)) ?? []).contains(link) { return }
            try place(link, of: entry.child)
        }

        /// Puts `link` into `child`'s back-reference item of the link's own hash.
        private func place(_ link: Link, of child: UInt64) throws(FSError) {
            let key = target.backReferenceKey(child, link.directory, link.name)
            var item: BackReferenceItem = (try? target.item(key)) ?? nil ?? BackReferenceItem(links: [])
            item.links.removeAll { $0.directory == link.directory && $0.name == link.name }
            guard item.fits(adding: link) else { return }
            item.links.append(link)
            try target.tree.upsert(key, item.encoded())
        }

        /// The name the repaired tree will have for `link`, if any: its name entry when
        /// that holds, else its index entry when that brings the name back.
        private func finalLink(_ link: Link) -> NamedEntry? {
            guard isDirectory(link.directory) else { return nil }
            if let entry = nameOf(link.name, in: link.directory) {
                return holds(entry, in: link.directory) && entry.index == link.index ? entry : nil
            }
            let indexed: IndexItem? = (try? original.item(FileSystemTree.indexKey(link.directory, link.index))) ?? nil
            guard let indexed, indexed.name == link.name else { return nil }
            let entry = NamedEntry(name: link.name, child: indexed.child, type: indexed.type, index: link.index)
            return childHolds(entry, in: link.directory) ? entry : nil
        }

        /// A name entry holds: its child holds, and its index slot is free or names it.
        private func holds(_ entry: NamedEntry, in directory: UInt64) -> Bool {
            guard childHolds(entry, in: directory) else { return false }
            let indexed: IndexItem?? = try? original.item(FileSystemTree.indexKey(directory, entry.index))
            switch indexed {
            case .some(.none): return true
            case .some(.some(let item)): return item == IndexItem(name: entry.name, child: entry.child, type: entry.type)
            case .none: return true  // does not decode: the index pass removes it, the name restores it
            }
        }

        private func childHolds(_ entry: NamedEntry, in directory: UInt64) -> Bool {
            entry.child != directory && entry.child != 1 && inodeOf(entry.child)?.type == entry.type
        }

        private func nameOf(_ name: [UInt8], in directory: UInt64) -> NamedEntry? {
            (try? original.lookup(directory: directory, name: name)) ?? nil
        }

        private func isDirectory(_ number: UInt64) -> Bool { number == 1 || inodeOf(number)?.type == 4 }

        /// The loaded tree's inode item (nil when missing or not decodable).
        private func inodeOf(_ number: UInt64) -> InodeItem? { (try? original.inode(number)) ?? nil }

        // MARK: - Extents

        private mutating func extent(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            let object = key.object
            guard let extent = try? FileSystemTree.decode(key, value) as ExtentItem, let inode, inode.type == 8 else {
                changes.files.append(FileChange(inode: object, what: .lostData(offset: key.offset)))
                return try remove(key, value)
            }
            var holds = key.offset >= extentEnd && extent.length <= inode.size && key.offset <= inode.size - extent.length
            if case .image(let offset, let length) = extent {
                holds = holds && offset >= spaceBytes.lowerBound && length <= spaceBytes.upperBound
                    && offset <= spaceBytes.upperBound - length
            }
            guard holds else {
                changes.files.append(FileChange(inode: object, what: .lostData(offset: key.offset)))
                return try remove(key, value)
            }
            extentEnd = key.offset + extent.length
        }

        /// Removes `key` from the volume's tree while it still holds the loaded bytes.
        private func remove(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
            if try stillHolds(key, value) { _ = try target.tree.remove(key) }
        }

        /// Whether the tree being repaired still holds `value` under `key`, as the scan read it.
        private func stillHolds(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) -> Bool {
            try target.tree.withValue(key) { (current) throws(FSError) -> Bool in
                current.map { $0.elementsEqual(value) } ?? false
            }
        }
    }
}

/// The time repair stamps on what it makes (the root, /lost+found).
enum RepairTime {
    static func now() -> RecordTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return RecordTime(seconds: Int64(spec.tv_sec), nanoseconds: UInt32(spec.tv_nsec))
    }
}
