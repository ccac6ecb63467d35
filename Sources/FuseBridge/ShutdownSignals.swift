import CFuse
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// SIGINT and SIGTERM (and SIGHUP, unless someone chose to ignore it) end the session
/// loop; the loop's caller then unmounts cleanly.
///
/// Why not `fuse_set_signal_handlers`: it installs only where the disposition is SIG_DFL,
/// so a daemon started from a non-interactive shell with `&` (SIGINT ignored) could never
/// be stopped with SIGINT; and its handler only sets the exit flag, which wakes the loop
/// only if the signal happens to land on the loop thread or a worker. A process-directed
/// signal may be delivered to any thread, so this handler also forwards it to the thread
/// running the loop, whose sem_wait then returns EINTR and sees the flag (the handler is
/// installed without SA_RESTART for that reason). Everything the handler touches is an
/// atomic set before it is installed, and it calls only async-signal-safe functions
/// (fuse_session_exit just stores a flag; pthread_kill).
enum ShutdownSignals {
    private static let sessionBits = Atomic<UInt>(0)
    private static let loopThread = Atomic<UInt>(0)
    private static let lastSignal = Atomic<Int32>(0)
    private static let installedHangup = Atomic<Bool>(false)

    /// The signal that ended the loop, if one did.
    static var received: Int32? {
        let value = lastSignal.load(ordering: .acquiring)
        return value == 0 ? nil : value
    }

    /// Installs the handlers for `session`; must be called on the thread that then runs
    /// the session loop. A signal that arrives before the loop starts sets the session's
    /// exit flag, so the loop returns at once.
    static func install(session: OpaquePointer) {
        lastSignal.store(0, ordering: .releasing)
        sessionBits.store(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(session))), ordering: .releasing)
        loopThread.store(UInt(pthread_self()), ordering: .releasing)
        offloadfs_install_signal_handler(SIGINT, handle)
        offloadfs_install_signal_handler(SIGTERM, handle)
        if offloadfs_signal_is_default(SIGHUP) != 0 {
            offloadfs_install_signal_handler(SIGHUP, handle)
            installedHangup.store(true, ordering: .releasing)
        }
        // A reader that went away must not kill the daemon; writes report EPIPE instead.
        offloadfs_set_signal_ignored(SIGPIPE)
    }

    /// Restores the default dispositions once the loop has returned.
    static func remove() {
        offloadfs_set_signal_default(SIGINT)
        offloadfs_set_signal_default(SIGTERM)
        if installedHangup.exchange(false, ordering: .acquiringAndReleasing) {
            offloadfs_set_signal_default(SIGHUP)
        }
        sessionBits.store(0, ordering: .releasing)
        loopThread.store(0, ordering: .releasing)
    }

    private static let handle: @convention(c) (Int32) -> Void = { signal in
        ShutdownSignals.lastSignal.store(signal, ordering: .releasing)
        if let session = OpaquePointer(bitPattern: ShutdownSignals.sessionBits.load(ordering: .acquiring)) {
            fuse_session_exit(session)
        }
        let loop = ShutdownSignals.loopThread.load(ordering: .acquiring)
        if loop != 0 && UInt(pthread_self()) != loop {
            pthread_kill(pthread_t(loop), signal)
        }
    }
}
