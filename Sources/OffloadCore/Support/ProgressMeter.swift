import Synchronization

/// How far a long step (opening an image, a checkpoint) has come, for others to read while
/// it runs.
///
/// One thread at a time does the work and moves the meter (`begin` a phase, `update` its
/// count); any thread may take a `reading` at any moment. The daemon turns readings into
/// progress lines for the waiting `offloadfs mount`, systemd `STATUS=` lines, and the
/// phase `offloadfs status` shows, so that waiters give up only when nothing moves any
/// more, never after a fixed time (a large image takes long, but it keeps moving).
///
/// Updates are cheap (one uncontended lock), and callers make them per frame or per few
/// thousand inodes, never per byte.
public final class ProgressMeter: Sendable {
    public enum Unit: String, Sendable, Codable {
        case bytes, items
    }

    public struct Reading: Equatable, Sendable {
        /// What is being done, in words ("reading metadata").
        public var phase: String
        public var done: UInt64
        /// 0 when the amount of work is not known.
        public var total: UInt64
        public var unit: Unit

        public init(phase: String, done: UInt64 = 0, total: UInt64 = 0, unit: Unit = .items) {
            self.phase = phase
            self.done = done
            self.total = total
            self.unit = unit
        }

        /// "reading metadata 12/80 MiB", "writing a checkpoint 4096/20000", "syncing".
        public var description: String {
            guard total > 0 || done > 0 else { return phase }
            switch unit {
            case .bytes: return "\(phase) \(done >> 20)/\(max(total, done) >> 20) MiB"
            case .items: return total > 0 ? "\(phase) \(done)/\(total)" : "\(phase) \(done)"
            }
        }
    }

    private let state: Mutex<Reading>
    private let onPhase: (@Sendable (ProgressMeter, String) -> Void)?

    /// `onPhase` runs on the working thread each time a phase begins, before its work
    /// (the daemon's test knobs use it to slow a phase down).
    public init(phase: String = "starting", onPhase: (@Sendable (ProgressMeter, String) -> Void)? = nil) {
        state = Mutex(Reading(phase: phase))
        self.onPhase = onPhase
    }

    public var reading: Reading { state.withLock { $0 } }

    /// A new phase starts, with `total` units of work (0 if not known).
    public func begin(_ phase: String, total: UInt64 = 0, unit: Unit = .items) {
        state.withLock { $0 = Reading(phase: phase, total: total, unit: unit) }
        onPhase?(self, phase)
    }

    /// `done` units of the current phase are done (and the total is now `total`).
    public func update(done: UInt64, total: UInt64? = nil) {
        state.withLock { reading in
            reading.done = done
            if let total { reading.total = total }
        }
    }
}
