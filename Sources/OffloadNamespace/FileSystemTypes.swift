import OffloadCore

// Value types that cross the boundary between the namespace and the FUSE bridge.
// They say nothing about FUSE itself: FuseBridge converts them to `struct stat`,
// `fuse_entry_param` and friends.

/// An inode number as the kernel sees it. `root` is FUSE_ROOT_ID.
public struct InodeNumber: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static let root = InodeNumber(1)
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "ino \(rawValue)" }
}

/// A handle returned by open/create/opendir and passed back on every later call.
public struct FileHandle: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
}

/// Who is asking: the credentials FUSE passes with every request.
public struct RequestContext: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// The caller's umask (for mknod, mkdir and create). With FUSE_CAP_DONT_MASK (asked
    /// for with POSIX ACLs) the namespace applies it, unless a default ACL replaces it;
    /// without, the kernel has applied it already and applying it again changes nothing.
    public var umask: UInt32
    /// Where the caller's supplementary groups and capabilities come from, which the
    /// kernel's set-id rules ask for (`SetIDRules`; read only when a file has a set-id
    /// bit to lose).
    public var privileges: Privileges
    public init(uid: UInt32, gid: UInt32, pid: Int32 = 0, umask: UInt32 = 0, privileges: Privileges = .fromIDs) {
        self.uid = uid; self.gid = gid; self.pid = pid; self.umask = umask; self.privileges = privileges
    }
    public static let root = RequestContext(uid: 0, gid: 0)

    public enum Privileges: Sendable, Equatable {
        /// In-process callers and tests: uid 0 holds every capability, and the caller is
        /// in its own gid alone.
        case fromIDs
        /// A process's request through the kernel: its groups and effective
        /// capabilities as /proc/PID/status shows them.
        case ofProcess
    }
}

/// A point in time as the kernel passes it (seconds and nanoseconds since the epoch).
public struct Timestamp: Hashable, Comparable, Sendable {
    public var seconds: Int64
    public var nanoseconds: Int64
    public init(seconds: Int64, nanoseconds: Int64) {
        self.seconds = seconds; self.nanoseconds = nanoseconds
    }
    public static func < (a: Self, b: Self) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

/// The kind of an inode; `modeBits` are the S_IFMT bits of st_mode.
public enum FileKind: Sendable, Equatable {
    case regular, directory, symlink, fifo, socket, characterDevice, blockDevice

    public var modeBits: UInt32 {
        switch self {
        case .fifo: return 0o010000
        case .characterDevice: return 0o020000
        case .directory: return 0o040000
        case .blockDevice: return 0o060000
        case .regular: return 0o100000
        case .symlink: return 0o120000
        case .socket: return 0o140000
        }
    }

    /// The kind named by the S_IFMT bits of `mode`, or nil for an invalid type.
    public init?(mode: UInt32) {
        switch mode & 0o170000 {
        case 0o010000: self = .fifo
        case 0o020000: self = .characterDevice
        case 0o040000: self = .directory
        case 0o060000: self = .blockDevice
        case 0o100000: self = .regular
        case 0o120000: self = .symlink
        case 0o140000: self = .socket
        default: return nil
        }
    }
}

/// Everything `stat` shows about an inode.
public struct Attributes: Sendable, Equatable {
    public var inode: InodeNumber
    /// Bumped when an inode number is reused, so NFS-style handles never alias.
    public var generation: UInt64
    public var kind: FileKind
    /// Permission bits and set-id/sticky bits (07777); the type is in `kind`.
    public var permissions: UInt32
    public var linkCount: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt64
    public var size: UInt64
    /// 512-byte units actually occupied (holes and fills excluded).
    public var blocks: UInt64
    public var accessTime: Timestamp
    public var modificationTime: Timestamp
    public var changeTime: Timestamp
    public var birthTime: Timestamp

    /// st_mode: type bits plus permissions.
    public var mode: UInt32 { kind.modeBits | (permissions & 0o7777) }

    public init(inode: InodeNumber, generation: UInt64, kind: FileKind, permissions: UInt32,
                linkCount: UInt32, uid: UInt32, gid: UInt32, rdev: UInt64, size: UInt64,
                blocks: UInt64, accessTime: Timestamp, modificationTime: Timestamp,
                changeTime: Timestamp, birthTime: Timestamp) {
        self.inode = inode; self.generation = generation; self.kind = kind
        self.permissions = permissions; self.linkCount = linkCount; self.uid = uid
        self.gid = gid; self.rdev = rdev; self.size = size; self.blocks = blocks
        self.accessTime = accessTime; self.modificationTime = modificationTime
        self.changeTime = changeTime; self.birthTime = birthTime
    }
}

/// How setattr changes a timestamp (UTIME_NOW / explicit value; nil = UTIME_OMIT).
public enum TimeChange: Sendable, Equatable {
    case now
    case set(Timestamp)
}

/// The fields setattr changes; nil leaves a field alone.
public struct AttributeChanges: Sendable, Equatable {
    public var permissions: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var size: UInt64?
    public var accessTime: TimeChange?
    public var modificationTime: TimeChange?
    public var changeTime: Timestamp?
    /// The handle the kernel passed with the request (ftruncate), if any.
    public var handle: FileHandle?
    public init(permissions: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
                size: UInt64? = nil, accessTime: TimeChange? = nil,
                modificationTime: TimeChange? = nil, changeTime: Timestamp? = nil,
                handle: FileHandle? = nil) {
        self.permissions = permissions; self.uid = uid; self.gid = gid; self.size = size
        self.accessTime = accessTime; self.modificationTime = modificationTime
        self.changeTime = changeTime; self.handle = handle
    }
}

/// A name inside a directory: 1...255 bytes, no '/', no NUL, not "." or "..".
/// Linux names are bytes, not necessarily UTF-8, so the bytes are kept as they are.
public struct FileName: Hashable, Sendable, CustomStringConvertible {
    public static let maximumLength = 255
    public let bytes: [UInt8]

    /// Validates a name a client sent. "." and ".." are refused with EINVAL since the
    /// namespace answers them itself; the kernel never sends them for create/unlink.
    public init(_ bytes: [UInt8]) throws(FSError) {
        guard !bytes.isEmpty else { throw .invalidArgument("empty file name") }
        guard bytes.count <= FileName.maximumLength else { throw .nameTooLong }
        guard !bytes.contains(0x2F), !bytes.contains(0) else {
            throw .invalidArgument("file name contains '/' or NUL")
        }
        guard bytes != [0x2E], bytes != [0x2E, 0x2E] else {
            throw .invalidArgument("'.' and '..' cannot be created or removed")
        }
        self.bytes = bytes
    }

    public init(_ string: String) throws(FSError) { try self.init(Array(string.utf8)) }

    public var description: String { String(decoding: bytes, as: UTF8.self) }
}

/// One directory entry as readdir returns it. `nextOffset` is the cookie the kernel
/// passes back to continue after this entry.
public struct DirectoryEntry: Sendable, Equatable {
    public var name: [UInt8]
    public var inode: InodeNumber
    public var kind: FileKind
    public var nextOffset: UInt64
    public init(name: [UInt8], inode: InodeNumber, kind: FileKind, nextOffset: UInt64) {
        self.name = name; self.inode = inode; self.kind = kind; self.nextOffset = nextOffset
    }
}

/// What statfs reports.
public struct FileSystemStatistics: Sendable, Equatable {
    public var blockSize: UInt64
    public var totalBlocks: UInt64
    public var freeBlocks: UInt64
    public var availableBlocks: UInt64
    public var totalInodes: UInt64
    public var freeInodes: UInt64
    public var maximumNameLength: UInt64
    public init(blockSize: UInt64, totalBlocks: UInt64, freeBlocks: UInt64,
                availableBlocks: UInt64, totalInodes: UInt64, freeInodes: UInt64,
                maximumNameLength: UInt64) {
        self.blockSize = blockSize; self.totalBlocks = totalBlocks; self.freeBlocks = freeBlocks
        self.availableBlocks = availableBlocks; self.totalInodes = totalInodes
        self.freeInodes = freeInodes; self.maximumNameLength = maximumNameLength
    }
}

/// renameat2 flags.
public struct RenameFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let noReplace = RenameFlags(rawValue: 1)  // RENAME_NOREPLACE
    public static let exchange = RenameFlags(rawValue: 2)   // RENAME_EXCHANGE
    /// RENAME_WHITEOUT: the source name is left naming a whiteout, a character device
    /// 0:0 with no permission bits (what overlayfs puts in its upper layer over a name
    /// of a lower one, and asks of an upper filesystem before it mounts).
    public static let whiteout = RenameFlags(rawValue: 4)
}

/// setxattr flags.
public enum XattrSetMode: Sendable, Equatable {
    case createOrReplace
    case createOnly     // XATTR_CREATE: EEXIST if present
    case replaceOnly    // XATTR_REPLACE: ENODATA if absent
    /// Both flags: fails either way (EEXIST if present, ENODATA if absent), as ext4 does.
    case createAndReplace
}

/// fallocate modes offloadfs supports (others: EOPNOTSUPP).
public enum AllocationMode: Sendable, Equatable {
    /// mode 0, or FALLOC_FL_KEEP_SIZE when keepSize is true.
    case allocate(keepSize: Bool)
    /// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
    case punchHole
    /// FALLOC_FL_ZERO_RANGE, optionally with FALLOC_FL_KEEP_SIZE.
    case zeroRange(keepSize: Bool)
}

/// lseek whence values that reach the filesystem.
public enum SeekTarget: Sendable, Equatable {
    case data   // SEEK_DATA
    case hole   // SEEK_HOLE
}
