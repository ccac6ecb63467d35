import CFuse
import Logging

/// Every capability offloadfs asks the kernel for, in one place, each with why.
///
/// libfuse calls `negotiate` from the `init` request, before any other request, with
/// `conn.capable` (what this kernel offers) and `conn.want` (libfuse's defaults). Each flag
/// is set or cleared explicitly here so the behaviour does not drift with libfuse's
/// defaults. A flag is only wanted if the kernel is capable of it.
enum Capabilities {
    /// The largest WRITE request: 1 MiB is libfuse 3.14's ceiling (its receive buffer is
    /// 256 pages plus a header). Fewer, larger writes mean fewer ~25 us round trips.
    static let maxWriteBytes: UInt32 = 1 << 20
    /// Asynchronous requests (readahead, writeback) the kernel keeps in flight. The default
    /// of 12 starves the worker threads during sequential I/O.
    static let maxBackground: UInt32 = 64
    /// The kernel marks the connection congested at 3/4 of max_background, as it does by
    /// default for its own value.
    static let congestionThreshold: UInt32 = 48

    static func negotiate(_ conn: UnsafeMutablePointer<fuse_conn_info>, context: BridgeContext) {
        var info = conn.pointee
        func want(_ flag: Int32, _ on: Bool) {
            let bit = UInt32(flag)
            if on && info.capable & bit != 0 {
                info.want |= bit
            } else {
                info.want &= ~bit
            }
        }
        // Only when asked (--writeback-cache): the page cache then holds writes and merges
        // them into large WRITEs, and the kernel keeps size/mtime and handles O_APPEND
        // itself (see open/create in Handlers+Files), but sync(2) no longer reaches the
        // daemon (see MountConfiguration.writebackCache).
        want(FUSE_CAP_WRITEBACK_CACHE, context.wantsWritebackCache)
        // Several READs of one file may be in flight at once (readahead).
        want(FUSE_CAP_ASYNC_READ, true)
        // Direct I/O requests may be split and sent in parallel.
        want(FUSE_CAP_ASYNC_DIO, true)
        // O_TRUNC arrives with open (one request) instead of a separate SETATTR.
        want(FUSE_CAP_ATOMIC_O_TRUNC, true)
        // Lookups and readdirs in one directory run concurrently; the namespace locks.
        want(FUSE_CAP_PARALLEL_DIROPS, true)
        // READDIRPLUS returns attributes with names, saving a LOOKUP per entry for
        // `ls -l`; AUTO lets the kernel use plain READDIR when nobody stats the entries.
        want(FUSE_CAP_READDIRPLUS, true)
        want(FUSE_CAP_READDIRPLUS_AUTO, true)
        // Symlink targets never change behind the kernel's back.
        want(FUSE_CAP_CACHE_SYMLINKS, true)
        // Splice moves pages through a pipe; measured slower here than reply buffers
        // (pipe resize is refused), so all three directions are off.
        want(FUSE_CAP_SPLICE_READ, false)
        want(FUSE_CAP_SPLICE_WRITE, false)
        want(FUSE_CAP_SPLICE_MOVE, false)
        // POSIX ACLs: the kernel enforces them (from the system.posix_acl_* xattrs the
        // namespace keeps) and leaves the rest to us: the mode follows a new access ACL,
        // a chmod updates the ACL, and new inodes get their directory's default ACL
        // (Inode+ACL.swift). A default ACL replaces the umask, so the kernel must pass
        // the umask instead of applying it (DONT_MASK): the namespace applies it when
        // there is no default ACL. Both or neither.
        want(FUSE_CAP_POSIX_ACL, true)
        let acls = info.want & UInt32(FUSE_CAP_POSIX_ACL) != 0
        want(FUSE_CAP_DONT_MASK, acls)
        // The kernel clears setuid/setgid on write, truncate and chown by sending SETATTR,
        // so the namespace does not need to implement the rule itself, except where the
        // SETATTR never comes: open(O_TRUNC) with ATOMIC_O_TRUNC and an access ACL
        // (`SetIDRules`). Its FUSE code keeps the older rule for S_ISGID without
        // group-execute (left set for a caller outside the group). Cost, measured: each
        // write(2) also sends GETXATTR "security.capability" (FUSE clears SB_NOSEC); only
        // HANDLE_KILLPRIV_V2 (libfuse >= 3.16) with the namespace clearing set-id bits and
        // capabilities on write would remove that round trip.
        want(FUSE_CAP_HANDLE_KILLPRIV, false)
        // Locks are left to the kernel's local lock manager (single host).
        want(FUSE_CAP_POSIX_LOCKS, false)
        want(FUSE_CAP_FLOCK_LOCKS, false)
        // Cached file data stays valid because nothing changes it except through the
        // kernel; checking mtime on every getattr would only cause needless invalidation.
        want(FUSE_CAP_AUTO_INVAL_DATA, false)

        info.max_write = maxWriteBytes
        info.max_background = maxBackground
        info.congestion_threshold = congestionThreshold
        // Timestamps are kept to the nanosecond.
        info.time_gran = 1
        conn.pointee = info

        let writeback = info.want & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0
        context.writebackCache.store(writeback, ordering: .releasing)
        context.posixACLs.store(acls, ordering: .releasing)
        context.logger.info("FUSE connection ready", metadata: [
            "protocol": "\(info.proto_major).\(info.proto_minor)",
            "want": "0x\(String(info.want, radix: 16))",
            "max_write": "\(info.max_write)",
            "writeback_cache": "\(writeback)",
            "posix_acl": "\(acls)",
        ])
    }
}
