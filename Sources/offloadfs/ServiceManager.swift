import Dispatch
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// What the daemon tells a service manager (systemd with `Type=notify`, see
/// systemd/offloadfs@.service) about its life, through `NotifySocket`:
///
/// - while it starts and while it stops: `STATUS=` with the phase and its progress, and
///   `EXTEND_TIMEOUT_USEC=` (the stall bound) whenever the progress moved, so systemd's
///   start and stop timeouts follow progress like `offloadfs mount` does;
/// - `READY=1` once the mount answers a request (a `statfs` through the kernel), with
///   `STATUS=serving ...` and a summary refreshed every 30 s;
/// - `STOPPING=1` as soon as the session ends (unmount or SIGTERM), before the final
///   checkpoint;
/// - with `$WATCHDOG_USEC`, `WATCHDOG=1` every half period, each one only after a
///   `statfs` of the mount has been answered by a FUSE worker thread: a daemon whose
///   request path hangs stops sending, and systemd restarts it (`Restart=on-failure`).
///
/// Without `$NOTIFY_SOCKET` every method does nothing.
final class ServiceManager: Sendable {
    private let socket: NotifySocket?
    /// Seconds between watchdog pings: half of $WATCHDOG_USEC (if it is meant for us).
    let watchdogInterval: Double?
    private let stallSeconds: Double
    private let queue = DispatchQueue(label: "offloadfs.service-manager")
    private let timers = PthreadMutex<[Timer]>([])

    init(stallSeconds: Double) {
        socket = NotifySocket.fromEnvironment()
        self.stallSeconds = stallSeconds
        watchdogInterval = Self.watchdogInterval(usec: environment("WATCHDOG_USEC"), pid: environment("WATCHDOG_PID"))
    }

    var isPresent: Bool { socket != nil }

    /// Half of `$WATCHDOG_USEC`, if it is set and `$WATCHDOG_PID` (when set) is us.
    static func watchdogInterval(usec: String?, pid: String?) -> Double? {
        guard let usec = usec.flatMap(UInt64.init), usec > 0 else { return nil }
        if let pid, Int32(pid) != getpid() { return nil }
        return Double(usec) / 2e6
    }

    /// A start-up or shutdown step moved: say what it is, and give it another stall bound.
    func progress(_ text: String) {
        socket?.send(["STATUS=\(text)", "EXTEND_TIMEOUT_USEC=\(UInt64(stallSeconds * 1e6))"])
    }

    /// The mount answers; `summary` describes it now and every 30 s from then on.
    func ready(summary: @escaping @Sendable () -> String) {
        guard let socket else { return }
        socket.send(["READY=1", "MAINPID=\(getpid())", "STATUS=\(summary())"])
        schedule(every: 30) { socket.send(["STATUS=\(summary())"]) }
    }

    /// The session ended: the daemon writes its last checkpoint and exits.
    func stopping(_ text: String) {
        cancelTimers()
        socket?.send(["STOPPING=1", "STATUS=\(text)"])
    }

    /// Pings the watchdog while `probe` (a statfs of the mount) succeeds.
    func startWatchdog(probe: @escaping @Sendable () -> Bool) {
        guard let socket, let watchdogInterval else { return }
        schedule(every: watchdogInterval) {
            if probe() { socket.send(["WATCHDOG=1"]) }
        }
    }

    func cancelTimers() {
        let running = timers.withLock { timers -> [Timer] in
            defer { timers = [] }
            return timers
        }
        for timer in running { timer.source.cancel() }
    }

    private func schedule(every seconds: Double, _ body: @escaping @Sendable () -> Void) {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + seconds, repeating: seconds)
        timer.setEventHandler(handler: body)
        let box = Timer(source: timer)
        timers.withLock { $0.append(box) }
        timer.resume()
    }

    /// A Dispatch timer, passed between threads only to be cancelled.
    private final class Timer: @unchecked Sendable {
        let source: DispatchSourceTimer
        init(source: DispatchSourceTimer) { self.source = source }
    }
}
