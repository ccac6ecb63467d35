import CFuse
#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadNamespace

/// Handlers for extended attributes and statfs.
enum XattrHandlers {
    /// `system.posix_acl_access` and `system.posix_acl_default`.
    private static let aclPrefix = Array("system.posix_acl_".utf8)

    /// True for an ACL xattr while the kernel does not enforce ACLs (see
    /// `BridgeContext.posixACLs`): such requests are answered EOPNOTSUPP.
    private static func refusedACL(_ request: fuse_req_t, _ name: UnsafePointer<CChar>?) -> Bool {
        guard let name, !BridgeContext.of(request).posixACLs.load(ordering: .acquiring) else { return false }
        return (try? cStringBytes(name))?.starts(with: aclPrefix) == true
    }

    static func setxattr(_ request: fuse_req_t, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                         _ value: UnsafePointer<CChar>?, _ size: Int, _ flags: Int32) {
        let fs = BridgeContext.of(request).fileSystem
        let mode: XattrSetMode
        switch flags {
        case 0: mode = .createOrReplace
        case Int32(OFFLOADFS_XATTR_CREATE): mode = .createOnly
        case Int32(OFFLOADFS_XATTR_REPLACE): mode = .replaceOnly
        case Int32(OFFLOADFS_XATTR_CREATE | OFFLOADFS_XATTR_REPLACE): mode = .createAndReplace
        default: return Reply(request, "setxattr").errno(EINVAL)
        }
        if refusedACL(request, name) { return Reply(request, "setxattr").error(.notSupported) }
        let caller = RequestContext(request)
        Reply(request, "setxattr").done(Result { () throws(FSError) in
            let bytes: [UInt8] = value.map { pointer in
                pointer.withMemoryRebound(to: UInt8.self, capacity: size) {
                    Array(UnsafeBufferPointer(start: $0, count: size))
                }
            } ?? []
            // An access ACL may take S_ISGID away (`SetIDRules`); the kernel reads the
            // attributes again after an ACL's setxattr (fuse_set_acl).
            try fs.setxattr(inode: InodeNumber(inode), name: cStringBytes(name), value: bytes, mode: mode, context: caller)
        })
    }

    static func getxattr(_ request: fuse_req_t, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
        if refusedACL(request, name) { return Reply(request, "getxattr").error(.notSupported) }
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "getxattr").xattr(Result { () throws(FSError) in
            try fs.getxattr(inode: InodeNumber(inode), name: cStringBytes(name))
        }, bufferSize: size)
    }

    /// The list is the names, each followed by a NUL, as listxattr(2) returns it.
    /// `trusted.*` names are listed to a caller holding CAP_SYS_ADMIN alone, as ext4 and
    /// tmpfs list them (FUSE passes listxattr on unfiltered; the kernel refuses the other
    /// requests on such names itself).
    static func listxattr(_ request: fuse_req_t, _ inode: fuse_ino_t, _ size: Int) {
        let fs = BridgeContext.of(request).fileSystem
        let caller = RequestContext(request)
        Reply(request, "listxattr").xattr(Result { () throws(FSError) in
            ExtendedAttributes.visibleNames(try fs.listxattr(inode: InodeNumber(inode)), to: caller).reduce(into: [UInt8]()) { list, name in
                list += name
                list.append(0)
            }
        }, bufferSize: size)
    }

    static func removexattr(_ request: fuse_req_t, _ inode: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        if refusedACL(request, name) { return Reply(request, "removexattr").error(.notSupported) }
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "removexattr").done(Result { () throws(FSError) in
            try fs.removexattr(inode: InodeNumber(inode), name: cStringBytes(name))
        })
    }

    static func statfs(_ request: fuse_req_t, _ inode: fuse_ino_t) {
        Reply(request, "statfs").statfs(BridgeContext.of(request).fileSystem.statfs())
    }
}
