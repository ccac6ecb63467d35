import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a mount has served since it started: requests by kind, bytes read and written,
/// error answers by errno. `offloadfs status` shows them.
///
/// They are counted on every request, so counting must cost next to nothing: each
/// counter is an `Atomic<UInt64>` in one buffer allocated when the mount starts, and
/// counting is one relaxed atomic add. No lock, no allocation, no string per request.
/// Readers (the status server) load each counter on its own: a snapshot is not one
/// instant across counters, which is fine for figures that only grow.
public final class RequestCounters: Sendable {
    /// The requests libfuse hands us, one counter each (`Operations.table` counts them).
    public enum Operation: Int, CaseIterable, Sendable {
        case lookup, forget, getattr, setattr, readlink, mknod, mkdir, unlink, rmdir, symlink, rename, link
        case open, create, read, write, flush, release, fsync, fallocate, lseek, copyFileRange
        case opendir, readdir, readdirplus, releasedir, fsyncdir, statfs
        case setxattr, getxattr, listxattr, removexattr

        /// The kernel's name for it (`copy_file_range`), as status and metrics show it.
        public var name: String {
            switch self {
            case .copyFileRange: return "copy_file_range"
            default: return "\(self)"
            }
        }
    }

    /// Counters that are not a request kind, stored after the operations.
    private enum Extra: Int, CaseIterable {
        case bytesRead, bytesWritten
    }

    /// Errors are counted by errno, one slot per value below this (errno values are
    /// small); slot 0 takes any other value.
    static let errnoSlots = 160
    private static let firstErrnoSlot = Operation.allCases.count + Extra.allCases.count
    private static let slotCount = firstErrnoSlot + errnoSlots
    /// `slotCount` atomics, initialised in `init`, never moved; only `deinit` frees them.
    nonisolated(unsafe) private let slots: UnsafeMutablePointer<Atomic<UInt64>>

    public init() {
        slots = .allocate(capacity: Self.slotCount)
        for index in 0..<Self.slotCount { (slots + index).initialize(to: Atomic(0)) }
    }

    deinit {
        slots.deinitialize(count: Self.slotCount)
        slots.deallocate()
    }

    @inline(__always)
    public func count(_ operation: Operation) {
        slots[operation.rawValue].wrappingAdd(1, ordering: .relaxed)
    }

    @inline(__always)
    public func countRead(bytes: Int) { add(.bytesRead, bytes) }

    @inline(__always)
    public func countWritten(bytes: Int) { add(.bytesWritten, bytes) }

    /// A request answered with error `code` (any errno: ENOENT from a lookup counts too).
    @inline(__always)
    public func countError(_ code: Int32) {
        let slot = code > 0 && Int(code) < Self.errnoSlots ? Int(code) : 0
        slots[Self.firstErrnoSlot + slot].wrappingAdd(1, ordering: .relaxed)
    }

    @inline(__always)
    private func add(_ extra: Extra, _ amount: Int) {
        slots[Operation.allCases.count + extra.rawValue].wrappingAdd(UInt64(max(amount, 0)), ordering: .relaxed)
    }

    /// The counters as they are now.
    public struct Snapshot: Equatable, Sendable {
        /// Requests by `Operation.name`, every kind present (0 when none came).
        public var operations: [String: UInt64]
        public var bytesRead: UInt64
        public var bytesWritten: UInt64
        /// Error answers by errno name ("ENOENT"), only those that occurred.
        public var errorsByErrno: [String: UInt64]
        /// fsync and fsyncdir requests together.
        public var fsyncs: UInt64 { (operations["fsync"] ?? 0) + (operations["fsyncdir"] ?? 0) }
        public var errors: UInt64 { errorsByErrno.values.reduce(0, +) }
    }

    public func snapshot() -> Snapshot {
        var operations: [String: UInt64] = [:]
        for operation in Operation.allCases {
            operations[operation.name] = slots[operation.rawValue].load(ordering: .relaxed)
        }
        func extra(_ which: Extra) -> UInt64 {
            slots[Operation.allCases.count + which.rawValue].load(ordering: .relaxed)
        }
        var errors: [String: UInt64] = [:]
        for code in 0..<Self.errnoSlots {
            let count = slots[Self.firstErrnoSlot + code].load(ordering: .relaxed)
            if count > 0 { errors[code == 0 ? "other" : ErrnoName.of(Int32(code)), default: 0] += count }
        }
        return Snapshot(operations: operations, bytesRead: extra(.bytesRead), bytesWritten: extra(.bytesWritten),
                        errorsByErrno: errors)
    }
}

/// errno values by their names, for people and metrics (glibc's strerrorname_np is
/// hidden behind _GNU_SOURCE): the ones a filesystem answers; others as "errno N".
enum ErrnoName {
    private static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", ENXIO: "ENXIO", E2BIG: "E2BIG", EBADF: "EBADF",
        EACCES: "EACCES", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV", ENOTDIR: "ENOTDIR",
        EISDIR: "EISDIR", EINVAL: "EINVAL", EFBIG: "EFBIG", ENOSPC: "ENOSPC", EROFS: "EROFS",
        EMLINK: "EMLINK", ERANGE: "ERANGE", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS",
        ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP", ENODATA: "ENODATA", EOVERFLOW: "EOVERFLOW",
        EOPNOTSUPP: "EOPNOTSUPP", ESTALE: "ESTALE", EINTR: "EINTR", EAGAIN: "EAGAIN",
        ENOMEM: "ENOMEM",
    ]

    static func of(_ code: Int32) -> String { names[code] ?? "errno \(code)" }
}
