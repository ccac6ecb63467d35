import OffloadCore
import Synchronization

/// The last reclaim after ENOSPC that ended with a round giving nothing back and the
/// change it ran for still refused (`VolumeNamespace.afterReclaim`), by the volume's
/// release count when it began (`TreeVolume.releaseCount`). Space comes back through
/// releases (names, xattrs and inodes removed, file blocks let go of) and through
/// commits (old journal chains, RAM pieces placed, changes waiting settled). So while
/// the count is unchanged and no commit has anything to settle
/// (`TreeVolume.waitsForNoCommit`), another reclaim finds nothing either: a change refused
/// then answers ENOSPC at once, as ext4 and tmpfs answer it, instead of running up to
/// sixteen commits with the namespace lock held alone (every refused change on a full
/// image paid them, and every other change waited behind them). For at most
/// `validNanoseconds` after that reclaim (each fruitless reclaim starts the window again):
/// what neither sees (a reader that held back a punch, a reclaim cut short waiting for
/// readers, a setxattr that shrank a value) gets a reclaim again after it.
final class FruitlessReclaim: Sendable {
    /// The release count at the reclaim, plus one (0: none yet).
    private let releases = Atomic<UInt64>(0)
    private let endedAt = Atomic<UInt64>(0)
    /// The volume's count of refused writes' blocks given back (`TreeVolume.givenBackCount`)
    /// when the reclaim ended.
    private let givenBack = Atomic<UInt64>(0)

    /// How long a reclaim that found nothing stands for the next ones: a second.
    static let validNanoseconds: UInt64 = 1_000_000_000

    /// True when a reclaim began at `releases` (the count now) less than
    /// `validNanoseconds` ago and found nothing.
    func foundNothing(since releases: UInt64) -> Bool {
        guard self.releases.load(ordering: .acquiring) == releases &+ 1 else { return false }
        return MonotonicClock.nanoseconds() &- endedAt.load(ordering: .relaxed) < Self.validNanoseconds
    }

    /// A reclaim that began at release count `releases` found nothing; `givenBack`: the
    /// count of refused writes' blocks given back as it ended.
    func record(_ releases: UInt64, givenBack: UInt64) {
        endedAt.store(MonotonicClock.nanoseconds(), ordering: .relaxed)
        self.givenBack.store(givenBack, ordering: .relaxed)
        self.releases.store(releases &+ 1, ordering: .releasing)
    }

    /// Whether a refused write gave blocks back since that reclaim, by the count now
    /// (`TreeVolume.givenBackCount`): they are not a release, but a change refused while
    /// another write held them may fit them.
    func blocksGivenBack(countNow: UInt64) -> Bool {
        givenBack.load(ordering: .relaxed) != countNow
    }
}
