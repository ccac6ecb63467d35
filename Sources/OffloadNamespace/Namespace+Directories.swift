import OffloadCore

// Listing directories: opendir, readdir, readdirplus, releasedir, fsyncdir.
//
// Cookies: "." is 1, ".." is 2, entries carry their own stable cookie (see
// `Directory`). Offset 0 starts with "."; any other offset resumes after the entry
// whose cookie it is. A listing reads the directory as it is at each call, so entries
// created meanwhile may appear (at the end) and removed ones disappear, but no entry
// that stays is returned twice or skipped. A removed directory lists as empty.

extension NamespaceState {
    /// The next at most `limit` entries after cookie `offset`, each with its inode.
    func listing(directory number: InodeNumber, handle: FileHandle, offset: UInt64,
                 limit: Int) throws(FSError) -> [(entry: DirectoryEntry, inode: Inode?)] {
        try handles.requireDirectory(handle, inode: number)
        let (inode, directory) = try table.directory(number)
        guard inode.linkCount > 0, limit > 0 else { return [] }
        var result: [(entry: DirectoryEntry, inode: Inode?)] = []
        if offset < Directory.dotCookie {
            result.append((DirectoryEntry(name: [0x2E], inode: number, kind: .directory,
                                          nextOffset: Directory.dotCookie), nil))
        }
        if offset < Directory.dotDotCookie && result.count < limit {
            result.append((DirectoryEntry(name: [0x2E, 0x2E], inode: directory.parent, kind: .directory,
                                          nextOffset: Directory.dotDotCookie), nil))
        }
        let after = max(offset, Directory.dotDotCookie)
        for (name, entry) in directory.entries(after: after, limit: limit - result.count) {
            let child = try table.inode(entry.inode)
            result.append((DirectoryEntry(name: name.bytes, inode: entry.inode, kind: entry.kind,
                                          nextOffset: entry.cookie), child))
        }
        return result
    }
}

extension Namespace {
    public func opendir(inode number: InodeNumber) throws(FSError) -> FileHandle {
        try state.withLock { (state) throws(FSError) -> FileHandle in
            let (inode, _) = try state.table.directory(number)
            inode.openCount += 1
            return state.handles.insert(OpenHandle(inode: number, kind: .directory))
        }
    }

    public func readdir(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                        limit: Int) throws(FSError) -> [DirectoryEntry] {
        try state.withLock { (state) throws(FSError) -> [DirectoryEntry] in
            try state.listing(directory: inode, handle: handle, offset: offset, limit: limit)
                .map(\.entry)
        }
    }

    /// Each entry other than "." and ".." comes with attributes and counts as one lookup.
    public func readdirplus(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                            limit: Int) throws(FSError) -> [(entry: DirectoryEntry, attributes: Attributes?)] {
        let listed = try state.withLock { (state) throws(FSError) -> [(DirectoryEntry, AttributeSnapshot?)] in
            try state.listing(directory: inode, handle: handle, offset: offset, limit: limit)
                .map { (entry, child) in
                    guard let child else { return (entry, nil) }
                    child.lookupCount += 1
                    return (entry, child.snapshot())
                }
        }
        return listed.map { (entry: $0.0, attributes: $0.1?.resolved()) }
    }

    public func releasedir(inode number: InodeNumber, handle: FileHandle) {
        state.withLock { state in
            guard state.handles.remove(handle, inode: number) != nil,
                  let inode = try? state.table.inode(number) else { return }
            precondition(inode.openCount > 0, "directory handle released with none open")
            inode.openCount -= 1
            guard inode.isUnreferenced else { return }
            var records: [MetadataRecord] = []
            _ = state.dropIfUnused(inode, into: &records)
            state.logUnreserved(records)
        }
    }

    /// Entries are in the journal the moment they change; fsyncdir makes it durable.
    public func fsyncdir(inode: InodeNumber, handle: FileHandle, dataOnly: Bool) throws(FSError) {
        let journal = try state.withLock { (state) throws(FSError) -> NamespaceJournal? in
            try state.handles.requireDirectory(handle, inode: inode)
            return state.journal
        }
        try journal?.sync()
    }
}
