import OffloadCore

/// When a mount's maintenance commits format 2's open generation (docs/ARCHITECTURE.md,
/// "When format 2 commits"). A commit moves the journal's changes into the trees: its
/// cost is per object changed (tree inserts, placed file bytes) plus a fixed part (two
/// fdatasyncs, the slot), and a file made and removed before it costs it nothing. So the
/// maintenance does not commit at every tick while operations come in, as it did until
/// 2026-12-03 (in the middle of `tar -x` and `rm -rf`); it commits
/// - once the open generation is three quarters of the way to the volume's limits
///   (`TreeVolume.budget`: 48 MiB of journal, what replay after a crash reads, or 15,000
///   changed objects, what the delta holds in RAM); the namespace wakes the maintenance
///   for it, so operations seldom reach the limits and commit on their own path, under
///   the namespace lock,
/// - once the journal since the last commit holds `journalBytes`, when given,
/// - once nothing was appended for `idleSeconds` (a mount at rest holds nothing
///   uncommitted for long, and what `rm` freed becomes free space soon after),
/// - once the last commit is `maximumAgeSeconds` old (a trickle of changes is committed
///   too).
public struct VolumeCommitPolicy: Sendable, Equatable {
    /// nil: no threshold of its own (the volume's budget).
    public var journalBytes: UInt64?
    /// nil: no commit for being idle.
    public var idleSeconds: Double?
    /// nil: no commit for age.
    public var maximumAgeSeconds: Double?

    public init(journalBytes: UInt64? = nil, idleSeconds: Double? = 1, maximumAgeSeconds: Double? = 30) {
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
    public func commitsChanges(journalBytes: UInt64, budget: TreeVolume.BudgetUse,
                               secondsSinceLastAppend: Double?, secondsSinceCommit: Double) -> Bool {
        guard journalBytes > 0 else { return false }
        if budget != .under { return true }
        if let threshold = self.journalBytes, journalBytes >= threshold { return true }
        if let idleSeconds, (secondsSinceLastAppend ?? .infinity) >= idleSeconds { return true }
        if let maximumAgeSeconds, secondsSinceCommit >= maximumAgeSeconds { return true }
        return false
    }
}
