import CFuse
#if canImport(Glibc)
import Glibc
#endif
import OffloadNamespace

/// Conversions between the namespace's value types and the C structs libfuse takes.
///
/// `stat.st_ino`, `st_nlink` and `st_rdev` are `UInt` in Swift's Glibc while
/// `fuse_ino_t` is `UInt64`; CFuse asserts both are 64 bits wide, so the conversions below
/// never truncate. Sizes and block counts are `off_t`/`blkcnt_t` (`Int`): a value above
/// Int.max cannot come from the namespace (its maximum file size is far below) and is
/// clamped rather than trapping inside a FUSE worker thread.
extension stat {
    init(_ attributes: Attributes) {
        self.init()
        st_ino = UInt(attributes.inode.rawValue)
        st_mode = attributes.mode
        st_nlink = UInt(attributes.linkCount)
        st_uid = attributes.uid
        st_gid = attributes.gid
        st_rdev = UInt(attributes.rdev)
        st_size = Int(clamping: attributes.size)
        st_blksize = StatConversion.preferredIOSizeBytes
        st_blocks = Int(clamping: attributes.blocks)
        st_atim = timespec(attributes.accessTime)
        st_mtim = timespec(attributes.modificationTime)
        st_ctim = timespec(attributes.changeTime)
        // Birth time has no field in `struct stat` and libfuse 3.14 has no statx reply:
        // it stays in the namespace until a newer protocol can carry it.
    }
}

extension timespec {
    init(_ timestamp: Timestamp) {
        self.init(tv_sec: Int(timestamp.seconds), tv_nsec: Int(timestamp.nanoseconds))
    }
}

extension Timestamp {
    init(_ time: timespec) {
        self.init(seconds: Int64(time.tv_sec), nanoseconds: Int64(time.tv_nsec))
    }
}

enum StatConversion {
    /// st_blksize: the I/O size `cp`, `tar` and stdio buffer with. The 1 MiB max_write
    /// would be larger, but 128 KiB matches the kernel's default readahead window.
    static let preferredIOSizeBytes = 128 * 1024

    /// The entry reply for a new or looked-up inode, with the cache timeouts of `policy`.
    static func entry(_ attributes: Attributes, policy: CachePolicy) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = attributes.inode.rawValue
        entry.generation = attributes.generation
        entry.attr = stat(attributes)
        entry.attr_timeout = policy.attributeTimeoutSeconds
        entry.entry_timeout = policy.entryTimeoutSeconds
        return entry
    }

    /// A negative entry (ino 0): the kernel caches "no such name" for the timeout.
    static func negativeEntry(policy: CachePolicy) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = 0
        entry.entry_timeout = policy.negativeTimeoutSeconds
        return entry
    }

    static func statvfs(_ statistics: FileSystemStatistics) -> Glibc.statvfs {
        var result = Glibc.statvfs()
        result.f_bsize = UInt(statistics.blockSize)
        result.f_frsize = UInt(statistics.blockSize)
        result.f_blocks = UInt(statistics.totalBlocks)
        result.f_bfree = UInt(statistics.freeBlocks)
        result.f_bavail = UInt(statistics.availableBlocks)
        result.f_files = UInt(statistics.totalInodes)
        result.f_ffree = UInt(statistics.freeInodes)
        result.f_favail = UInt(statistics.freeInodes)
        result.f_namemax = UInt(statistics.maximumNameLength)
        return result
    }
}
