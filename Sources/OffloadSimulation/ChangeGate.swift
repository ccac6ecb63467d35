import Dispatch

/// Holds the first change of a `CrashSimulatingStorage` that `holding` picks (a commit's
/// sync, the punch of given blocks): the thread making it waits at the gate until `open()`
/// or the timeout, so a test can act while that change is pending and then tell whether
/// anything it did waited for it (`timedOut`). One change is held; the hook then removes
/// itself.
public final class ChangeGate: @unchecked Sendable {
    /// Signalled when the held change arrives.
    public let reached = DispatchSemaphore(value: 0)
    private let release = DispatchSemaphore(value: 0)
    /// True when the gate stopped waiting for `open()` by itself: what the test did while
    /// the change was held waited for it. Read after `open()`.
    public private(set) var timedOut = false

    public init(_ disk: CrashSimulatingStorage, timeoutSeconds: Double = 20,
                holding holds: @escaping @Sendable (CrashSimulatingStorage.Change) -> Bool) {
        disk.beforeChange { [self] change in
            guard holds(change) else { return }
            disk.beforeChange(nil)
            reached.signal()
            timedOut = release.wait(timeout: .now() + timeoutSeconds) == .timedOut
        }
    }

    /// Lets the held change go on.
    public func open() { release.signal() }

    /// Picks a sync (a commit's fdatasync).
    @Sendable public static func sync(_ change: CrashSimulatingStorage.Change) -> Bool {
        if case .sync = change { return true }
        return false
    }
}
