import OffloadCore

// Listing directories and extended attributes on format 2.
//
// Readdir cookies: "." is 1, ".." is 2, an entry's cookie is its index (3, 4, ...: indexes
// only grow, so a listing in progress neither repeats nor skips an entry that stays), as
// format 1's `Directory` cookies. Xattrs: format 1's names, limits and ACL rules
// (Namespace+Xattr.swift, Inode+ACL.swift); a listing's order is the items' (by hash).

extension VolumeNamespace {
    public func opendir(inode number: InodeNumber) throws(FSError) -> FileHandle {
        try reading { (reader) throws(FSError) -> FileHandle in
            _ = try directory(number.rawValue, in: reader)
            return FileHandle(handles.openDirectory(number.rawValue))
        }
    }

    public func releasedir(inode number: InodeNumber, handle: FileHandle) {
        handles.closeDirectory(handle.rawValue, on: number.rawValue)
    }

    public func readdir(inode number: InodeNumber, handle: FileHandle, offset: UInt64,
                        limit: Int) throws(FSError) -> [DirectoryEntry] {
        try reading { (reader) throws(FSError) -> [DirectoryEntry] in
            try listing(number.rawValue, handle: handle, offset: offset, limit: limit, withItems: false, reader).map(\.entry)
        }
    }

    /// Each entry other than "." and ".." comes with its attributes and counts as one lookup.
    /// The references are counted once every entry's attributes are read: a read that
    /// throws (an I/O error, a damaged item) answers the request with that error, and
    /// the kernel would never forget references counted for the entries before it (an
    /// unlinked one among them then kept its blocks until the next mount).
    public func readdirplus(inode number: InodeNumber, handle: FileHandle, offset: UInt64,
                            limit: Int) throws(FSError) -> [(entry: DirectoryEntry, attributes: Attributes?)] {
        try reading { (reader) throws(FSError) -> [(entry: DirectoryEntry, attributes: Attributes?)] in
            var result: [(entry: DirectoryEntry, attributes: Attributes?)] = []
            for (entry, child) in try listing(number.rawValue, handle: handle, offset: offset, limit: limit, withItems: true, reader) {
                result.append((entry, try child.map { (child) throws(FSError) in try attributes(entry.inode.rawValue, child, reader) }))
            }
            for (entry, attributes) in result where attributes != nil { referenced(entry.inode.rawValue) }
            return result
        }
    }

    /// The next at most `limit` entries after cookie `offset`, each with its inode's item
    /// when `withItems` (readdirplus; a readdir needs only the entries, whose type is in
    /// the entry: reading each child's item made a cold listing one more tree lookup per
    /// entry, up to 128 a 4 KiB request);
    /// a removed directory lists as empty.
    private func listing(_ number: UInt64, handle: FileHandle, offset: UInt64, limit: Int, withItems: Bool,
                         _ reader: VolumeReader) throws(FSError) -> [(entry: DirectoryEntry, child: InodeItem?)] {
        guard handles.isOpen(handle.rawValue, on: number) else { throw .badHandle }
        let item = try directory(number, in: reader)
        guard item.linkCount > 0, limit > 0 else { return [] }
        var result: [(entry: DirectoryEntry, child: InodeItem?)] = []
        if offset < Directory.dotCookie {
            result.append((DirectoryEntry(name: [0x2E], inode: InodeNumber(number), kind: .directory, nextOffset: Directory.dotCookie), nil))
        }
        if offset < Directory.dotDotCookie && result.count < limit {
            result.append((DirectoryEntry(name: [0x2E, 0x2E], inode: InodeNumber(item.parent), kind: .directory,
                                          nextOffset: Directory.dotDotCookie), nil))
        }
        // The last cookie is no entry's (`ItemCoding.checkIndex`), and nothing follows it.
        guard offset < UInt64.max else { return result }
        let from = max(offset, Directory.dotDotCookie) + 1
        for entry in try reader.entries(directory: number, from: from, limit: limit - result.count) {
            let child = withItems ? try self.item(entry.child, in: reader) : nil
            guard let kind = FileKind(mode: UInt32(entry.type) << 12) else {
                throw .damagedImage("entry \(entry.index) of directory \(number) has type \(entry.type)")
            }
            result.append((DirectoryEntry(name: entry.name, inode: InodeNumber(entry.child), kind: kind, nextOffset: entry.index), child))
        }
        return result
    }

    /// Entries are in the journal the moment they change; fsyncdir makes it durable,
    /// syncing outside the namespace lock as fsync does.
    public func fsyncdir(inode number: InodeNumber, handle: FileHandle, dataOnly: Bool) throws(FSError) {
        try readingOpenFile { () throws(FSError) in
            guard handles.isOpen(handle.rawValue, on: number.rawValue) else { throw .badHandle }
        }
        try volume.sync()
    }

    // MARK: - Extended attributes

    /// Holds the inode's lock, the namespace lock shared (`changingInodes`), as
    /// removexattr does. A default ACL set on a directory is set holding the lock every
    /// create in it holds (`changingNames`), so the directories known to lack one stay
    /// exact.
    public func setxattr(inode number: InodeNumber, name: [UInt8], value: [UInt8], mode: XattrSetMode,
                         context: RequestContext) throws(FSError) {
        try ExtendedAttributes.validate(name: name)
        try changingInodes(number.rawValue) { (reader, operation) throws(FSError) in
            var item = try item(number.rawValue, in: reader)
            guard let kind = FileKind(mode: UInt32(item.type) << 12) else { throw .damagedImage("inode \(number) has type \(item.type)") }
            if ExtendedAttributes.isUserName(name) && !Namespace.mayHaveUserAttributes(kind) { throw .notPermitted }
            var stored = value
            if name == PosixACL.accessName {
                // The mode's rwx bits become what the ACL says; an ACL the mode says fully is
                // not kept (format 1's `setAccessACL`).
                let acl = try PosixACL(xattr: value)
                let (bits, equivalent) = acl.modeBits
                stored = acl.xattr
                if equivalent {
                    if try reader.xattr(number.rawValue, name: name) != nil { operation.changes.append(.removeXattr(inode: number.rawValue, name: name)) }
                } else {
                    try checkSet(number.rawValue, name: name, value: stored, mode: mode, reader)
                    operation.changes.append(.setXattr(inode: number.rawValue, name: name, value: stored))
                }
                item.permissions = item.permissions & ~0o777 | bits
                if item.permissions & SetIDRules.bits != 0 {
                    // Read under the inode's lock only then: /proc/PID/status, rarely.
                    item.permissions &= ~SetIDRules.droppedBySettingAccessACL(permissions: item.permissions,
                                                                             fileGID: item.gid, caller: context)
                }
            } else {
                if name == PosixACL.defaultName {
                    guard kind == .directory else { throw .permissionDenied }
                    stored = try PosixACL(xattr: value).xattr
                    directoriesWithoutDefaultACLHolder.withLock { _ = $0.remove(number.rawValue) }
                }
                try checkSet(number.rawValue, name: name, value: stored, mode: mode, reader)
                operation.changes.append(.setXattr(inode: number.rawValue, name: name, value: stored))
            }
            item.changeTime = clock().record
            operation.changes.append(.attributes(inode: number.rawValue, item))
        } then: { (_, _) throws(FSError) in
            forgetCapabilityAbsence(number, name)
        }
    }

    /// Format 1's limits and modes (`ExtendedAttributes.set`): value length, the create and
    /// replace flags, the total of an inode's values and the length of its name list.
    private func checkSet(_ number: UInt64, name: [UInt8], value: [UInt8], mode: XattrSetMode,
                          _ reader: VolumeReader) throws(FSError) {
        guard value.count <= ExtendedAttributes.maximumValueLength else { throw .argumentListTooLong }
        let old = try reader.xattr(number, name: name)
        switch (mode, old) {
        case (.createOnly, .some), (.createAndReplace, .some): throw .exists
        case (.replaceOnly, .none), (.createAndReplace, .none): throw .noAttribute
        default: break
        }
        let names = try reader.xattrNames(number)
        var total = 0
        for other in names where other != name { total += try reader.xattr(number, name: other)?.count ?? 0 }
        guard total + value.count <= ExtendedAttributes.maximumTotalValueBytes else { throw .noSpace }
        if old == nil {
            let listLength = names.reduce(0) { $0 + $1.count + 1 }
            guard listLength + name.count + 1 <= ExtendedAttributes.maximumListLength else { throw .noSpace }
        }
    }

    /// "security.capability" of a cached file is answered from its mark
    /// (`VolumeCachedFile.lacksCapability`) when it is known absent; else read from the
    /// tree with a reader taken after the mark's word was loaded, and marked absent only
    /// if no change of the attribute came since (`markCapabilityAbsent`): a change counts
    /// itself after its frame, and a reader taken after that count holds the frame.
    public func getxattr(inode number: InodeNumber, name: [UInt8]) throws(FSError) -> [UInt8] {
        try ExtendedAttributes.validate(name: name)
        let cached = name == ExtendedAttributes.capabilityName ? fileCache.file(number.rawValue) : nil
        let word = cached?.capabilityWord
        if let word, VolumeCachedFile.lacksCapability(word) {
            if let journalFailure { throw journalFailure }
            throw .noAttribute
        }
        return try reading { (reader) throws(FSError) -> [UInt8] in
            _ = try item(number.rawValue, in: reader)
            guard let value = try reader.xattr(number.rawValue, name: name) else {
                if let cached, let word { cached.markCapabilityAbsent(ifStill: word) }
                throw .noAttribute
            }
            return value
        }
    }

    public func listxattr(inode number: InodeNumber) throws(FSError) -> [[UInt8]] {
        try reading { (reader) throws(FSError) -> [[UInt8]] in
            _ = try item(number.rawValue, in: reader)
            return try reader.xattrNames(number.rawValue)
        }
    }

    public func removexattr(inode number: InodeNumber, name: [UInt8]) throws(FSError) {
        try ExtendedAttributes.validate(name: name)
        try changingInodes(number.rawValue) { (reader, operation) throws(FSError) in
            var item = try item(number.rawValue, in: reader)
            guard try reader.xattr(number.rawValue, name: name) != nil else {
                // Removing an ACL that is not there succeeds, as on ext4 and tmpfs (the
                // kernel sends `setfacl -k`'s and `acl_delete_def_file`'s removal so). No
                // frame: ctime stays, as on ext4 (tmpfs sets it).
                if PosixACL.isName(name) { return }
                throw .noAttribute
            }
            item.changeTime = clock().record
            operation.changes = [.removeXattr(inode: number.rawValue, name: name), .attributes(inode: number.rawValue, item)]
        } then: { (_, _) throws(FSError) in
            forgetCapabilityAbsence(number, name)
        }
    }

    /// A change of "security.capability" on a cached file, after its frame (`then:` of
    /// the change): counted, and the mark cleared (`VolumeCachedFile.capabilityChanged`).
    private func forgetCapabilityAbsence(_ number: InodeNumber, _ name: [UInt8]) {
        guard name == ExtendedAttributes.capabilityName else { return }
        fileCache.file(number.rawValue)?.capabilityChanged()
    }
}
