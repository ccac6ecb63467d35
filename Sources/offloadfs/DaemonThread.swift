#if canImport(Glibc)
import Glibc
#endif

/// A plain pthread running one closure: the daemon's few long-lived helpers (status
/// server, readiness probe, watchdog) block in system calls, which must not tie up
/// Dispatch's or Swift concurrency's shared threads.
final class DaemonThread: @unchecked Sendable {
    private var thread = pthread_t()
    private var started = false

    /// Starts `body` on a new thread; nil (with the reason in errno) if none could be made.
    static func start(_ body: @escaping @Sendable () -> Void) -> DaemonThread? {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let handle = DaemonThread()
        let status = pthread_create(&handle.thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        }, box)
        guard status == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            errno = status
            return nil
        }
        handle.started = true
        return handle
    }

    /// Lets the thread end by itself, its resources freed then (no `join`).
    func detach() {
        guard started else { return }
        started = false
        pthread_detach(thread)
    }

    /// Waits for the body to return. Call at most once.
    func join() {
        guard started else { return }
        started = false
        pthread_join(thread, nil)
    }

    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
}
