import Dispatch
import OffloadCore

/// Watches a `ProgressMeter` while the daemon starts or stops, and passes each new
/// reading on (to the waiting `offloadfs mount` and to systemd): every `interval`
/// seconds it takes a reading and calls `report` if the reading differs from the last
/// one. A phase that stops moving therefore stops producing reports, which is what the
/// waiters measure (`Daemon.stallSeconds`). (`@unchecked Sendable`: the timer is only
/// touched by `init` and `stop`.)
final class ProgressReporter: @unchecked Sendable {
    private let timer: DispatchSourceTimer
    private let queue = DispatchQueue(label: "offloadfs.progress")

    init(meter: ProgressMeter, interval: Double = 0.25,
         report: @escaping @Sendable (ProgressMeter.Reading) -> Void) {
        timer = DispatchSource.makeTimerSource(queue: queue)
        let last = PthreadMutex<ProgressMeter.Reading?>(nil)
        timer.schedule(deadline: .now(), repeating: interval)
        timer.setEventHandler {
            let reading = meter.reading
            let changed = last.withLock { last -> Bool in
                defer { last = reading }
                return last != reading
            }
            if changed { report(reading) }
        }
        timer.resume()
    }

    /// No reports after this returns.
    func stop() {
        timer.cancel()
        queue.sync {}
    }
}
