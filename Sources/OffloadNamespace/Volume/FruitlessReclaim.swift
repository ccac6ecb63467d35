import OffloadCore
import Synchronization

/// The last reclaim after ENOSPC that gave back too little for the change it ran for
/// (`VolumeNamespace.afterReclaim`), by the volume's release count when it began
/// (`TreeVolume.releaseCount`). A reclaim's commits give back only what operations and
/// file block calls released before it, so until something is released again another
/// reclaim finds nothing either: a change refused meanwhile answers ENOSPC at once, as
/// ext4 and tmpfs answer it, instead of running up to sixteen commits with the namespace
/// lock held alone (every change on a full image paid them, and every other change waited
/// behind them). For at most `validNanoseconds`: what the count does not see (a reader
/// that held back a punch, a reclaim cut short waiting for readers) gets a reclaim again
/// after that.
final class FruitlessReclaim: Sendable {
    /// The release count at the reclaim, plus one (0: none yet).
    private let releases = Atomic<UInt64>(0)
    private let endedAt = Atomic<UInt64>(0)

    /// How long a reclaim that found nothing stands for the next ones: a second.
    static let validNanoseconds: UInt64 = 1_000_000_000

    /// True when a reclaim began at `releases` (the count now) less than
    /// `validNanoseconds` ago and found nothing.
    func foundNothing(since releases: UInt64) -> Bool {
        guard self.releases.load(ordering: .acquiring) == releases &+ 1 else { return false }
        return MonotonicClock.nanoseconds() &- endedAt.load(ordering: .relaxed) < Self.validNanoseconds
    }

    /// A reclaim that began at release count `releases` found nothing.
    func record(_ releases: UInt64) {
        endedAt.store(MonotonicClock.nanoseconds(), ordering: .relaxed)
        self.releases.store(releases &+ 1, ordering: .releasing)
    }
}
