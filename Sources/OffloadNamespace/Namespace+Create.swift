import OffloadCore

// Making names: mknod, mkdir, symlink, link (create is in Namespace+Open.swift).
// Each success hands the kernel one reference to the inode (lookupCount += 1).

extension NamespaceState {
    /// Adds a new inode under `parent`/`name`.
    ///
    /// Ownership: the caller's uid; the caller's gid, or the parent's gid when the parent
    /// has the set-group-ID bit, in which case a new subdirectory inherits the bit too
    /// (BSD group semantics, as Linux does it in `inode_init_owner`). Permissions: the
    /// parent's default ACL, or else the caller's umask, limits them (the kernel leaves
    /// both to us when ACLs are on; see `Inode.aclsForNewChild`); symlinks keep 0777.
    /// `makeContent` runs only once the name is known to be free.
    mutating func makeNode(parent: InodeNumber, name: FileName, kind: FileKind,
                           permissions: UInt32, rdev: UInt64, context: RequestContext,
                           now: Timestamp, makeContent: () -> Inode.Content) throws(FSError) -> Inode {
        let (parentInode, directory) = try table.liveDirectory(parent)
        guard directory.entry(named: name) == nil else { throw .exists }
        if kind == .directory {
            guard parentInode.linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
        }
        let start = NewInodeStart(kind: kind, requested: permissions, parentPermissions: parentInode.permissions,
                                  parentGID: parentInode.gid,
                                  parentDefaultACL: parentInode.xattrs.value(named: PosixACL.defaultName), context: context)
        let (mode, gid) = (start.permissions, start.gid)
        let inherited = (access: start.accessACL, default: start.defaultACL)
        // The new inode (target, inherited ACLs), its entry, the parent.
        let content = makeContent()
        var target = 0
        if case .symlink(let t) = content { target = t.count }
        let acls = (inherited.access?.count ?? 0) + (inherited.default?.count ?? 0) + 64
        try reserveJournal(for: [parentInode], extra: 110 + target + acls + 21 + name.bytes.count + 9)
        let inode = try table.allocate(kind: kind, permissions: mode, uid: context.uid, gid: gid,
                                       rdev: rdev, content: content, now: now)
        inode.inheritACLs(access: inherited.access, default: inherited.default)
        directory.insert(name, inode: inode.number, kind: kind)
        if kind == .directory { parentInode.linkCount += 1 }
        parentInode.markModified(now)
        inode.lookupCount += 1
        observe(inode)
        log([inode.record, .entry(directory: parent.rawValue, name: name.bytes, child: inode.number.rawValue),
             parentInode.record])
        return inode
    }

    mutating func link(inode number: InodeNumber, newParent: InodeNumber, newName: FileName,
                       now: Timestamp) throws(FSError) -> Inode {
        let inode = try table.inode(number)
        guard inode.kind != .directory else { throw .notPermitted }
        let (parentInode, directory) = try table.liveDirectory(newParent)
        guard directory.entry(named: newName) == nil else { throw .exists }
        // Linux refuses to give an unlinked file a new name (only O_TMPFILE files may).
        guard inode.linkCount > 0 else { throw .notFound }
        guard inode.linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
        try reserveJournal(for: [inode, parentInode], extra: 21 + newName.bytes.count)
        directory.insert(newName, inode: number, kind: inode.kind)
        inode.linkCount += 1
        inode.lookupCount += 1
        inode.markChanged(now)
        parentInode.markModified(now)
        log([inode.record, .entry(directory: newParent.rawValue, name: newName.bytes, child: number.rawValue),
             parentInode.record])
        return inode
    }
}

extension Namespace {
    /// Regular files, FIFOs, sockets and device nodes (rdev kept for devices only).
    /// A file type of 0 means a regular file, as mknod(2) says; directories, symlinks
    /// and unknown types are EINVAL.
    public func mknod(parent: InodeNumber, name: FileName, mode: UInt32, rdev: UInt64,
                      context: RequestContext) throws(FSError) -> Attributes {
        let (kind, rdev) = try NewInodeArguments.mknod(mode: mode, rdev: rdev)
        return try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            try state.makeNode(parent: parent, name: name, kind: kind, permissions: mode,
                               rdev: rdev, context: context, now: clock()) {
                kind == .regular ? .regular(makeRegularFile()) : .special
            }.snapshot()
        }.resolved()
    }

    public func mkdir(parent: InodeNumber, name: FileName, mode: UInt32,
                      context: RequestContext) throws(FSError) -> Attributes {
        try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            try state.makeNode(parent: parent, name: name, kind: .directory, permissions: mode,
                               rdev: 0, context: context, now: clock()) {
                .directory(Directory(parent: parent))
            }.snapshot()
        }.resolved()
    }

    /// Symlinks are 0777 (their permissions are never checked). The target is stored as
    /// given: resolving it, and so ELOOP, is the kernel's job. An empty target is ENOENT
    /// and one longer than 4095 bytes ENAMETOOLONG, as symlink(2) answers.
    public func symlink(parent: InodeNumber, name: FileName, target: [UInt8],
                        context: RequestContext) throws(FSError) -> Attributes {
        try NewInodeArguments.checkSymlinkTarget(target)
        return try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            try state.makeNode(parent: parent, name: name, kind: .symlink, permissions: 0o777,
                               rdev: 0, context: context, now: clock()) {
                .symlink(target: target)
            }.snapshot()
        }.resolved()
    }

    /// A hard link. Directories cannot be linked (EPERM); more than
    /// `maximumLinkCount` names is EMLINK.
    public func link(inode: InodeNumber, newParent: InodeNumber,
                     newName: FileName) throws(FSError) -> Attributes {
        try state.withLock { (state) throws(FSError) -> AttributeSnapshot in
            try state.link(inode: inode, newParent: newParent, newName: newName, now: clock()).snapshot()
        }.resolved()
    }

    func makeRegularFile() -> RegularFile {
        RegularFile(data: OffloadedFile(store: store, limiter: memoryLimiter))
    }
}
