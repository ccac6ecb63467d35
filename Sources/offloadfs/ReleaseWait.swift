#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs unmount`'s wait for the daemon to let go of the image, like umount(8) on
/// a block filesystem: once it returns, the image may be mounted again at once.
///
/// After the kernel unmount the daemon writes its last checkpoint, which takes time that
/// grows with the tree; it holds the image's flock until it exits. So the wait follows
/// the daemon's progress instead of a fixed time: it polls the flock (for an image
/// replaced at its path, the daemon's process) every 50 ms and the daemon's status
/// socket every 0.5 s (state, phase and count; `heard` gets each answer), and gives up only when neither has
/// changed for `StallBound.seconds`. A daemon whose status cannot be
/// read (none found, or an older offloadfs) shows no progress, so the bound then counts
/// from the unmount.
enum ReleaseWait {
    enum Outcome: Equatable {
        case released
        /// No progress for the stall bound; `last` is what the daemon last reported.
        case stalled(last: String)
    }

    /// `mount` is the mount as it was before the unmount (its status socket follows the
    /// final checkpoint); nil if it was not found. `released` says when the daemon has let
    /// go: normally the image at its path is unlocked; for an image replaced at its path,
    /// whose file the daemon holds under no name, its process has exited. `daemon` is the
    /// daemon's pid when known: the socket is named after the mount's device number, which
    /// the kernel gives the next FUSE mount once this one is gone, so only an answer from
    /// that pid (or, unknown, for the same image) counts as progress.
    static func wait(until released: () -> Bool, mount: MountInfo?, daemon: Int32?,
                     stallSeconds: Double = StallBound.seconds, heard: (MountStatus) -> Void = { _ in }) -> Outcome {
        var lastChange = now()
        var lastQuery = 0.0
        var lastReading = "unmounting"
        while true {
            if released() { return .released }
            let current = now()
            if let mount, current - lastQuery >= 0.5 {
                lastQuery = current
                let ours = { (status: MountStatus) in daemon.map { status.pid == $0 } ?? (status.image.path == mount.source) }
                if case .success(let status) = StatusClient.query(mount, timeoutSeconds: 2, accepting: ours) {
                    heard(status)
                    let reading = status.progress.map { "\(status.state): \(StatusFormat.describe($0))" } ?? status.state
                    if reading != lastReading {
                        lastReading = reading
                        lastChange = now()
                    }
                }
            }
            if now() - lastChange > stallSeconds { return .stalled(last: lastReading) }
            usleep(50_000)
        }
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
