import OffloadCore

// setattr: chmod, chown, truncate / ftruncate, utimensat.
//
// A size change is done first, outside the namespace lock (it is file I/O and may
// fail with ENOSPC or EFBIG), and only then are the other changes applied, so that a
// failed truncate changes nothing. Every change marks ctime; a size change also marks
// mtime, as truncate(2) does even when the size stays the same. Explicit times passed
// in the same request win over those implicit marks. A size change that changed the
// file was journaled with its new times in one frame (`FileJournal`); a size-only
// setattr then needs no frame of its own.

extension NamespaceState {
    /// The file a size change applies to, after checking it may apply: directories are
    /// EISDIR, other non-regular files EINVAL. With a handle (ftruncate) the handle must
    /// be one we gave out for this inode.
    func fileToResize(inode number: InodeNumber, handle: FileHandle?) throws(FSError) -> RegularFile {
        if let handle {
            // Not checked for write access: open(O_RDONLY | O_TRUNC) truncates through
            // the handle it just opened, and the kernel has checked permission already.
            return try handles.file(handle, inode: number).file
        }
        let inode = try table.inode(number)
        switch inode.content {
        case .regular(let file): return file
        case .directory: throw .isDirectory
        case .symlink, .special: throw .invalidArgument("size of a non-regular file")
        }
    }

    /// Applies every change except the size, which the caller has already made
    /// (`resized`: and which changed the file, so its times are marked already).
    /// Returns the inode and whether anything changed here.
    mutating func applyAttributeChanges(inode number: InodeNumber, changes: AttributeChanges, resized: Bool,
                               context: RequestContext, now: Timestamp) throws(FSError) -> (Inode, Bool) {
        let inode = try table.inode(number)
        try reserveJournal(for: [inode], extra: 0)
        var changed = false
        if changes.size != nil && !resized {
            inode.markModified(now)
            changed = true
        }
        if let permissions = changes.permissions {
            inode.permissions = permissions & 0o7777
            inode.permissionsChanged()
            changed = true
        }
        if changes.uid != nil || changes.gid != nil {
            if let uid = changes.uid { inode.uid = uid }
            if let gid = changes.gid { inode.gid = gid }
            // chown(2) on Linux: an unprivileged caller loses the set-user-ID bit, and
            // the set-group-ID bit when group-execute is set (without it the bit marks
            // mandatory locking, not privilege). Only regular files carry privilege.
            if context.uid != 0 && inode.kind == .regular {
                inode.permissions &= ~0o4000
                if inode.permissions & 0o010 != 0 { inode.permissions &= ~0o2000 }
            }
            changed = true
        }
        if let accessTime = changes.accessTime {
            inode.accessTime = Self.resolve(accessTime, now: now)
            changed = true
        }
        if let modificationTime = changes.modificationTime {
            inode.modificationTime = Self.resolve(modificationTime, now: now)
            changed = true
        }
        if let changeTime = changes.changeTime {
            inode.changeTime = changeTime
        } else if changed {
            inode.changeTime = now
        }
        return (inode, changed || changes.changeTime != nil)
    }

    static func resolve(_ change: TimeChange, now: Timestamp) -> Timestamp {
        switch change {
        case .now: return now
        case .set(let time): return time
        }
    }
}

extension Namespace {
    public func setattr(inode: InodeNumber, changes: AttributeChanges,
                        context: RequestContext) throws(FSError) -> Attributes {
        var resized = false
        if let size = changes.size {
            let file = try state.withLock { (state) throws(FSError) -> RegularFile in
                try state.fileToResize(inode: inode, handle: changes.handle)
            }
            guard size <= OffloadedFile.maximumSize else { throw .fileTooLarge }
            resized = try file.data.resize(to: size)
        }
        return try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            let (node, changed) = try state.applyAttributeChanges(inode: inode, changes: changes, resized: resized,
                                                                  context: context, now: clock())
            if changed { state.log([node.record]) }
            return node.snapshot()
        }.resolved()
    }
}
