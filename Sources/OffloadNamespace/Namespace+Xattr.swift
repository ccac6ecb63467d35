import OffloadCore

// Extended attributes: setxattr, getxattr, listxattr, removexattr.
//
// Kernel contract: the kernel first asks for a value's or list's size (size 0) and then
// for the bytes; answering ERANGE when the caller's buffer is too small is the bridge's
// job, given the sizes returned here. Names and limits: see `ExtendedAttributes`.
// POSIX ACLs are the two `system.posix_acl_*` xattrs; setting the access ACL also sets
// the mode's permission bits (Inode+ACL.swift).
// Setting or removing an attribute marks ctime, as on Linux.

extension Namespace {
    public func setxattr(inode number: InodeNumber, name: [UInt8], value: [UInt8],
                         mode: XattrSetMode, context: RequestContext) throws(FSError) {
        try ExtendedAttributes.validate(name: name)
        try state.withLock { (state) throws(FSError) in
            let inode = try state.table.inode(number)
            // Linux: user.* attributes only on regular files and directories (EPERM),
            // because permission bits of other kinds do not govern their contents.
            if ExtendedAttributes.isUserName(name) && !Self.mayHaveUserAttributes(inode.kind) {
                throw .notPermitted
            }
            try state.reserveJournal(for: [inode], extra: 8 + name.count + value.count)
            switch name {
            case PosixACL.accessName:
                try inode.setAccessACL(value, mode: mode)
                if inode.permissions & SetIDRules.bits != 0 {
                    inode.permissions &= ~SetIDRules.droppedBySettingAccessACL(permissions: inode.permissions,
                                                                              fileGID: inode.gid, caller: context)
                }
            case PosixACL.defaultName: try inode.setDefaultACL(value, mode: mode)
            default: try inode.xattrs.set(name: name, value: value, mode: mode)
            }
            inode.markChanged(clock())
            state.log([inode.record])
        }
    }

    public func getxattr(inode number: InodeNumber, name: [UInt8]) throws(FSError) -> [UInt8] {
        try ExtendedAttributes.validate(name: name)
        return try state.withLock { (state) throws(FSError) -> [UInt8] in
            guard let value = try state.table.inode(number).xattrs.value(named: name) else {
                throw .noAttribute
            }
            return value
        }
    }

    public func listxattr(inode number: InodeNumber) throws(FSError) -> [[UInt8]] {
        try state.withLock { (state) throws(FSError) -> [[UInt8]] in
            try state.table.inode(number).xattrs.allNames
        }
    }

    public func removexattr(inode number: InodeNumber, name: [UInt8]) throws(FSError) {
        try ExtendedAttributes.validate(name: name)
        try state.withLock { (state) throws(FSError) in
            let inode = try state.table.inode(number)
            // Removing an ACL that is not there succeeds, as on ext4 and tmpfs.
            if PosixACL.isName(name), inode.xattrs.value(named: name) == nil { return }
            try state.reserveJournal(for: [inode], extra: 0)
            try inode.xattrs.remove(name: name)
            inode.markChanged(clock())
            state.log([inode.record])
        }
    }

    static func mayHaveUserAttributes(_ kind: FileKind) -> Bool {
        kind == .regular || kind == .directory
    }
}
