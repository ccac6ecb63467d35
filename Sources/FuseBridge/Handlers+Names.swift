import CFuse
#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadNamespace

/// Handlers for requests that name or describe inodes. Each one decodes the C arguments,
/// makes one namespace call and hands its `Result` to `Reply`; none of them blocks on
/// anything but the namespace.
enum NameHandlers {
    static func lookup(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "lookup").entry(Result { () throws(FSError) in
            try fs.lookup(parent: InodeNumber(parent), name: FileName(cString: name))
        }, negativeOnNotFound: true)
    }

    static func forget(_ request: fuse_req_t, _ inode: fuse_ino_t, _ lookups: UInt64) {
        BridgeContext.of(request).fileSystem.forget(inode: InodeNumber(inode), lookups: lookups)
        Reply(request, "forget").none()
    }

    static func forgetMulti(_ request: fuse_req_t, _ count: Int,
                            _ forgets: UnsafeMutablePointer<fuse_forget_data>?) {
        let fs = BridgeContext.of(request).fileSystem
        if let forgets {
            for item in UnsafeBufferPointer(start: forgets, count: count) {
                fs.forget(inode: InodeNumber(item.ino), lookups: item.nlookup)
            }
        }
        Reply(request, "forget_multi").none()
    }

    static func getattr(_ request: fuse_req_t, _ inode: fuse_ino_t) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "getattr").attributes(Result { () throws(FSError) in
            try fs.getattr(inode: InodeNumber(inode))
        })
    }

    static func setattr(_ request: fuse_req_t, _ inode: fuse_ino_t, _ attributes: UnsafeMutablePointer<stat>?,
                        _ toSet: Int32, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        let caller = RequestContext(request)
        Reply(request, "setattr").attributes(Result { () throws(FSError) in
            guard let attributes else { throw .invalidArgument("setattr without attributes") }
            let changes = attributeChanges(attributes.pointee, toSet: toSet, handle: info.map { FileHandle($0.pointee.fh) })
            return try fs.setattr(inode: InodeNumber(inode), changes: changes, context: caller)
        })
    }

    /// Decodes setattr's `to_set` bits. UTIME_NOW reaches us as FUSE_SET_ATTR_*_NOW and
    /// UTIME_OMIT as the absence of both bits, which libfuse has already translated.
    static func attributeChanges(_ attributes: stat, toSet: Int32, handle: FileHandle?) -> AttributeChanges {
        func isSet(_ flag: Int32) -> Bool { toSet & flag != 0 }
        var changes = AttributeChanges(handle: handle)
        if isSet(FUSE_SET_ATTR_MODE) { changes.permissions = attributes.st_mode & 0o7777 }
        if isSet(FUSE_SET_ATTR_UID) { changes.uid = attributes.st_uid }
        if isSet(FUSE_SET_ATTR_GID) { changes.gid = attributes.st_gid }
        if isSet(FUSE_SET_ATTR_SIZE) { changes.size = UInt64(clamping: attributes.st_size) }
        if isSet(FUSE_SET_ATTR_ATIME_NOW) {
            changes.accessTime = .now
        } else if isSet(FUSE_SET_ATTR_ATIME) {
            changes.accessTime = .set(Timestamp(attributes.st_atim))
        }
        if isSet(FUSE_SET_ATTR_MTIME_NOW) {
            changes.modificationTime = .now
        } else if isSet(FUSE_SET_ATTR_MTIME) {
            changes.modificationTime = .set(Timestamp(attributes.st_mtim))
        }
        if isSet(FUSE_SET_ATTR_CTIME) { changes.changeTime = Timestamp(attributes.st_ctim) }
        return changes
    }

    static func readlink(_ request: fuse_req_t, _ inode: fuse_ino_t) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "readlink").readlink(Result { () throws(FSError) in
            try fs.readlink(inode: InodeNumber(inode))
        })
    }

    static func mknod(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                      _ mode: mode_t, _ rdev: dev_t) {
        let fs = BridgeContext.of(request).fileSystem
        let caller = RequestContext(request)
        Reply(request, "mknod").entry(Result { () throws(FSError) in
            try fs.mknod(parent: InodeNumber(parent), name: FileName(cString: name), mode: mode,
                         rdev: UInt64(rdev), context: caller)
        })
    }

    static func mkdir(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ mode: mode_t) {
        let fs = BridgeContext.of(request).fileSystem
        let caller = RequestContext(request)
        Reply(request, "mkdir").entry(Result { () throws(FSError) in
            // The kernel sends only permission bits for mkdir; add the type bits so the
            // namespace always sees a full st_mode, as the protocol documents.
            try fs.mkdir(parent: InodeNumber(parent), name: FileName(cString: name),
                         mode: FileKind.directory.modeBits | (mode & 0o7777), context: caller)
        })
    }

    static func unlink(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "unlink").done(Result { () throws(FSError) in
            try fs.unlink(parent: InodeNumber(parent), name: FileName(cString: name))
        })
    }

    static func rmdir(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "rmdir").done(Result { () throws(FSError) in
            try fs.rmdir(parent: InodeNumber(parent), name: FileName(cString: name))
        })
    }

    static func symlink(_ request: fuse_req_t, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t,
                        _ name: UnsafePointer<CChar>?) {
        let fs = BridgeContext.of(request).fileSystem
        let caller = RequestContext(request)
        Reply(request, "symlink").entry(Result { () throws(FSError) in
            try fs.symlink(parent: InodeNumber(parent), name: FileName(cString: name),
                           target: cStringBytes(target), context: caller)
        })
    }

    static func rename(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                       _ newParent: fuse_ino_t, _ newName: UnsafePointer<CChar>?, _ flags: UInt32) {
        let fs = BridgeContext.of(request).fileSystem
        let known = UInt32(OFFLOADFS_RENAME_NOREPLACE | OFFLOADFS_RENAME_EXCHANGE | OFFLOADFS_RENAME_WHITEOUT)
        guard flags & ~known == 0 else { return Reply(request, "rename").errno(EINVAL) }
        // The caller owns a whiteout (RENAME_WHITEOUT, which the kernel lets only a holder
        // of CAP_MKNOD ask for).
        let caller = RequestContext(request)
        Reply(request, "rename").done(Result { () throws(FSError) in
            try fs.rename(parent: InodeNumber(parent), name: FileName(cString: name),
                          newParent: InodeNumber(newParent), newName: FileName(cString: newName),
                          flags: RenameFlags(rawValue: flags), context: caller)
        })
    }

    static func link(_ request: fuse_req_t, _ inode: fuse_ino_t, _ newParent: fuse_ino_t,
                     _ newName: UnsafePointer<CChar>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "link").entry(Result { () throws(FSError) in
            try fs.link(inode: InodeNumber(inode), newParent: InodeNumber(newParent),
                        newName: FileName(cString: newName))
        })
    }
}
