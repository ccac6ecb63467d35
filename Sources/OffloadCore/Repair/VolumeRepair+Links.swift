extension VolumeRepair {
    /// Repair's second pass, over the tree the name pass committed: link counts from the
    /// back references (a directory's from its subdirectories), next entry numbers past
    /// the last entry, orphan items of inodes that have names again removed, and every
    /// inode with neither a name nor an orphan item moved to /lost+found (as format 1's
    /// repair does), named `#<inode>`. Counts the inodes for the commit slot.
    struct LinkRepair {
        /// What the scan saw of one object.
        struct Tally {
            var object: UInt64
            var inode: InodeItem?
            var links = 0
            var firstLink: Link?
            var names = 0, subdirectories = 0
            var lastIndex: UInt64 = 0
            /// A symlink's target as far as its parts are whole and in order.
            var target: [UInt8] = []
            var targetHolds = true
        }

        let target: FileSystemTree
        let lookups: FileSystemTree
        let scanned: FileSystemTree
        let nextInode: UInt64
        let progress: VolumeCheck.Progress?
        var changes = PassChanges()
        var inodeChanges = FileSystemTree.InodeChanges()
        /// Inodes no name reaches, for /lost+found (the damage's size, not the tree's).
        private var homeless: [(inode: UInt64, isDirectory: Bool)] = []

        init(volume: TreeVolume, root: CopyOnWriteTree.Root?, nextInode: UInt64, progress: VolumeCheck.Progress?) throws(FSError) {
            target = volume.filesystem
            lookups = try NameRepair.tree(volume, root)
            scanned = try NameRepair.tree(volume, root)
            self.nextInode = nextInode
            self.progress = progress
        }

        mutating func run() throws(FSError) {
            var tally: Tally?
            var scannedItems: UInt64 = 0
            try scanned.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
                if tally?.object != key.object {
                    if let done = tally { try finish(done) }
                    tally = Tally(object: key.object)
                }
                count(key, value, &tally!)
                scannedItems += 1
                if scannedItems % 65_536 == 0 { progress?("counting links", scannedItems, 0) }
                return true
            }
            if let done = tally { try finish(done) }
            try moveHomeless()
        }

        /// The name pass kept only items that decode.
        private func count(_ key: TreeKey, _ value: UnsafeRawBufferPointer, _ tally: inout Tally) {
            switch ItemKind(rawValue: key.kind) {
            case .inode?:
                tally.inode = try? FileSystemTree.decode(key, value) as InodeItem
            case .backReference?:
                guard let item = try? FileSystemTree.decode(key, value) as BackReferenceItem else { return }
                tally.links += item.links.count
                if tally.firstLink == nil { tally.firstLink = item.links.first }
            case .name?:
                guard let item = try? FileSystemTree.decode(key, value) as NameItem else { return }
                tally.names += item.entries.count
                tally.subdirectories += item.entries.filter { $0.type == 4 }.count
            case .index?:
                tally.lastIndex = max(tally.lastIndex, key.offset)
            case .symlinkTarget?:
                // Parts are numbered from 0 with no gap, all but the last whole.
                // What a request can make: at most `JournalChange.targetLimit` bytes, no NUL.
                if tally.targetHolds, key.offset == UInt64(tally.target.count / XattrItem.chunkBytes),
                   tally.target.count % XattrItem.chunkBytes == 0, value.count > 0, value.count <= XattrItem.chunkBytes,
                   tally.target.count + value.count <= JournalChange.targetLimit, !value.contains(0) {
                    tally.target += value
                } else {
                    tally.targetHolds = false
                }
            default:
                break
            }
        }

        private mutating func finish(_ tally: Tally) throws(FSError) {
            guard ItemCoding.isInode(tally.object), let inode = tally.inode else { return }
            let number = tally.object
            inodeChanges.added += 1
            inodeChanges.highest = max(inodeChanges.highest, number)
            let orphan = (try? lookups.orphan(number)) ?? nil
            var fixed = inode
            var isHomeless = false
            if inode.type == 4 {
                // A directory removed while open: no links, no name, an orphan item.
                let removedWhileOpen = inode.linkCount == 0 && orphan != nil && tally.links == 0
                fixed.linkCount = removedWhileOpen ? 0 : 2 + UInt32(clamping: tally.subdirectories)
                // (An entry's index is below 2^64 - 1: the name pass removed an index item
                // keyed there, and the decoders refuse a name item stating it.)
                if tally.names > 0 && fixed.nextIndex <= tally.lastIndex && tally.lastIndex < UInt64.max {
                    fixed.nextIndex = tally.lastIndex + 1
                }
                if fixed.nextIndex < 3 { fixed.nextIndex = 3 }
                if number == 1 {
                    fixed.parent = 1
                } else if let link = tally.firstLink {
                    fixed.parent = link.directory
                }
                if fixed.parent != inode.parent {
                    changes.repairs.append("directory \(number): its parent field said \(inode.parent); it is \(fixed.parent), "
                                           + "where its name is")
                }
                isHomeless = number != 1 && tally.links == 0 && !removedWhileOpen
            } else {
                fixed.linkCount = UInt32(clamping: tally.links)
                isHomeless = tally.links == 0 && orphan == nil
            }
            if inode.type == 10, !tally.targetHolds || tally.target.isEmpty || UInt64(tally.target.count) != inode.size {
                // What is left of the target (its parts in order), or a name saying it is lost.
                let kept = tally.target.isEmpty ? Array("lost-symlink-target-of-inode-\(number)".utf8) : tally.target
                try target.apply(.symlinkTarget(inode: number, kept))
                fixed.size = UInt64(kept.count)
                changes.files.append(FileChange(inode: number, what: .symlinkTarget(String(decoding: kept, as: UTF8.self))))
            }
            if tally.links > 0, orphan != nil {
                _ = try target.tree.remove(FileSystemTree.orphanKey(number))
                changes.repairs.append("inode \(number) has names and an orphan item: the orphan item is removed")
            }
            if isHomeless {
                homeless.append((number, inode.type == 4))
                if orphan != nil { _ = try target.tree.remove(FileSystemTree.orphanKey(number)) }
            } else if fixed.linkCount != inode.linkCount {
                changes.files.append(FileChange(inode: number, what: .links(was: inode.linkCount, now: fixed.linkCount)))
            }
            if fixed != inode { try target.tree.upsert(FileSystemTree.inodeKey(number), fixed.encoded()) }
        }

        /// Names the homeless inodes in /lost+found (made, in the root, when missing).
        private mutating func moveHomeless() throws(FSError) {
            guard !homeless.isEmpty else { return }
            let (number, made) = try lostAndFound()
            guard var directory = try target.inode(number) else { throw .damagedImage("repair: /lost+found has no inode item") }
            for (inode, isDirectory) in homeless {
                guard var item = try target.inode(inode) else { continue }
                var name = Array("#\(inode)".utf8)
                var attempt = 1
                while try target.lookup(directory: number, name: name) != nil {
                    name = Array("#\(inode).\(attempt)".utf8)
                    attempt += 1
                }
                guard directory.nextIndex < UInt64.max else {
                    throw .damagedImage("repair: /lost+found has no entry number left for the inodes no name reaches")
                }
                try target.apply(.link(directory: number, NamedEntry(name: name, child: inode, type: item.type,
                                                                      index: directory.nextIndex)))
                directory.nextIndex += 1
                if isDirectory {
                    item.parent = number
                    directory.linkCount += 1
                } else {
                    item.linkCount = 1
                }
                try target.tree.upsert(FileSystemTree.inodeKey(inode), item.encoded())
                changes.files.append(FileChange(inode: inode, what: .moved))
            }
            try target.tree.upsert(FileSystemTree.inodeKey(number), directory.encoded())
            if made { changes.repairs.append("/lost+found is made for the inodes no name reaches") }
        }

        /// /lost+found's inode number, and whether repair made it: the root's entry of
        /// that name when it is a directory, else a new directory (under another name
        /// when a file holds that one).
        private mutating func lostAndFound() throws(FSError) -> (UInt64, Bool) {
            var name = Array("lost+found".utf8)
            var attempt = 1
            while let entry = try target.lookup(directory: 1, name: name) {
                if entry.type == 4, try target.inode(entry.child) != nil { return (entry.child, false) }
                name = Array("lost+found.\(attempt)".utf8)
                attempt += 1
            }
            let number = max(nextInode, inodeChanges.highest + 1)
            let now = RepairTime.now()
            let made = InodeItem(type: 4, permissions: 0o700, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0,
                                 accessTime: now, modificationTime: now, changeTime: now, birthTime: now,
                                 parent: 1, nextIndex: 3)
            try target.tree.upsert(FileSystemTree.inodeKey(number), made.encoded())
            guard var root = try target.inode(1) else { throw .damagedImage("repair: the root has no inode item") }
            guard root.nextIndex < UInt64.max else {
                throw .damagedImage("repair: the root directory has no entry number left for /lost+found")
            }
            try target.apply(.link(directory: 1, NamedEntry(name: name, child: number, type: 4, index: root.nextIndex)))
            root.nextIndex += 1
            root.linkCount += 1
            try target.tree.upsert(FileSystemTree.inodeKey(1), root.encoded())
            inodeChanges.added += 1
            inodeChanges.highest = max(inodeChanges.highest, number)
            return (number, true)
        }
    }
}
