import Dispatch
import OffloadCore

/// A mount's background maintenance (both formats): `tick` every `interval` seconds on a
/// serial queue of its own, a failure reported once while it lasts (a latched fdatasync
/// error would otherwise be reported every tick), `wake`, which runs a tick soon, and
/// `stop`, which cancels the timer and waits for a tick in progress.
final class MaintenanceTimer: @unchecked Sendable {
    // @unchecked: `source` and `wakePending` are reached only under `lock`; `tick`,
    // `onError` and `lastError` only on `queue`.
    private let queue = DispatchQueue(label: "offloadfs.maintenance")
    private let lock = PthreadLock()
    private var source: DispatchSourceTimer?
    /// A `wake` queued a tick that has not started yet.
    private var wakePending = false
    private var tick: (@Sendable () throws(FSError) -> Void)?
    private var onError: (@Sendable (FSError) -> Void)?
    private var lastError: FSError?

    func start(interval: Double, tick: @escaping @Sendable () throws(FSError) -> Void,
               onError: @escaping @Sendable (FSError) -> Void) {
        queue.sync {
            self.tick = tick
            self.onError = onError
        }
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + interval, repeating: interval)
        source.setEventHandler { [self] in runTick() }
        lock.withLock { self.source = source }
        source.resume()
    }

    /// Runs a tick soon, between the timer's (on the same queue), without waiting for it;
    /// calls while one is queued and not started add nothing. Nothing once stopped.
    func wake() {
        let queued = lock.withLock { () -> Bool in
            guard source != nil, !wakePending else { return false }
            wakePending = true
            return true
        }
        guard queued else { return }
        queue.async { [self] in
            let running = lock.withLock { () -> Bool in
                wakePending = false
                return source != nil
            }
            if running { runTick() }
        }
    }

    /// On `queue`.
    private func runTick() {
        guard let tick, let onError else { return }
        do throws(FSError) {
            try tick()
            lastError = nil
        } catch {
            if error != lastError { onError(error) }
            lastError = error
        }
    }

    /// Cancels the timer (if it runs) and waits for a tick in progress to end. Lets go of
    /// `tick`, which holds the file system that holds this timer (an image whose file
    /// system is never released stays locked: the next open of it found it busy).
    func stop() {
        let running = lock.withLock { () -> DispatchSourceTimer? in
            defer { source = nil }
            return source
        }
        guard let running else { return }
        running.cancel()
        queue.sync {
            tick = nil
            onError = nil
            lastError = nil
        }
    }
}
