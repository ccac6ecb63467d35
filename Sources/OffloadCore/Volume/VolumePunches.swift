import Dispatch

/// The punch of a commit's retirable pending frees, off the committing caller's path
/// (docs/ARCHITECTURE.md, step 4e): a commit starts it once its slot is durable and
/// returns; the next commit waits for it (`finish`) before its block space may retire
/// those frees, and only a punch that finished lets them retire. So the order of 4c is
/// kept exactly (punched while pending, retired by a later commit, reused after that one
/// is durable) and only the wait moves: to the next commit, by which time the punch has
/// usually run beside the generation's operations. A crash before it finished leaves the
/// frees pending, which opening punches again.
///
/// One punch at a time, started and waited for under the volume's commit lock
/// (`TreeVolume+Punches`); `ImageStorage` may be called from any thread. Dropping the
/// owner waits too, so no punch of a volume outlives it (another volume on the image
/// could reuse the blocks).
final class VolumePunches: @unchecked Sendable {
    struct Finished {
        /// The last generation whose pending frees were punched (when `failure` is nil).
        var through: UInt64
        var blocks: Int
        var failure: FSError?
    }

    private let queue = DispatchQueue(label: "offloadfs.volume-punches")
    private let group = DispatchGroup()
    /// The punch started and not yet waited for (under the commit lock, as the rest).
    private var inFlight: (through: UInt64, blocks: Int)?
    /// The punch the commit in progress waited for, for its report (`takeAccepted`).
    var accepted: Finished?
    /// What the punch in flight ended with (written by the queue, read after `group.wait`).
    private let outcome = PthreadMutex<FSError?>(nil)

    /// Starts punching `ranges`, the pending frees of generations through `through`.
    /// `counter` counts it once it ended, before `finish` may return.
    func start(_ ranges: [Range<UInt64>], through: UInt64, in storage: any ImageStorage, counter: PunchCounter) {
        precondition(inFlight == nil, "a punch is in flight: finish it first")
        inFlight = (through, ranges.reduce(0) { $0 + $1.count })
        let outcome = outcome
        queue.async(group: group) {
            let failure: FSError?
            do throws(FSError) {
                try TreeVolume.punch(ranges, in: storage)
                failure = nil
            } catch {
                failure = error
            }
            counter.finished()
            outcome.withLock { $0 = failure }
        }
    }

    /// Waits for the punch in flight and tells how it ended; nil when none was started.
    func finish() -> Finished? {
        guard let job = inFlight else { return nil }
        group.wait()
        inFlight = nil
        return Finished(through: job.through, blocks: job.blocks, failure: outcome.withLock { $0 })
    }

    /// The punch accepted for the commit in progress, once.
    func takeAccepted() -> Finished? {
        defer { accepted = nil }
        return accepted
    }

    deinit { group.wait() }
}
