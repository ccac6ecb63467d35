/// The one error type of the filesystem core.
///
/// Each case names what went wrong in the filesystem's own terms; the FUSE edge maps every
/// case to exactly one errno (`FuseBridge/ErrnoMapping.swift`), and the CLI prints
/// `description`. Core code never passes raw errno values around except for `.system`,
/// which carries an errno the operating system returned to us (e.g. from `fallocate`).
public enum FSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// ENOENT
    case notFound
    /// EEXIST
    case exists
    /// ENOTDIR
    case notDirectory
    /// EISDIR
    case isDirectory
    /// ENOTEMPTY
    case notEmpty
    /// EINVAL, with the reason for logs.
    case invalidArgument(String)
    /// ENAMETOOLONG
    case nameTooLong
    /// EFBIG: the operation would take a file past `OffloadedFile.maximumSize`.
    case fileTooLarge
    /// ENOSPC: the image or the configured capacity is full.
    case noSpace
    /// ENOSPC: a capacity too small for what the image holds (`liveBytes` of data and
    /// metadata) and a checkpoint: it needs `neededBytes`.
    case capacityTooSmall(capacityBytes: UInt64, neededBytes: UInt64, liveBytes: UInt64)
    /// ENODATA: no such extended attribute.
    case noAttribute
    /// ERANGE: the caller's buffer is too small.
    case rangeTooSmall
    /// E2BIG: an extended attribute value or list is larger than the protocol allows.
    case argumentListTooLong
    /// EACCES
    case permissionDenied
    /// EPERM
    case notPermitted
    /// EMLINK
    case tooManyLinks
    /// ELOOP
    case symlinkLoop
    /// ENXIO: SEEK_DATA / SEEK_HOLE at or past the end of file.
    case noSuchOffset
    /// EOPNOTSUPP
    case notSupported
    /// EBADF: a file handle the daemon did not hand out, or one opened without the needed mode.
    case badHandle
    /// EROFS
    case readOnly
    /// EBUSY
    case busy
    /// ENOTCONN / ESTALE-like: an inode number the kernel should not know.
    case staleInode
    /// EIO: the image is damaged or an invariant does not hold; the string says which.
    case io(String)
    /// The image's metadata fails its checks (checksums, structure); the message says where.
    case damagedImage(String)
    /// An errno returned by a system call, with the call's name.
    case system(errno: Int32, call: String)

    public var description: String {
        switch self {
        case .notFound: return "no such file or directory"
        case .exists: return "file exists"
        case .notDirectory: return "not a directory"
        case .isDirectory: return "is a directory"
        case .notEmpty: return "directory not empty"
        case .invalidArgument(let why): return "invalid argument: \(why)"
        case .damagedImage(let why): return "the image is damaged: \(why)"
        case .nameTooLong: return "file name too long"
        case .fileTooLarge: return "file too large"
        case .noSpace: return "no space left on device"
        case .capacityTooSmall(let capacity, let needed, let live):
            return "a capacity of \(capacity) bytes is smaller than the \(needed) bytes the image needs (\(live) of data and metadata, and room for a checkpoint)"
        case .noAttribute: return "no such attribute"
        case .rangeTooSmall: return "result too large for the buffer"
        case .argumentListTooLong: return "attribute too large"
        case .permissionDenied: return "permission denied"
        case .notPermitted: return "operation not permitted"
        case .tooManyLinks: return "too many links"
        case .symlinkLoop: return "too many levels of symbolic links"
        case .noSuchOffset: return "no data or hole at or past this offset"
        case .notSupported: return "operation not supported"
        case .badHandle: return "bad file handle"
        case .readOnly: return "read-only file system"
        case .busy: return "device or resource busy"
        case .staleInode: return "stale inode"
        case .io(let why): return "I/O error: \(why)"
        case .system(let errno, let call): return "\(call): \(String(cString: strerror(errno)))"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
