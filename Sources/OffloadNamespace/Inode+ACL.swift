import OffloadCore

// POSIX ACLs on an inode: the jobs the kernel leaves to a FUSE filesystem that asks for
// FUSE_POSIX_ACL (see `PosixACL`). The ACLs themselves are ordinary xattrs, so they are
// journaled and checkpointed with the inode like any other.
//
// Locking: called under the namespace lock, like everything that touches an `Inode`.

extension Inode {
    /// setxattr of `system.posix_acl_access`: the mode's rwx bits become what the ACL
    /// says (the kernel leaves this to the filesystem), and an ACL the mode says fully is
    /// not kept, as posix_acl_update_mode does for ext4. The xattr changes first, so a
    /// failure (no space) leaves the mode as it was.
    func setAccessACL(_ value: [UInt8], mode: XattrSetMode) throws(FSError) {
        let acl = try PosixACL(xattr: value)
        let (bits, equivalent) = acl.modeBits
        if !equivalent {
            try xattrs.set(name: PosixACL.accessName, value: acl.xattr, mode: mode)
        } else if xattrs.value(named: PosixACL.accessName) != nil {
            try xattrs.remove(name: PosixACL.accessName)
        }
        permissions = permissions & ~0o777 | bits
    }

    /// setxattr of `system.posix_acl_default`: directories only (EACCES otherwise, as
    /// set_posix_acl answers; the kernel checks first, this keeps the namespace honest
    /// without it).
    func setDefaultACL(_ value: [UInt8], mode: XattrSetMode) throws(FSError) {
        guard kind == .directory else { throw .permissionDenied }
        try xattrs.set(name: PosixACL.defaultName, value: PosixACL(xattr: value).xattr, mode: mode)
    }

    /// After a chmod: the access ACL's owner, other and mask (or owning-group) entries
    /// take the new bits, as posix_acl_chmod does (the kernel only forgets its cached
    /// ACL and expects the filesystem to have done this).
    func permissionsChanged() {
        guard let value = xattrs.value(named: PosixACL.accessName), var acl = try? PosixACL(xattr: value) else {
            return
        }
        acl.applyChmod(permissions)
        do {
            try xattrs.set(name: PosixACL.accessName, value: acl.xattr, mode: .replaceOnly)
        } catch {
            preconditionFailure("an ACL of unchanged size could not replace itself: \(error)")
        }
    }

    /// What a new inode made in this directory starts with (posix_acl_create): with a
    /// default ACL, the requested permission bits limited by that ACL (the umask is not
    /// applied), an access ACL when the bits do not say everything, and for a directory
    /// a copy of the default ACL; without one, the bits less the creator's umask.
    func aclsForNewChild(permissions: UInt32, umask: UInt32, isDirectory: Bool)
        -> (permissions: UInt32, access: [UInt8]?, default: [UInt8]?) {
        Self.aclsForNewChild(defaultACL: xattrs.value(named: PosixACL.defaultName), permissions: permissions,
                             umask: umask, isDirectory: isDirectory)
    }

    /// `aclsForNewChild` of a parent whose default ACL (its xattr value) is `defaultACL`.
    static func aclsForNewChild(defaultACL value: [UInt8]?, permissions: UInt32, umask: UInt32, isDirectory: Bool)
        -> (permissions: UInt32, access: [UInt8]?, default: [UInt8]?) {
        guard let value, var acl = try? PosixACL(xattr: value) else {
            return (permissions & ~(umask & 0o777), nil, nil)
        }
        let (masked, needsACL) = acl.maskForCreate(permissions)
        return (masked, needsACL ? acl.xattr : nil, isDirectory ? value : nil)
    }

    /// Gives a new inode the ACLs `aclsForNewChild` chose. They are no larger than the
    /// parent's, which fitted, so setting them on an inode with no xattrs cannot fail.
    func inheritACLs(access: [UInt8]?, default defaultACL: [UInt8]?) {
        precondition(xattrs.isEmpty, "ACLs are inherited by new inodes only")
        do {
            if let access { try xattrs.set(name: PosixACL.accessName, value: access, mode: .createOnly) }
            if let defaultACL { try xattrs.set(name: PosixACL.defaultName, value: defaultACL, mode: .createOnly) }
        } catch {
            preconditionFailure("inherited ACLs did not fit a new inode: \(error)")
        }
    }
}
