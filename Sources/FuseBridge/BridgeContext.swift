import CFuse
import Logging
import OffloadCore
import OffloadNamespace
import Synchronization

/// The state every handler needs, shared by all FUSE worker threads.
///
/// C callbacks cannot capture context, so `FuseSession` passes an unretained pointer to
/// this object as libfuse's session userdata, keeps the object alive for the whole
/// session, and each handler gets it back with `BridgeContext.of(request)`
/// (`fuse_req_userdata` + `Unmanaged`). Everything here is immutable or atomic, so the
/// worker threads share it without locks.
final class BridgeContext: Sendable {
    let fileSystem: any FileSystemOperations
    let logger: Logger
    let cachePolicy: CachePolicy
    /// Whether the kernel accepted FUSE_CAP_WRITEBACK_CACHE; set once in `init`
    /// (Capabilities.negotiate) before any request arrives, read by open/create.
    let writebackCache = Atomic<Bool>(false)
    /// Whether the kernel enforces POSIX ACLs (FUSE_CAP_POSIX_ACL), set like
    /// `writebackCache`. Without it ACL xattrs are refused: stored but not enforced, an
    /// ACL that denies someone would silently deny nothing.
    let posixACLs = Atomic<Bool>(false)
    /// Whether to ask for it (`MountConfiguration.writebackCache`).
    let wantsWritebackCache: Bool
    /// What the mount has served (requests, bytes, errors), for `offloadfs status`.
    let counters: RequestCounters

    init(fileSystem: any FileSystemOperations, logger: Logger, cachePolicy: CachePolicy,
         wantsWritebackCache: Bool, counters: RequestCounters) {
        self.wantsWritebackCache = wantsWritebackCache
        self.counters = counters
        self.fileSystem = fileSystem
        self.logger = logger
        self.cachePolicy = cachePolicy
    }

    /// The context of the session that `request` belongs to.
    static func of(_ request: fuse_req_t) -> BridgeContext {
        // fuse_req_userdata returns the pointer given to fuse_session_new, which is never
        // nil: FuseSession always passes its context.
        Unmanaged<BridgeContext>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    /// The context behind the userdata pointer libfuse passes to `init` and `destroy`.
    static func of(userdata: UnsafeMutableRawPointer) -> BridgeContext {
        Unmanaged<BridgeContext>.fromOpaque(userdata).takeUnretainedValue()
    }
}

extension RequestContext {
    /// The caller's credentials from fuse_req_ctx; its groups and capabilities, when a
    /// set-id rule asks, from /proc (`SetIDRules`).
    init(_ request: fuse_req_t) {
        let caller = fuse_req_ctx(request)!.pointee
        self.init(uid: caller.uid, gid: caller.gid, pid: caller.pid, umask: caller.umask, privileges: .ofProcess)
    }
}

extension FileName {
    /// A name the kernel sent as a NUL-terminated C string.
    init(cString: UnsafePointer<CChar>?) throws(FSError) {
        guard let cString else { throw .invalidArgument("missing file name") }
        let length = strlen(cString)
        let bytes = cString.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
        try self.init(bytes)
    }
}

/// The bytes of a NUL-terminated C string (xattr names, symlink targets), without the NUL.
func cStringBytes(_ cString: UnsafePointer<CChar>?) throws(FSError) -> [UInt8] {
    guard let cString else { throw .invalidArgument("missing string argument") }
    let length = strlen(cString)
    return cString.withMemoryRebound(to: UInt8.self, capacity: length) {
        Array(UnsafeBufferPointer(start: $0, count: length))
    }
}
