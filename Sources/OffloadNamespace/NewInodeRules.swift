import OffloadCore

/// What a new inode starts with, in both formats' namespaces: its permission bits (the
/// parent's default ACL, or else the caller's umask, limits them; symlinks keep 0777), the
/// ACLs it inherits, and its group (the caller's, or the parent's when the parent has the
/// set-group-ID bit, which a new subdirectory inherits: BSD group semantics, as Linux does
/// it in `inode_init_owner`).
struct NewInodeStart {
    var permissions: UInt32
    var gid: UInt32
    var accessACL: [UInt8]?
    var defaultACL: [UInt8]?

    init(kind: FileKind, requested: UInt32, parentPermissions: UInt32, parentGID: UInt32,
         parentDefaultACL: [UInt8]?, context: RequestContext) {
        var mode = requested & 0o7777
        if kind != .symlink {
            let start = Inode.aclsForNewChild(defaultACL: parentDefaultACL, permissions: mode, umask: context.umask,
                                              isDirectory: kind == .directory)
            mode = start.permissions
            (accessACL, defaultACL) = (start.access, start.default)
        }
        gid = context.gid
        if parentPermissions & 0o2000 != 0 {
            gid = parentGID
            if kind == .directory { mode |= 0o2000 }
        }
        permissions = mode
    }
}

/// The arguments of the calls that make inodes, checked alike by both formats' namespaces.
enum NewInodeArguments {
    /// mknod(2)'s kind: a file type of 0 means a regular file; directories, symlinks and
    /// unknown types are EINVAL. `rdev` is kept for devices only.
    static func mknod(mode: UInt32, rdev: UInt64) throws(FSError) -> (kind: FileKind, rdev: UInt64) {
        let typed = mode & 0o170000 == 0 ? mode | FileKind.regular.modeBits : mode
        guard let kind = FileKind(mode: typed), kind != .directory, kind != .symlink else {
            throw .invalidArgument("mknod cannot make this kind of file")
        }
        return (kind, kind == .characterDevice || kind == .blockDevice ? rdev : 0)
    }

    /// symlink(2)'s target: empty is ENOENT, longer than 4095 bytes ENAMETOOLONG; resolving
    /// it (and so ELOOP) is the kernel's job.
    static func checkSymlinkTarget(_ target: [UInt8]) throws(FSError) {
        guard !target.isEmpty else { throw .notFound }
        guard target.count <= Namespace.maximumSymlinkTargetLength else { throw .nameTooLong }
        guard !target.contains(0) else { throw .invalidArgument("NUL in symlink target") }
    }
}
