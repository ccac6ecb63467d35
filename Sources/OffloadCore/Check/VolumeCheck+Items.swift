// The filesystem tree's items, checked one object at a time in key order (an object's
// items are contiguous: inode, back references, xattrs, target, extents, names, indexes).

extension VolumeCheck {
    /// What one object's items said, as the scan passes them.
    struct ObjectTally {
        var object: UInt64
        var inode: InodeItem?
        var items = 0
        var links = 0
        var names = 0, indexes = 0, subdirectories = 0
        var lastIndex: UInt64 = 0
        var extentEnd: UInt64 = 0
        var extents = 0
        var targetBytes = 0
        var targetHasNul = false
        /// The directory of the first link its back references state.
        var firstLinkDirectory: UInt64?
        /// The last xattr item's hash, and the chunk items its attributes name that the
        /// scan has not passed yet (number: the attribute and the chunk's length): an
        /// item's chunk items come right after it in key order. Nil chunks: the item did
        /// not decode (reported; its chunks are not checked).
        var xattrHash: UInt64?
        var xattrChunks: [Int: (name: [UInt8], length: Int)]? = [:]
    }

    /// 2: every item of the filesystem tree, and what the objects' items say together.
    mutating func checkItems() {
        var tally: ObjectTally?
        var scanned: UInt64 = 0
        do {
            try filesystem.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
                if tally?.object != key.object {
                    if let done = tally { finish(done) }
                    tally = ObjectTally(object: key.object)
                }
                item(key, value, &tally!)
                scanned += 1
                if scanned % 65_536 == 0 { progress?("checking items", scanned, 0) }
                return true
            }
        } catch {
            report.add("the filesystem tree's items could not all be read: \(error)")
            if let done = tally { finish(done) }
            return
        }
        if let done = tally { finish(done) }
        // The slot's counts follow the commits' inode items (statfs and status read them).
        if UInt64(report.inodes) != slot.inodeCount {
            report.add("commit \(slot.generation) counts \(slot.inodeCount) inodes; the tree holds \(report.inodes)")
        }
        if highestInode >= slot.nextInode {
            report.add("inode \(highestInode) is not below commit \(slot.generation)'s next inode number \(slot.nextInode)")
        }
    }

    private mutating func item(_ key: TreeKey, _ value: UnsafeRawBufferPointer, _ tally: inout ObjectTally) {
        tally.items += 1
        let object = key.object
        guard let kind = ItemKind(rawValue: key.kind) else { return report.add("item \(key): unknown kind \(key.kind)") }
        do {
            switch kind {
            case .inode:
                guard key.offset == 0 else { return report.add("item \(key): an inode item at offset \(key.offset)") }
                tally.inode = try FileSystemTree.decode(key, value) as InodeItem
            case .backReference:
                let item: BackReferenceItem = try FileSystemTree.decode(key, value)
                for link in item.links {
                    tally.links += 1
                    if tally.firstLinkDirectory == nil { tally.firstLinkDirectory = link.directory }
                    if filesystem.hashes.backReference(directory: link.directory, name: link.name) != key.offset {
                        report.add("inode \(object): the link '\(Self.show(link.name))' in \(link.directory) is under another hash")
                    }
                    let index: IndexItem? = try lookups.item(FileSystemTree.indexKey(link.directory, link.index))
                    if index?.name != link.name || index?.child != object {
                        report.add("inode \(object): its link '\(Self.show(link.name))' (entry \(link.index) of directory \(link.directory)) is not that entry")
                    }
                }
            case .xattr:
                // The low 16 bits number the chunks of a long value (raw bytes); 0 is the item.
                if tally.inode == nil {
                    // An object without its inode item is a drop under way, whose items go in
                    // key order, a budget a commit: chunk items may outlive their item by a
                    // commit. (Or damage, which `finish` reports.) Its chunks are not checked.
                    if key.offset & 0xFFFF == 0 { _ = try FileSystemTree.decode(key, value) as XattrItem }
                } else if key.offset & 0xFFFF == 0 {
                    missingChunks(&tally)
                    tally.xattrHash = key.offset
                    tally.xattrChunks = nil
                    let item: XattrItem = try FileSystemTree.decode(key, value)
                    tally.xattrChunks = [:]
                    for attribute in item.attributes {
                        for chunk in attribute.chunks { tally.xattrChunks![chunk] = (attribute.name, attribute.chunkLength(chunk)) }
                    }
                } else {
                    xattrChunk(key, value.count, &tally)
                }
            case .symlinkTarget:
                tally.targetBytes += value.count
                if value.contains(0) { tally.targetHasNul = true }
            case .extent:
                let extent: ExtentItem = try FileSystemTree.decode(key, value)
                tally.extents += 1
                report.extents += 1
                if key.offset < tally.extentEnd {
                    report.add("inode \(object): the extent at \(key.offset) overlaps the one before (ending at \(tally.extentEnd))")
                }
                // Past the largest file it is damage (its end wrapped past 2^64 and looked
                // below the size before, while every read of the file refused it).
                tally.extentEnd = try FileSystemTree.end(of: extent, at: key)
                if case .image(let offset, let length) = extent,
                   offset < TreeVolume.firstSpaceBlock << BackingStore.blockShift || length > slot.capacityBytes
                   || offset > slot.capacityBytes - length {
                    report.add("inode \(object): the extent at \(key.offset) names image bytes \(offset)..<\(offset &+ length), outside the block space")
                }
            case .name:
                let item: NameItem = try FileSystemTree.decode(key, value)
                for entry in item.entries {
                    tally.names += 1
                    report.names += 1
                    if entry.type == 4 { tally.subdirectories += 1 }
                    if filesystem.hashes.name(entry.name) != key.offset {
                        report.add("directory \(object): '\(Self.show(entry.name))' is under another hash")
                    }
                    let index: IndexItem? = try lookups.item(FileSystemTree.indexKey(object, entry.index))
                    if index != IndexItem(name: entry.name, child: entry.child, type: entry.type) {
                        report.add("directory \(object): '\(Self.show(entry.name))' has no entry \(entry.index) naming it")
                    }
                    let child = try lookups.inode(entry.child)
                    if child?.type != entry.type {
                        report.add("directory \(object): '\(Self.show(entry.name))' names inode \(entry.child) of type \(entry.type), which is \(child.map { "of type \($0.type)" } ?? "missing")")
                    }
                }
            case .index:
                let item: IndexItem = try FileSystemTree.decode(key, value)
                tally.indexes += 1
                tally.lastIndex = max(tally.lastIndex, key.offset)
                let named = try lookups.lookup(directory: object, name: item.name)
                if named?.child != item.child || named?.index != key.offset {
                    report.add("directory \(object): entry \(key.offset) '\(Self.show(item.name))' has no name naming it")
                }
                // The link's own back-reference item first; all of the child's only when it
                // is not there (damage): a file of 60,000 links made that check quadratic.
                let link = Link(directory: object, index: key.offset, name: item.name)
                let own: BackReferenceItem? = try lookups.item(lookups.backReferenceKey(item.child, object, item.name))
                if !(own?.links.contains(link) ?? false), !(try lookups.links(of: item.child)).contains(link) {
                    report.add("directory \(object): entry \(key.offset) '\(Self.show(item.name))' is not among inode \(item.child)'s links")
                }
            case .orphan:
                guard object == ReservedObject.orphans else { return report.add("item \(key): an orphan item outside the orphan list") }
                // An orphan names an inode (a drop under way too): the mount refuses another.
                guard ItemCoding.isInode(key.offset) else {
                    return report.add("orphan item \(key.offset): no inode has that number")
                }
                let orphan: OrphanItem = try FileSystemTree.decode(key, value)
                report.orphans += 1
                if let inode = try lookups.inode(key.offset) {
                    if inode.linkCount != 0 { report.add("orphan \(key.offset) has \(inode.linkCount) links") }
                } else if orphan.state != .dropping {
                    // A drop larger than a commit's budget removes the inode item first and
                    // the rest over the next commits, under a dropping orphan item.
                    report.add("orphan \(key.offset) has no inode")
                }
            }
        } catch {
            report.add("item \(key): \(error)")
        }
    }

    /// A chunk item of an xattr value (`XattrItem`): the item under its hash names it with
    /// its length. (A value whose chunks are missing or short fails its read with EIO;
    /// one no attribute names is never read.)
    private mutating func xattrChunk(_ key: TreeKey, _ length: Int, _ tally: inout ObjectTally) {
        let hash = key.offset & ~0xFFFF, chunk = Int(key.offset & 0xFFFF)
        guard hash == tally.xattrHash, var expected = tally.xattrChunks else {
            if hash != tally.xattrHash {
                report.add("inode \(tally.object): xattr chunk item \(chunk) under hash \(hash), which no xattr item has")
            }
            return
        }
        guard let (name, wanted) = expected.removeValue(forKey: chunk) else {
            return report.add("inode \(tally.object): xattr chunk item \(chunk) under hash \(hash), which no attribute names")
        }
        tally.xattrChunks = expected
        if length != wanted {
            report.add("inode \(tally.object): chunk \(chunk) of xattr '\(Self.show(name))' holds \(length) bytes, not \(wanted)")
        }
    }

    /// The chunk items the last xattr item named that the scan did not pass.
    private mutating func missingChunks(_ tally: inout ObjectTally) {
        for (chunk, (name, _)) in (tally.xattrChunks ?? [:]).sorted(by: { $0.key < $1.key }) {
            report.add("inode \(tally.object): chunk \(chunk) of xattr '\(Self.show(name))' is missing")
        }
        tally.xattrChunks = [:]
    }

    /// What an object's items say together.
    private mutating func finish(_ tally: ObjectTally) {
        var tally = tally
        missingChunks(&tally)
        let object = tally.object
        if object >= ReservedObject.firstReserved {
            if object != ReservedObject.orphans { report.add("items under the reserved object \(object)") }
            return
        }
        // Numbers start at 1: nothing can name object 0 (a name of child 0 does not decode).
        guard ItemCoding.isInode(object) else { return report.add("items under object \(object), which is no inode's number") }
        let orphan = try? lookups.orphan(object)
        guard let inode = tally.inode else {
            // The rest of an inode whose drop goes on over several commits.
            if orphan?.state == .dropping { return }
            return report.add("inode \(object): \(tally.items) items without an inode item")
        }
        report.inodes += 1
        highestInode = max(highestInode, object)
        let isDirectory = inode.type == 4
        if isDirectory {
            report.directories += 1
            // A directory removed while open: no links, no name, no entries, an orphan.
            let removedWhileOpen = inode.linkCount == 0 && orphan != nil
            let expected: UInt32 = removedWhileOpen ? 0 : 2 + UInt32(clamping: tally.subdirectories)
            if inode.linkCount != expected {
                report.add("directory \(object): \(inode.linkCount) links, its subdirectories make \(expected)")
            }
            if tally.links != (object == 1 || removedWhileOpen ? 0 : 1) {
                report.add("directory \(object): \(tally.links) names lead to it")
            }
            if removedWhileOpen && tally.names > 0 { report.add("directory \(object): removed, and it has names") }
            if tally.names != tally.indexes {
                report.add("directory \(object): \(tally.names) names and \(tally.indexes) entries")
            }
            if tally.indexes > 0 && inode.nextIndex <= tally.lastIndex {
                report.add("directory \(object): its next entry number \(inode.nextIndex) is in use")
            }
            // Entry numbers start at 3 (1 and 2 are readdir's "." and ".."): a create would
            // take one no item may hold.
            if inode.nextIndex < 3 { report.add("directory \(object): its next entry number \(inode.nextIndex) is below 3") }
            // ".." in readdir, and the walk up that refuses a rename into its own subtree.
            let parent = object == 1 ? 1 : tally.firstLinkDirectory
            if let parent, inode.parent != parent {
                report.add("directory \(object): its parent field says \(inode.parent), its name is in \(parent)")
            }
        } else {
            if inode.linkCount != UInt32(clamping: tally.links) {
                report.add("inode \(object): \(inode.linkCount) links, \(tally.links) names lead to it")
            }
            if tally.names + tally.indexes > 0 { report.add("inode \(object): names in an inode that is no directory") }
        }
        if inode.linkCount == 0, object != 1, orphan == nil {
            report.add("inode \(object): no name reaches it and no orphan item lists it")
        }
        if tally.extents > 0 && inode.type != 8 { report.add("inode \(object): extents in an inode that is no regular file") }
        if tally.extentEnd > inode.size { report.add("inode \(object): extents reach \(tally.extentEnd), past its size \(inode.size)") }
        if inode.type == 10 {
            if tally.targetBytes == 0 || UInt64(tally.targetBytes) != inode.size {
                report.add("symlink \(object): a target of \(tally.targetBytes) bytes, size \(inode.size)")
            }
            // What a request can make (PATH_MAX less its NUL, and no NUL in it) and a
            // readlink can answer; read only then (its parts are held to read it).
            if tally.targetBytes > JournalChange.targetLimit || tally.targetHasNul {
                report.add("symlink \(object): a target of \(tally.targetBytes) bytes\(tally.targetHasNul ? " holding a NUL" : ""), "
                           + "which no request makes (at most \(JournalChange.targetLimit), no NUL)")
            } else {
                do { _ = try lookups.symlinkTarget(object) } catch { report.add("symlink \(object): \(error)") }
            }
        }
        if inode.type != 10 && tally.targetBytes > 0 { report.add("inode \(object): a symlink target in an inode that is no symlink") }
    }

    static func show(_ name: [UInt8]) -> String { String(decoding: name.prefix(64), as: UTF8.self) }
}
