#if canImport(Glibc)
import Glibc
#endif

/// An AF_UNIX address: a filesystem path, or (written with a leading '@', as systemd and
/// ss(8) write them) a name in the abstract namespace, where the '@' becomes a NUL byte
/// and the address is exactly as long as the name (no terminating NUL).
struct UnixSocketAddress: @unchecked Sendable {
    private var address = sockaddr_un()
    private(set) var length: socklen_t = 0

    init?(_ name: String) {
        var bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count > 1 else { return nil }
        let abstract = first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        // A path needs room for its NUL; an abstract name may use every byte.
        guard bytes.count < capacity || (abstract && bytes.count == capacity) else { return nil }
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + (abstract ? 0 : 1))
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }
}

/// The few socket calls the daemon and its clients share.
enum UnixSocket {
    static func make(_ type: __socket_type) -> Int32 {
        socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    /// A socket of `type` connected to `address`, or nil with errno set. With
    /// `timeoutSeconds`, the connect too gives up after that long (EAGAIN), as later sends
    /// and receives do: a stream connect waits while the listener's backlog is full, which
    /// it stays when its daemon is stopped (SIGSTOP) and accepts nothing.
    static func connect(to address: UnixSocketAddress, type: __socket_type, timeoutSeconds: Int? = nil) -> Int32? {
        let fd = make(type)
        guard fd >= 0 else { return nil }
        if let timeoutSeconds { setTimeouts(fd, seconds: timeoutSeconds) }
        let status = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        guard status == 0 else {
            let error = errno
            close(fd)
            errno = error
            return nil
        }
        return fd
    }

    /// Who is at the other end of a connected socket (SO_PEERCRED).
    struct Peer: Equatable {
        var pid: Int32
        var uid: UInt32
        var gid: UInt32
    }

    static func peer(of fd: Int32) -> Peer? {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (hidden behind _GNU_SOURCE in
        // Glibc's module): a tuple has the same layout.
        var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
        var size = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) == 0,
              size == socklen_t(MemoryLayout.size(ofValue: credentials)) else { return nil }
        return Peer(pid: credentials.0, uid: credentials.1, gid: credentials.2)
    }

    /// Send and receive time out after `seconds` (a stuck peer costs a wait, not a hang).
    static func setTimeouts(_ fd: Int32, seconds: Int) {
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads until end of stream (or `limit` bytes, or a newline when `line`); nil on error.
    static func read(_ fd: Int32, limit: Int, line: Bool = false) -> [UInt8]? {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while bytes.count < limit {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return nil }
            if count == 0 { break }
            bytes += chunk.prefix(count)
            if line && bytes.contains(UInt8(ascii: "\n")) { break }
        }
        return bytes
    }

    /// Writes all of `bytes`; false on error.
    static func write(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return false }
            written += count
        }
        return true
    }
}
