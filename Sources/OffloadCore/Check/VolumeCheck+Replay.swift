/// fsck's check of the tree the next mount would get (docs/ARCHITECTURE.md, "fsck checks
/// the tree the replay leaves"): after a kill or a crash the journal holds operations
/// answered after the last commit, which the mount replays and commits before it answers
/// anything. Checking only the commit said "clean" of an image whose replay then failed
/// the mount or committed a damaged tree. e2fsck replays the journal before it checks;
/// this check may not write the image (it holds only a shared lock, beside a read-only
/// mount), so it replays into an `OverlayImageStorage`, whose changes stay in memory, and
/// checks the commit the replay made there.
extension VolumeCheck {
    /// Checks the image on `storage` as `run` does, or, when journal frames follow its
    /// commit, the tree their replay leaves: the report is then that tree's (`replay`
    /// says which it is), with `generation` and `framesToReplay` still the commit's.
    ///
    /// The replayed tree holds every node of the commit the replay did not change, so a
    /// replay that checks clean stands for both, and the commit is checked on its own
    /// only when something is wrong: the replay fails, finds no room, or leaves problems.
    /// Then a commit with problems is what the report gives (`.notChecked`: repair starts
    /// from it); a clean commit under a replay that fails gives the failure as a problem
    /// (the mount fails the same way), and under a replayed tree with problems, that
    /// tree's problems. So a kill's image, clean as it mostly is, costs one check and a
    /// replay, not two checks.
    /// Memory: `run`'s, and the replay's (the frames, and the nodes and block-tree
    /// changes its commit writes, as pages in memory: both follow the journal, not the
    /// tree).
    public static func runReplaying(_ storage: any ImageStorage, budgetBytes: Int = 64 << 20,
                                    progress: Progress? = nil) throws(FSError) -> Report {
        let slot = try CommitSlots.read(storage).current
        let tail = journalTail(storage, slot)
        /// The commit's own check, when the replay's cannot stand for it.
        func commitOnly() throws(FSError) -> Report {
            var committed = try run(storage, budgetBytes: budgetBytes, progress: progress)
            if committed.framesToReplay > 0, !committed.isClean {
                committed.replay = .notChecked("commit \(committed.generation) or its journal has problems")
            }
            return committed
        }
        guard tail.toReplay > 0, tail.problems.isEmpty else { return try commitOnly() }
        let frames = tail.toReplay
        progress?("replaying the journal in memory", 0, UInt64(frames))
        let overlay = OverlayImageStorage(over: storage)
        let volume: TreeVolume
        do {
            volume = try TreeVolume.open(overlay)
        } catch .damagedImage(let why) {
            // What the frames hold does not replay, or the commit does not open. (Any
            // other error, a read of the image that failed, is the check's: it says
            // nothing of the journal.)
            var committed = try commitOnly()
            guard committed.isClean else { return committed }
            let replayable = try longestReplay(storage, failingAt: frames)
            let kept = replayable.map { "the first \($0) do" } ?? "the commit does not open even without them"
            committed.add("the journal's \(frames) operations after commit \(committed.generation) do not replay "
                          + "(the next mount fails the same way; \(kept)): \(why)")
            committed.replay = .failed(replayable: replayable)
            return committed
        }
        volume.waitForPunches()
        progress?("replaying the journal in memory", UInt64(frames), UInt64(frames))
        if let failure = volume.failure {
            // A full image: a mount at this capacity opens it read-only with the replay in
            // memory; one given more room commits the replay.
            var committed = try commitOnly()
            guard committed.isClean else { return committed }
            committed.replay = .notChecked("the replay's commit does not fit the image's capacity (\(failure)); "
                                           + "a mount with more room (--size) replays it, one without opens it read-only")
            return committed
        }
        var replayed = try run(overlay, budgetBytes: budgetBytes, progress: progress)
        if !replayed.isClean {
            let committed = try commitOnly()
            guard committed.isClean else { return committed }
        }
        replayed.problems = replayed.problems.map { "after the journal's replay: \($0)" }
        replayed.generation = slot.generation
        replayed.framesToReplay = frames
        replayed.journalFrames = tail.frames
        replayed.replay = .checked
        return replayed
    }

    /// How many of the first frames after the commit replay, when all `frames` do not: a
    /// binary search over opening with that many (`TreeVolume.open(replayingAtMost:)`,
    /// each in an overlay of its own), so about log2(frames) replays. An opening counts
    /// only when it commits (one whose commit found no room could not be made the
    /// image's either). A frame's replay fails on what it or the frames before it hold (a
    /// claim of its extents, its changes recorded over theirs, their commit), so longer
    /// replays fail too, but not surely: frames that left a failure a later one undoes
    /// would make the search stop short of the longest prefix that replays (it still
    /// finds one that does). nil when the commit does not open even with no frame
    /// replayed. Errors other than damage (a failed read) are thrown.
    static func longestReplay(_ storage: any ImageStorage, failingAt frames: Int) throws(FSError) -> Int? {
        func replays(_ count: Int) throws(FSError) -> Bool {
            do {
                return try TreeVolume.open(OverlayImageStorage(over: storage), replayingAtMost: count).failure == nil
            } catch .damagedImage {
                return false
            }
        }
        guard try replays(0) else { return nil }
        var replaying = 0, failing = frames
        while failing - replaying > 1 {
            let middle = replaying + (failing - replaying) / 2
            if try replays(middle) { replaying = middle } else { failing = middle }
        }
        return replaying
    }
}
