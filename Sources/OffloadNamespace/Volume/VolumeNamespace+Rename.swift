import OffloadCore

// rename(2) and renameat2(2) on format 2, with format 1's checks in format 1's order
// (Namespace+Rename.swift): flags, both parents, the source name, the target name
// (RENAME_NOREPLACE: EEXIST), "same inode: nothing to do", the cycle rule (EINVAL), then
// kind rules (ENOTDIR, EISDIR, ENOTEMPTY). An existing target name keeps its entry index
// (its readdir cookie) and names the moved inode; a new name gets the next index.

extension VolumeNamespace {
    public func rename(parent: InodeNumber, name: FileName, newParent: InodeNumber,
                       newName: FileName, flags: RenameFlags, context: RequestContext) throws(FSError) {
        guard flags.subtracting([.noReplace, .exchange, .whiteout]).isEmpty else { throw .invalidArgument("unknown rename flags") }
        guard !flags.isSuperset(of: [.noReplace, .exchange]) else {
            throw .invalidArgument("RENAME_NOREPLACE and RENAME_EXCHANGE together")
        }
        guard !flags.isSuperset(of: [.whiteout, .exchange]) else {
            throw .invalidArgument("RENAME_WHITEOUT and RENAME_EXCHANGE together")
        }
        func change(_ reader: VolumeReader, _ operation: inout VolumeOperation) throws(FSError) {
            var items = RenameItems(reader: reader)
            _ = try directory(parent.rawValue, in: reader)
            _ = try liveDirectory(newParent.rawValue, in: reader)
            guard let source = try reader.lookup(directory: parent.rawValue, name: name.bytes) else { throw .notFound }
            let target = try reader.lookup(directory: newParent.rawValue, name: newName.bytes)
            let now = clock().record
            if flags.contains(.exchange) {
                guard let target else { throw .notFound }
                if source.child == target.child { return }
                let crosses = parent != newParent
                if crosses {
                    if source.type == Self.typeCode(.directory) { try refuseCycle(moving: source.child, into: newParent.rawValue, reader) }
                    if target.type == Self.typeCode(.directory) { try refuseCycle(moving: target.child, into: parent.rawValue, reader) }
                    if source.type == Self.typeCode(.directory) && target.type != Self.typeCode(.directory) {
                        guard try items.get(newParent.rawValue).linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
                    }
                    if target.type == Self.typeCode(.directory) && source.type != Self.typeCode(.directory) {
                        guard try items.get(parent.rawValue).linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
                    }
                }
                operation.changes = [.unlink(directory: parent.rawValue, source), .unlink(directory: newParent.rawValue, target),
                           .link(directory: parent.rawValue, NamedEntry(name: name.bytes, child: target.child, type: target.type, index: source.index)),
                           .link(directory: newParent.rawValue, NamedEntry(name: newName.bytes, child: source.child, type: source.type, index: target.index))]
                try reparent(source, from: parent.rawValue, to: newParent.rawValue, &items)
                try reparent(target, from: newParent.rawValue, to: parent.rawValue, &items)
                try items.change(source.child) { $0.changeTime = now }
                try items.change(target.child) { $0.changeTime = now }
            } else if let target {
                if flags.contains(.noReplace) { throw .exists }
                if target.child == source.child { return }
                if source.type == Self.typeCode(.directory) {
                    if parent != newParent { try refuseCycle(moving: source.child, into: newParent.rawValue, reader) }
                    guard target.type == Self.typeCode(.directory) else { throw .notDirectory }
                    guard try reader.entries(directory: target.child, from: 3, limit: 1).isEmpty else { throw .notEmpty }
                } else if target.type == Self.typeCode(.directory) {
                    throw .isDirectory
                }
                operation.changes = [.unlink(directory: parent.rawValue, source), .unlink(directory: newParent.rawValue, target),
                           .link(directory: newParent.rawValue, NamedEntry(name: newName.bytes, child: source.child, type: source.type, index: target.index))]
                if target.type == Self.typeCode(.directory) {
                    try items.change(target.child) { $0.linkCount = 0 }
                    try items.change(newParent.rawValue) { $0.linkCount -= 1 }
                } else {
                    try items.change(target.child) { $0.linkCount -= 1 }
                }
                try reparent(source, from: parent.rawValue, to: newParent.rawValue, &items)
                try items.change(target.child) { $0.changeTime = now }
                try items.change(source.child) { $0.changeTime = now }
            } else {
                if source.type == Self.typeCode(.directory) {
                    if parent != newParent { try refuseCycle(moving: source.child, into: newParent.rawValue, reader) }
                    if parent != newParent {
                        guard try items.get(newParent.rawValue).linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
                    }
                }
                var newParentItem = try items.get(newParent.rawValue)
                let index = try newParentItem.takeEntryIndex(of: newParent.rawValue)
                items.set(newParent.rawValue, newParentItem)
                operation.changes = [.unlink(directory: parent.rawValue, source),
                           .link(directory: newParent.rawValue, NamedEntry(name: newName.bytes, child: source.child, type: source.type, index: index))]
                try reparent(source, from: parent.rawValue, to: newParent.rawValue, &items)
                try items.change(source.child) { $0.changeTime = now }
            }
            try items.change(parent.rawValue) { $0.modificationTime = now; $0.changeTime = now }
            try items.change(newParent.rawValue) { $0.modificationTime = now; $0.changeTime = now }
            if flags.contains(.whiteout) { try leaveWhiteout(in: parent.rawValue, name, context: context, now: now, &items, reader, &operation) }
            for (number, item) in items.changed.sorted(by: { $0.key < $1.key }) {
                state(number, item, hadOrphan: try reader.orphan(number) != nil, into: &operation)
            }
        }
        try changingNamesOfARename(from: parent.rawValue, name, to: newParent.rawValue, newName) { (reader, operation) throws(FSError) in
            try change(reader, &operation)
        }
    }

    /// RENAME_WHITEOUT's whiteout at the source name, in the rename's frame: a character
    /// device 0:0 made as mknod would make it (permission bits 0, so the umask and a default
    /// ACL leave nothing; the group of a set-group-ID directory), as ext4's and tmpfs's
    /// whiteouts are. Its item goes before its name, as every new inode's does (`newNode`).
    private func leaveWhiteout(in directory: UInt64, _ name: FileName, context: RequestContext, now: RecordTime,
                               _ items: inout RenameItems, _ reader: VolumeReader,
                               _ operation: inout VolumeOperation) throws(FSError) {
        var parentItem = try items.get(directory)
        let start = NewInodeStart(kind: .characterDevice, requested: 0, parentPermissions: parentItem.permissions,
                                  parentGID: parentItem.gid, parentDefaultACL: try defaultACL(of: directory, reader),
                                  context: context)
        let index = try parentItem.takeEntryIndex(of: directory)
        items.set(directory, parentItem)
        let number = try takeInodeNumber()
        let whiteout = InodeItem(type: Self.typeCode(.characterDevice), permissions: start.permissions, uid: context.uid,
                                 gid: start.gid, linkCount: 1, size: 0, rdev: 0, accessTime: now, modificationTime: now,
                                 changeTime: now, birthTime: now, parent: 0, nextIndex: 0)
        operation.changes.append(.attributes(inode: number, whiteout))
        if let access = start.accessACL { operation.changes.append(.setXattr(inode: number, name: PosixACL.accessName, value: access)) }
        operation.changes.append(.link(directory: directory, NamedEntry(name: name.bytes, child: number, type: whiteout.type, index: index)))
        operation.born = number
    }

    /// A directory that moved: its parent is the new one, which gains the link the old one
    /// loses. Nothing for other kinds or within one directory.
    private func reparent(_ entry: NamedEntry, from oldParent: UInt64, to newParent: UInt64,
                          _ items: inout RenameItems) throws(FSError) {
        guard entry.type == Self.typeCode(.directory), oldParent != newParent else { return }
        try items.change(entry.child) { $0.parent = newParent }
        try items.change(oldParent) { $0.linkCount -= 1 }
        try items.change(newParent) { $0.linkCount += 1 }
    }

    /// EINVAL when `start` is `moving` or lies below it (a directory may not move into
    /// itself or a descendant), walking the parents up to the root. Only a move across
    /// directories can make a cycle: one within a directory skips the walk. The walk reads
    /// the ancestors' items without their inode locks: only a rename across directories
    /// changes a directory's parent, and those take turns on `renamesAcrossDirectories`,
    /// held by the caller (its reader, taken after, holds the last one's frame).
    ///
    /// Linux sets no depth limit, so neither does the walk: a tree deeper than 65,536
    /// directories answered EIO (the defect hunt of the thirty-fifth session). A chain
    /// that loops (only a damaged image's parent fields make one) is found by the
    /// directories seen, remembered once the walk is that deep (no allocation before).
    private func refuseCycle(moving ancestor: UInt64, into start: UInt64, _ reader: VolumeReader) throws(FSError) {
        var cursor = start
        var steps = 0
        var seen = Set<UInt64>()
        while true {
            if cursor == ancestor { throw .invalidArgument("cannot move a directory into itself or a descendant") }
            if cursor == 1 { return }
            let parent = try directory(cursor, in: reader).parent
            guard parent != 0, parent != cursor else { throw .damagedImage("directory \(cursor) has no parent directory") }
            steps += 1
            if steps >= 65_536 {
                guard seen.insert(cursor).inserted else {
                    throw .damagedImage("the parent fields of directory \(start)'s ancestors loop without reaching the root")
                }
            }
            cursor = parent
        }
    }
}

/// The items a rename changes, read once and changed in memory, then stated together.
struct RenameItems {
    let reader: VolumeReader
    var changed: [UInt64: InodeItem] = [:]

    init(reader: VolumeReader) { self.reader = reader }

    mutating func get(_ number: UInt64) throws(FSError) -> InodeItem {
        if let item = changed[number] { return item }
        guard let item = try reader.inode(number) else { throw .staleInode }
        return item
    }

    mutating func set(_ number: UInt64, _ item: InodeItem) { changed[number] = item }

    mutating func change(_ number: UInt64, _ body: (inout InodeItem) -> Void) throws(FSError) {
        var item = try get(number)
        body(&item)
        changed[number] = item
    }
}
