import OffloadCore

/// When a mount's maintenance commits format 2's open generation (docs/ARCHITECTURE.md,
/// "When format 2 commits"). A commit moves the journal's changes into the trees: its
/// cost is per object changed (tree inserts, placed file bytes) plus a fixed part (two
/// fdatasyncs, the slot), and a file made and removed before it costs it nothing. So the
/// maintenance does not commit at every tick while operations come in, as it did until
/// 2026-12-03 (in the middle of `tar -x` and `rm -rf`); it commits
/// - once the open generation is three quarters of the way to the volume's limits
///   (`TreeVolume.budget`: 48 MiB of journal, what replay after a crash reads, 15,000
///   changed objects, or 24 MiB of item bytes, about 12 MiB of xattr values, names and
///   extents: what the delta holds in RAM); the namespace wakes the maintenance
///   for it, so operations seldom reach the limits and commit on their own path, under
///   the namespace lock,
/// - once the journal since the last commit holds `journalBytes`, when given,
/// - once nothing was appended for `idleSeconds` (a mount at rest holds nothing
///   uncommitted for long, and what `rm` freed becomes free space soon after),
/// - once the last commit is `maximumAgeSeconds` old (a trickle of changes is committed
///   too, and what an `rm` freed comes back within five such commits, the reuse rule's),
/// - at every tick that finds a change while the image is low on free space
///   (`isLowOnSpace`): a commit takes its nodes from free blocks, and from the metadata
///   reserve (8 MiB at most) only when those are gone, which a generation kept large
///   would not fit; and the journal's segments come from free blocks too. So a small or
///   nearly full image commits as often as before.
public struct VolumeCommitPolicy: Sendable, Equatable {
    /// nil: no threshold of its own (the volume's budget).
    public var journalBytes: UInt64?
    /// nil: no commit for being idle.
    public var idleSeconds: Double?
    /// nil: no commit for age.
    public var maximumAgeSeconds: Double?

    public init(journalBytes: UInt64? = nil, idleSeconds: Double? = 1, maximumAgeSeconds: Double? = 10) {
        self.journalBytes = journalBytes.map { max($0, 1) }
        self.idleSeconds = idleSeconds
        self.maximumAgeSeconds = maximumAgeSeconds
    }

    /// Commits at every tick that finds at least `journalBytes` of journal: the crash
    /// soak's and the tests' setting (`OFFLOADFS_CHECKPOINT_AFTER`), which wants commits
    /// while operations run.
    public static func everyTick(journalBytes: UInt64) -> VolumeCommitPolicy {
        VolumeCommitPolicy(journalBytes: journalBytes, idleSeconds: nil, maximumAgeSeconds: nil)
    }

    /// Whether changes since the last commit (`journalBytes` > 0 of journal) are
    /// committed now.
    public func commitsChanges(journalBytes: UInt64, budget: TreeVolume.BudgetUse, lowOnSpace: Bool,
                               secondsSinceLastAppend: Double?, secondsSinceCommit: Double) -> Bool {
        guard journalBytes > 0 else { return false }
        if budget != .under || lowOnSpace { return true }
        if let threshold = self.journalBytes, journalBytes >= threshold { return true }
        if let idleSeconds, (secondsSinceLastAppend ?? .infinity) >= idleSeconds { return true }
        if let maximumAgeSeconds, secondsSinceCommit >= maximumAgeSeconds { return true }
        return false
    }

    /// Less free space than 64 MiB, or than an eighth of the capacity up to 1 GiB.
    public static func isLowOnSpace(availableBytes: UInt64, capacityBytes: UInt64) -> Bool {
        availableBytes < max(64 << 20, min(capacityBytes / 8, 1 << 30))
    }
}
