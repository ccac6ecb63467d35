import OffloadCore

// Removing names: unlink and rmdir. The inode itself lives on while the kernel holds
// references or handles are open (see `Namespace`, "Inode lifetime").

extension NamespaceState {
    /// Removes a non-directory name; returns what to do with the storage of an inode no
    /// name or handle keeps any more.
    mutating func unlink(parent: InodeNumber, name: FileName, now: Timestamp) throws(FSError) -> StorageDisposal? {
        let (parentInode, directory) = try table.directory(parent)
        guard let entry = directory.entry(named: name) else { throw .notFound }
        guard entry.kind != .directory else { throw .isDirectory }
        let inode = try table.inode(entry.inode)
        try reserveJournal(for: [parentInode, inode], extra: 13 + name.bytes.count + 9)
        directory.remove(name)
        precondition(inode.linkCount > 0, "a named inode has no links")
        inode.linkCount -= 1
        inode.markChanged(now)
        parentInode.markModified(now)
        var records: [MetadataRecord] = [.removeEntry(directory: parent.rawValue, name: name.bytes), parentInode.record]
        defer { log(records) }
        return dropIfUnused(inode, into: &records)
    }

    /// Removes an empty directory. Its link count becomes 0 (as Linux shows for an open,
    /// removed directory) and the parent loses the link its ".." held.
    mutating func rmdir(parent: InodeNumber, name: FileName, now: Timestamp) throws(FSError) {
        let (parentInode, directory) = try table.directory(parent)
        guard let entry = directory.entry(named: name) else { throw .notFound }
        guard entry.kind == .directory else { throw .notDirectory }
        let (inode, removed) = try table.directory(entry.inode)
        guard removed.isEmpty else { throw .notEmpty }
        try reserveJournal(for: [parentInode, inode], extra: 13 + name.bytes.count + 9)
        directory.remove(name)
        inode.linkCount = 0
        inode.markChanged(now)
        parentInode.linkCount -= 1
        parentInode.markModified(now)
        var records: [MetadataRecord] = [.removeEntry(directory: parent.rawValue, name: name.bytes), parentInode.record]
        _ = dropIfUnused(inode, into: &records)
        log(records)
    }
}

extension Namespace {
    public func unlink(parent: InodeNumber, name: FileName) throws(FSError) {
        let freed = try state.withLock { (state) throws(FSError) -> StorageDisposal? in
            try state.unlink(parent: parent, name: name, now: clock())
        }
        freed?.run()
    }

    public func rmdir(parent: InodeNumber, name: FileName) throws(FSError) {
        try state.withLock { (state) throws(FSError) in
            try state.rmdir(parent: parent, name: name, now: clock())
        }
    }
}
