import Dispatch
import OffloadCore

/// A mount's background maintenance (both formats): `tick` every `interval` seconds on a
/// serial queue of its own, a failure reported once while it lasts (a latched fdatasync
/// error would otherwise be reported every tick), and `stop`, which cancels the timer and
/// waits for a tick in progress.
final class MaintenanceTimer: @unchecked Sendable {
    // @unchecked: `source` is reached only under `lock`; `lastError` only on `queue`.
    private let queue = DispatchQueue(label: "offloadfs.maintenance")
    private let lock = PthreadLock()
    private var source: DispatchSourceTimer?

    func start(interval: Double, tick: @escaping @Sendable () throws(FSError) -> Void,
               onError: @escaping @Sendable (FSError) -> Void) {
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + interval, repeating: interval)
        // Runs on the serial queue only.
        nonisolated(unsafe) var lastError: FSError?
        source.setEventHandler {
            do throws(FSError) {
                try tick()
                lastError = nil
            } catch {
                if error != lastError { onError(error) }
                lastError = error
            }
        }
        lock.withLock { self.source = source }
        source.resume()
    }

    /// Cancels the timer (if it runs) and waits for a tick in progress to end.
    func stop() {
        let running = lock.withLock { () -> DispatchSourceTimer? in
            defer { source = nil }
            return source
        }
        guard let running else { return }
        running.cancel()
        queue.sync {}
    }
}
