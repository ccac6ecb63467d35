import FuseBridge
import Logging
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// Where the daemon's log goes, chosen once at start-up (`bootstrapLogging`).
///
/// - `terminal`: stderr is a terminal or a file: swift-log's own stderr lines (timestamp,
///   level, message, metadata).
/// - `journal`: stderr is systemd's journal stream (`$JOURNAL_STREAM` names stderr's
///   device and inode, as systemd sets it for a service): one line per message,
///   prefixed with its syslog priority (`<3>` error ... `<7>` debug), which journald
///   turns into the entry's priority; no timestamp (the journal keeps its own).
/// - `syslog`: the daemon runs in the background (its stderr is /dev/null): each
///   message is a datagram to the syslog socket (`/dev/log`, which journald serves where
///   it runs), facility daemon, tagged `offloadfs[PID]`. Where nothing serves it (a
///   container or machine with no syslog daemon and no journald), warnings and errors go
///   to the kernel's log instead (`dmesg`; `SyslogSocket`).
enum LogDestination: Equatable {
    case terminal, journal, syslog

    /// The destination for a daemon that is `background` (detached, stderr discarded).
    static func choose(background: Bool) -> LogDestination {
        if background { return .syslog }
        return stderrIsJournal(journalStream: environment("JOURNAL_STREAM")) ? .journal : .terminal
    }

    /// `$JOURNAL_STREAM` is "DEVICE:INODE" of the stream systemd connected; it is only
    /// ours if stderr is still that stream (a child of a service inherits the variable
    /// with stderr redirected elsewhere).
    static func stderrIsJournal(journalStream: String?) -> Bool {
        guard let journalStream else { return false }
        let parts = journalStream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var status = stat()
        guard fstat(STDERR_FILENO, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }
}

/// Configures swift-log for the process (once) and returns the daemon's logger.
func bootstrapLogging(level: Logger.Level, destination: LogDestination = .terminal) -> Logger {
    LoggingSystem.bootstrap { label in
        switch destination {
        case .terminal:
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        case .journal:
            return LineLogHandler(level: level) { priority, line in
                writeLine("<\(priority)>" + line, to: STDERR_FILENO)
            }
        case .syslog:
            let socket = SyslogSocket()
            return LineLogHandler(level: level) { priority, line in socket.send(priority: priority, line) }
        }
    }
    var logger = Logger(label: "offloadfs")
    logger.logLevel = level
    return logger
}

/// A swift-log handler that makes each message one line, `message key=value ...`
/// (metadata sorted by key, newlines replaced), and hands it to `emit` with the
/// message's syslog priority.
struct LineLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let emit: @Sendable (_ priority: Int32, _ line: String) -> Void

    init(level: Logger.Level, emit: @escaping @Sendable (Int32, String) -> Void) {
        self.logLevel = level
        self.emit = emit
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        emit(Self.priority(event.level), Self.line(event.message.description,
                                                   metadata: metadata.merging(event.metadata ?? [:]) { $1 }))
    }

    static func line(_ message: String, metadata: Logger.Metadata) -> String {
        var line = message
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        return line.replacingNewlines()
    }

    /// syslog(3) severities.
    static func priority(_ level: Logger.Level) -> Int32 {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }
}

/// The syslog socket (`/dev/log`), spoken directly rather than through syslog(3), whose
/// socket path is fixed: `$OFFLOADFS_SYSLOG_SOCKET` (a test knob) names another one.
/// Each message is one datagram `<PRI>Mmm dd hh:mm:ss offloadfs[PID]: MESSAGE`
/// (RFC 3164, as glibc sends it), sent without blocking: a stuck log reader costs lost
/// lines, never a stalled request. The socket is (re)connected on first use and after a
/// failure, under a lock.
final class SyslogSocket: Sendable {
    /// LOG_DAEMON.
    static let facility: Int32 = 3 << 3
    private let path: String
    private let descriptor = PthreadMutex<Int32>(-1)
    private let kernelLog = KernelLog()

    init(path: String = environment("OFFLOADFS_SYSLOG_SOCKET") ?? "/dev/log") {
        self.path = path
    }

    func send(priority: Int32, _ message: String) {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var stamp = [CChar](repeating: 0, count: 32)
        _ = strftime(&stamp, stamp.count, "%b %e %H:%M:%S", &parts)
        let datagram = Array("<\(Self.facility | priority)>\(String(nulTerminated: stamp)) offloadfs[\(getpid())]: \(message)".utf8)
        descriptor.withLock { fd in
            for attempt in 0..<2 {
                if fd < 0 { fd = connect() }
                guard fd >= 0 else { return kernelLog.send(priority: priority, message) }
                let sent = datagram.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
                if sent >= 0 || errno == EAGAIN || attempt == 1 { return }
                // The reader restarted (ECONNREFUSED, ENOTCONN): connect again once.
                close(fd)
                fd = -1
            }
        }
    }

    private func connect() -> Int32 {
        guard let address = UnixSocketAddress(path), let fd = UnixSocket.connect(to: address, type: SOCK_DGRAM) else {
            return -1
        }
        return fd
    }
}

/// The kernel's log (`/dev/kmsg`), where a background daemon's warnings and errors go when
/// no syslog reader serves `/dev/log`: they were lost before (a hunt of the thirty-sixth
/// session), and `dmesg` is where an administrator of such a machine looks.
/// Informational and debug lines are not sent: the kernel's log is small and shared, and
/// it rate-limits what user space writes. Writing it needs root (its mode is 0644); a
/// daemon that cannot write it loses the lines, as before. `$OFFLOADFS_KMSG` (a test knob)
/// names another file. Each line is `<PRI>offloadfs[PID]: MESSAGE`, cut to 900 bytes (the
/// kernel takes about 1 KiB a record).
final class KernelLog: Sendable {
    private let path = environment("OFFLOADFS_KMSG") ?? "/dev/kmsg"
    /// The open log, -1 before the first line, -2 once it could not be opened.
    private let descriptor = PthreadMutex<Int32>(-1)

    func send(priority: Int32, _ message: String) {
        guard priority <= 4 else { return }  // warning and worse
        var line = Array("<\(SyslogSocket.facility | priority)>offloadfs[\(getpid())]: ".utf8) + Array(message.utf8.prefix(900))
        line.append(0x0A)
        descriptor.withLock { fd in
            if fd == -1 {
                fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NONBLOCK)
                if fd < 0 { fd = -2 }
            }
            guard fd >= 0 else { return }
            _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }
}
