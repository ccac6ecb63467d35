import CFuse
#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadNamespace

/// Handlers for open files: open/create/release, data transfer, sync, space management.
enum FileHandlers {
    static func open(_ request: fuse_req_t, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let context = BridgeContext.of(request)
        guard let info else { return Reply(request, "open").errno(EINVAL) }
        let flags = effectiveOpenFlags(info.pointee.flags, context: context)
        let caller = RequestContext(request)
        offloadfs_fi_set_keep_cache(info, 1)
        Reply(request, "open").open(Result { () throws(FSError) in
            // O_TRUNC may take set-id bits away (`SetIDRules`). The kernel's cached mode
            // follows: the truncation's ATTR_KILL_* make it read the attributes again
            // (fuse_setattr's GETATTR) before it drops its own SETATTR (ATTR_OPEN).
            try context.fileSystem.open(inode: InodeNumber(inode), flags: flags, context: caller)
        }, inode: InodeNumber(inode), info: info, directory: false)
    }

    static func create(_ request: fuse_req_t, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?,
                       _ mode: mode_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let context = BridgeContext.of(request)
        guard let info else { return Reply(request, "create").errno(EINVAL) }
        let flags = effectiveOpenFlags(info.pointee.flags, context: context)
        let caller = RequestContext(request)
        offloadfs_fi_set_keep_cache(info, 1)
        Reply(request, "create").create(Result { () throws(FSError) in
            try context.fileSystem.create(parent: InodeNumber(parent), name: FileName(cString: name),
                                          mode: mode, flags: flags, context: caller)
        }, info: info)
    }

    /// With the writeback cache the kernel reads pages to fill partial writes even for
    /// O_WRONLY opens and positions O_APPEND writes itself (it knows the cached size),
    /// so the namespace must see such handles as read-write and without O_APPEND
    /// (libfuse's passthrough_ll does the same).
    static func effectiveOpenFlags(_ flags: Int32, context: BridgeContext) -> Int32 {
        guard context.writebackCache.load(ordering: .acquiring) else { return flags }
        var result = flags
        if result & O_ACCMODE == O_WRONLY {
            result = (result & ~O_ACCMODE) | O_RDWR
        }
        result &= ~O_APPEND
        return result
    }

    static func read(_ request: fuse_req_t, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t,
                     _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "read").read { (send) throws(FSError) in
            try fs.read(inode: InodeNumber(inode), handle: handle(info), offset: unsignedOffset(offset),
                        count: size, send)
        }
    }

    static func write(_ request: fuse_req_t, _ inode: fuse_ino_t, _ buffer: UnsafePointer<CChar>?,
                      _ size: Int, _ offset: off_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "write").written(Result { () throws(FSError) in
            let data = UnsafeRawBufferPointer(start: buffer.map(UnsafeRawPointer.init), count: buffer == nil ? 0 : size)
            return try fs.write(inode: InodeNumber(inode), handle: handle(info), offset: unsignedOffset(offset),
                                data: data)
        })
    }

    static func flush(_ request: fuse_req_t, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "flush").done(Result { () throws(FSError) in
            try fs.flush(inode: InodeNumber(inode), handle: handle(info))
        })
    }

    static func release(_ request: fuse_req_t, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "release").done(Result { () throws(FSError) in
            fs.release(inode: InodeNumber(inode), handle: try handle(info))
        })
    }

    static func fsync(_ request: fuse_req_t, _ inode: fuse_ino_t, _ dataSync: Int32,
                      _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "fsync").done(Result { () throws(FSError) in
            try fs.fsync(inode: InodeNumber(inode), handle: info.map { FileHandle($0.pointee.fh) },
                         dataOnly: dataSync != 0)
        })
    }

    static func fallocate(_ request: fuse_req_t, _ inode: fuse_ino_t, _ mode: Int32, _ offset: off_t,
                          _ length: off_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        guard let allocation = allocationMode(mode) else { return Reply(request, "fallocate").errno(EOPNOTSUPP) }
        Reply(request, "fallocate").done(Result { () throws(FSError) in
            guard length > 0 else { throw .invalidArgument("fallocate length must be positive") }
            try fs.fallocate(inode: InodeNumber(inode), handle: handle(info), offset: unsignedOffset(offset),
                             length: UInt64(length), mode: allocation)
        })
    }

    /// The fallocate modes offloadfs implements; nil for everything else (EOPNOTSUPP):
    /// 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE and ZERO_RANGE|KEEP_SIZE.
    static func allocationMode(_ mode: Int32) -> AllocationMode? {
        let keep = Int32(OFFLOADFS_FALLOC_KEEP_SIZE), punch = Int32(OFFLOADFS_FALLOC_PUNCH_HOLE)
        let zero = Int32(OFFLOADFS_FALLOC_ZERO_RANGE)
        switch mode {
        case 0: return .allocate(keepSize: false)
        case keep: return .allocate(keepSize: true)
        case punch | keep: return .punchHole
        case zero: return .zeroRange(keepSize: false)
        case zero | keep: return .zeroRange(keepSize: true)
        default: return nil
        }
    }

    /// Only SEEK_DATA and SEEK_HOLE reach the filesystem: the kernel answers SEEK_SET,
    /// SEEK_CUR and SEEK_END from its own idea of the file size.
    ///
    /// With the writeback cache the kernel sends FUSE_LSEEK without writing back the
    /// file's dirty pages first, so our view can be older than the file: freshly written
    /// data would be reported as a hole (and skipped by sparse-aware copiers), or an
    /// offset below the size as ENXIO. So under the writeback cache we answer ENOSYS; the
    /// kernel then stops asking and answers itself from its own size (all data up to the
    /// size, the hole at the end), which POSIX allows and which is always correct.
    static func lseek(_ request: fuse_req_t, _ inode: fuse_ino_t, _ offset: off_t, _ whence: Int32,
                      _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let context = BridgeContext.of(request)
        if context.writebackCache.load(ordering: .acquiring) {
            return Reply(request, "lseek").errno(ENOSYS)
        }
        let fs = context.fileSystem
        let target: SeekTarget
        switch whence {
        case Int32(OFFLOADFS_SEEK_DATA): target = .data
        case Int32(OFFLOADFS_SEEK_HOLE): target = .hole
        default: return Reply(request, "lseek").errno(EINVAL)
        }
        Reply(request, "lseek").offset(Result { () throws(FSError) in
            try fs.lseek(inode: InodeNumber(inode), handle: handle(info), offset: unsignedOffset(offset),
                         target: target)
        })
    }

    static func copyFileRange(_ request: fuse_req_t, _ sourceInode: fuse_ino_t, _ sourceOffset: off_t,
                              _ sourceInfo: UnsafeMutablePointer<fuse_file_info>?,
                              _ destinationInode: fuse_ino_t, _ destinationOffset: off_t,
                              _ destinationInfo: UnsafeMutablePointer<fuse_file_info>?,
                              _ length: Int, _ flags: Int32) {
        let fs = BridgeContext.of(request).fileSystem
        // copy_file_range(2) defines no flags yet; the kernel passes them through.
        guard flags == 0 else { return Reply(request, "copy_file_range").errno(EINVAL) }
        Reply(request, "copy_file_range").copied(Result { () throws(FSError) in
            try fs.copyFileRange(from: InodeNumber(sourceInode), sourceHandle: handle(sourceInfo),
                                 sourceOffset: unsignedOffset(sourceOffset),
                                 to: InodeNumber(destinationInode), destinationHandle: handle(destinationInfo),
                                 destinationOffset: unsignedOffset(destinationOffset),
                                 // size_t, which Swift reads as Int: a length past Int.max
                                 // is its bit pattern, not a trap (the kernel caps it first).
                                 length: min(UInt64(UInt(bitPattern: length)), maximumCopyBytes))
        })
    }

    /// The reply to COPY_FILE_RANGE carries the count in 32 bits (`fuse_write_out.size`):
    /// 4 GiB would come back as 0, which callers take for end of file. So one request
    /// copies at most the largest whole number of 4 KiB blocks below 4 GiB, and the
    /// caller (cp, the kernel's splice fallback) asks again for the rest, as after any
    /// short copy. Kernels since 2025 clamp the same way before asking; older ones
    /// (Debian 12's 6.1) do not.
    static let maximumCopyBytes: UInt64 = 0xFFFF_F000

    // MARK: Argument decoding

    /// The handle the namespace gave out in open/create/opendir, stored in fi->fh.
    static func handle(_ info: UnsafeMutablePointer<fuse_file_info>?) throws(FSError) -> FileHandle {
        guard let info else { throw .badHandle }
        return FileHandle(info.pointee.fh)
    }

    /// off_t is signed; the kernel never sends a negative offset, but a bad one must be
    /// EINVAL rather than a trap in a worker thread.
    static func unsignedOffset(_ offset: off_t) throws(FSError) -> UInt64 {
        guard offset >= 0 else { throw .invalidArgument("negative offset \(offset)") }
        return UInt64(offset)
    }
}
