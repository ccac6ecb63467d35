#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

/// The one mapping from the filesystem's typed errors to the errno values the kernel sees.
///
/// Nothing else in offloadfs picks an errno for an `FSError`: handlers hand the error to
/// `Reply`, and `Reply` asks this. `FSError.system` carries an errno a system call gave us;
/// it is passed on unless it is not a valid positive errno, which becomes EIO (the kernel
/// treats a reply of 0 as success and rejects values outside 1...4095).
extension FSError {
    public var errnoValue: Int32 {
        switch self {
        case .notFound: return ENOENT
        case .exists: return EEXIST
        case .notDirectory: return ENOTDIR
        case .isDirectory: return EISDIR
        case .notEmpty: return ENOTEMPTY
        case .invalidArgument: return EINVAL
        case .nameTooLong: return ENAMETOOLONG
        case .fileTooLarge: return EFBIG
        case .noSpace, .capacityTooSmall: return ENOSPC
        case .noAttribute: return ENODATA
        case .rangeTooSmall: return ERANGE
        case .argumentListTooLong: return E2BIG
        case .permissionDenied: return EACCES
        case .notPermitted: return EPERM
        case .tooManyLinks: return EMLINK
        case .symlinkLoop: return ELOOP
        case .noSuchOffset: return ENXIO
        case .notSupported: return EOPNOTSUPP
        case .badHandle: return EBADF
        case .readOnly: return EROFS
        case .busy: return EBUSY
        case .staleInode: return ESTALE
        case .io, .damagedImage: return EIO
        case .system(let code, _): return (1..<4096).contains(code) ? code : EIO
        }
    }

    /// True for errors that mean something is wrong with the daemon or the image rather
    /// than with the caller's request; these are logged at error level.
    var isInternalFailure: Bool {
        switch self {
        case .io, .damagedImage, .system, .staleInode: return true
        default: return false
        }
    }
}
