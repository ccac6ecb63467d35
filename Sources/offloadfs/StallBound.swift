import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// How long a waiter lets the daemon go without progress before it gives up.
///
/// `offloadfs mount` (background) waits for the daemon to report readiness, and
/// `offloadfs unmount` for it to write its last checkpoint and let go of the image. Both
/// take time that grows with the tree (replay and rebuild at mount, the checkpoint at
/// unmount), so neither waits a fixed time: the daemon reports each phase and its
/// progress (`ProgressMeter`, passed on by `ProgressReporter` four times a second when
/// it moved), and a waiter gives up only after this long without any change. The same
/// bound is what systemd gets as `EXTEND_TIMEOUT_USEC` with each progress report.
///
/// Default 60 s: every phase that can take long reports progress at least every few
/// thousand inodes or every metadata frame, so a minute without change means the daemon
/// is stuck (or its disk is). `$OFFLOADFS_STALL_SECONDS` overrides it (for tests, or a
/// very slow disk).
enum StallBound {
    static let defaultSeconds = 60.0

    static var seconds: Double {
        environment("OFFLOADFS_STALL_SECONDS").flatMap(Double.init).map { max($0, 0.1) } ?? defaultSeconds
    }
}

/// Test knobs for the daemon's start-up and shutdown; not for normal use.
///
/// `OFFLOADFS_TEST_SLOW_PHASE=PHASE:SECONDS` makes the daemon spend SECONDS more at the
/// start of PHASE (a `ImageFileSystem.Phase` name, e.g. "writing a checkpoint"),
/// reporting progress every 0.1 s as a long phase does; `PHASE:SECONDS:stall` spends
/// them without reporting anything, as a stuck daemon would. The progress-following
/// waits are tested with them.
enum StartupTestKnobs {
    static func phaseHook() -> (@Sendable (ProgressMeter, String) -> Void)? {
        guard let value = environment("OFFLOADFS_TEST_SLOW_PHASE") else { return nil }
        let parts = value.split(separator: ":").map(String.init)
        guard parts.count >= 2, let seconds = Double(parts[1]) else { return nil }
        let phase = parts[0], stall = parts.count > 2 && parts[2] == "stall"
        return { meter, begun in
            guard begun == phase else { return }
            let steps = Int(seconds * 10)
            for step in 0..<steps {
                usleep(100_000)
                if !stall { meter.update(done: UInt64(step + 1), total: UInt64(steps)) }
            }
        }
    }
}
