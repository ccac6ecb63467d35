#if canImport(Glibc)
import Glibc
#endif

/// systemd's notify protocol (sd_notify(3)), spoken without libsystemd: each message is
/// one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET`, an
/// absolute path or an abstract name written "@name" (see `UnixSocketAddress`). systemd learns who sent a message from the socket's credentials,
/// so nothing else identifies us (`MAINPID=` is only added where it helps).
///
/// Sending never blocks (MSG_DONTWAIT) and failures are ignored, as sd_notify's callers
/// do: the service manager going away must not stall or kill the daemon.
struct NotifySocket: Sendable {
    private let address: UnixSocketAddress
    private let descriptor: Int32

    /// The socket `$NOTIFY_SOCKET` names, or nil when it is unset or unusable.
    static func fromEnvironment() -> NotifySocket? {
        environment("NOTIFY_SOCKET").flatMap(NotifySocket.init(name:))
    }

    /// `name` as `$NOTIFY_SOCKET` gives it: "/run/systemd/notify" or "@abstract-name"
    /// (other forms, e.g. vsock addresses, are not for a local daemon and are ignored).
    init?(name: String) {
        guard name.hasPrefix("/") || name.hasPrefix("@"), let address = UnixSocketAddress(name) else { return nil }
        let descriptor = UnixSocket.make(SOCK_DGRAM)
        guard descriptor >= 0 else { return nil }
        self.address = address
        self.descriptor = descriptor
    }

    /// Sends `fields` ("READY=1", "STATUS=...") as one message; true if it was sent.
    @discardableResult
    func send(_ fields: [String]) -> Bool {
        let message = Array(fields.joined(separator: "\n").utf8)
        let sent = address.withSockaddr { target, length in
            message.withUnsafeBytes { bytes in
                sendto(descriptor, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT),
                       target, length)
            }
        }
        return sent == message.count
    }
}
