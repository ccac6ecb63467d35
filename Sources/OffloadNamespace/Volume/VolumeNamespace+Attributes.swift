#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

// setattr on format 2: chmod, chown, truncate, utimensat, with format 1's rules
// (Namespace+Attributes.swift): every change marks ctime, a size change mtime too (even
// to the same size), explicit times in the same request win, an unprivileged chown of a
// regular file clears set-user-ID (and set-group-ID with group-execute). A chmod keeps
// the access ACL in step. The size of a regular file changes by a file range of a hole
// (growing) or cut (shrinking), in the same frame as the attributes (the file's observer
// writes it, `VolumeFileJournal`); a size-only setattr that changed the file needs no
// frame of its own. A setattr with a size and other changes writes two frames, as format
// 1's does: a power cut between them keeps the size change alone.

extension VolumeNamespace {
    /// A setattr holds the inode's lock, the namespace lock shared (`changingInodes`):
    /// chmods, chowns, utimensats and truncates of different inodes run at once. The
    /// answer's attributes are read after the inode's lock is let go (a cached file's size
    /// takes the file's lock).
    public func setattr(inode number: InodeNumber, changes request: AttributeChanges,
                        context: RequestContext) throws(FSError) -> Attributes {
        guard request.size == nil else { return try resize(number, request, context) }
        let changed = try changingInodes(number.rawValue) { (reader, operation) throws(FSError) -> InodeItem in
            var item = try item(number.rawValue, in: reader)
            try apply(request, context, to: &item, of: number.rawValue, marksModification: false, reader, &operation)
            return item
        }
        return try reading { (reader) throws(FSError) -> Attributes in try attributes(number.rawValue, changed, reader) }
    }

    /// A setattr with a size: the data first, through the file as a write changes it
    /// (`changingData`: its frame, with the size and times, takes the inode's lock; a
    /// failed truncate changes nothing), then the other changes in a frame of their own,
    /// holding the inode's lock. A size change that changed the file is whole in its
    /// frame: marking the times again would add a frame, and a power cut between the two
    /// would show the new size with a time the file never had. The file is held open for
    /// it by a handle of the namespace's own, made as an open makes one (the checks first,
    /// then `openHandle` under the inode's lock), so no eviction takes the file meanwhile,
    /// and closed as a handle is (`release`: a file nothing references any more is dropped
    /// as at any last close; one only the kernel references keeps what the truncate left).
    private func resize(_ number: InodeNumber, _ request: AttributeChanges,
                        _ context: RequestContext) throws(FSError) -> Attributes {
        guard let size = request.size else { preconditionFailure("resize without a size") }
        let handle = try changingInodes(number.rawValue) { (reader, _) throws(FSError) -> FileHandle in
            let item = try item(number.rawValue, in: reader)
            if let handle = request.handle {
                guard fileCache.changing(number.rawValue, { $0.handles[handle.rawValue]?.inode }) == number.rawValue else { throw .badHandle }
            }
            guard item.type == Self.typeCode(.regular) else {
                throw item.type == Self.typeCode(.directory) ? .isDirectory : .invalidArgument("size of a non-regular file")
            }
            guard size <= OffloadedFile.maximumSize else { throw .fileTooLarge }
            return try openHandle(number.rawValue, item, flags: O_RDWR, reader)
        }
        // Closed leaving the data as the truncate left it, also on a file only the kernel
        // references (truncated through `/proc/PID/fd`): getattr shows the new size.
        defer { release(inode: number, handle: handle) }
        let resized = try changingData { () throws(FSError) -> Bool in try openedFile(number, handle).file.data.resize(to: size) }
        let changed = try changingInodes(number.rawValue) { (reader, operation) throws(FSError) -> InodeItem in
            var item = try item(number.rawValue, in: reader)
            // truncate(2) marks mtime even when the size stays.
            try apply(request, context, to: &item, of: number.rawValue, marksModification: !resized, reader, &operation)
            return item
        }
        return try reading { (reader) throws(FSError) -> Attributes in try attributes(number.rawValue, changed, reader) }
    }

    /// The changes of `request` but its size, applied to `item` (after the size change,
    /// whose frame marked its own times, as format 1), and the inode's new item appended
    /// to the frame when anything changed. `marksModification`: a size change that left
    /// the size as it was marks mtime here.
    private func apply(_ request: AttributeChanges, _ context: RequestContext, to item: inout InodeItem, of number: UInt64,
                       marksModification: Bool, _ reader: VolumeReader, _ operation: inout VolumeOperation) throws(FSError) {
        let now = clock()
        var changed = false
        if marksModification {
            item.modificationTime = now.record
            changed = true
        }
        if let permissions = request.permissions {
            item.permissions = permissions & 0o7777
            try keepAccessACLInStep(number, item.permissions, reader, &operation)
            changed = true
        }
        if request.uid != nil || request.gid != nil {
            if let uid = request.uid { item.uid = uid }
            if let gid = request.gid { item.gid = gid }
            if context.uid != 0 && item.type == Self.typeCode(.regular) {
                item.permissions &= ~0o4000
                if item.permissions & 0o010 != 0 { item.permissions &= ~0o2000 }
            }
            changed = true
        }
        if let accessTime = request.accessTime {
            item.accessTime = NamespaceState.resolve(accessTime, now: now).record
            changed = true
        }
        if let modificationTime = request.modificationTime {
            item.modificationTime = NamespaceState.resolve(modificationTime, now: now).record
            changed = true
        }
        if let changeTime = request.changeTime {
            item.changeTime = changeTime.record
        } else if changed {
            item.changeTime = now.record
        }
        if changed || request.changeTime != nil { operation.changes.append(.attributes(inode: number, item)) }
    }

    /// After a chmod: the access ACL's owner, other and mask (or owning-group) entries take
    /// the new bits (format 1's `Inode.permissionsChanged`).
    func keepAccessACLInStep(_ number: UInt64, _ permissions: UInt32, _ reader: VolumeReader,
                             _ operation: inout VolumeOperation) throws(FSError) {
        guard let value = try reader.xattr(number, name: PosixACL.accessName), var acl = try? PosixACL(xattr: value) else {
            return
        }
        acl.applyChmod(permissions)
        operation.changes.append(.setXattr(inode: number, name: PosixACL.accessName, value: acl.xattr))
    }
}
