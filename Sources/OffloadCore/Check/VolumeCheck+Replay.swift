/// fsck's check of the tree the next mount would get (docs/ARCHITECTURE.md, "fsck checks
/// the tree the replay leaves"): after a kill or a crash the journal holds operations
/// answered after the last commit, which the mount replays and commits before it answers
/// anything. Checking only the commit said "clean" of an image whose replay then failed
/// the mount or committed a damaged tree. e2fsck replays the journal before it checks;
/// this check may not write the image (it holds only a shared lock, beside a read-only
/// mount), so it replays into an `OverlayImageStorage`, whose changes stay in memory, and
/// checks the commit the replay made there.
extension VolumeCheck {
    /// Checks the image on `storage` as `run` does and, when journal frames follow a
    /// commit that checks clean, the tree their replay leaves: the report is then that
    /// tree's (`replay` says which it is), with `generation` and `framesToReplay` still
    /// the commit's. A replay that fails is a problem (the mount fails the same way).
    /// A commit with problems is not replayed over: repair starts from it.
    /// Memory: `run`'s, and the replay's (the frames, and the nodes and block-tree
    /// changes its commit writes, as pages in memory: both follow the journal, not the
    /// tree).
    public static func runReplaying(_ storage: any ImageStorage, budgetBytes: Int = 64 << 20,
                                    progress: Progress? = nil) throws(FSError) -> Report {
        var committed = try run(storage, budgetBytes: budgetBytes, progress: progress)
        guard committed.framesToReplay > 0 else { return committed }
        guard committed.isClean else {
            committed.replay = .notChecked("commit \(committed.generation) has problems")
            return committed
        }
        let frames = committed.framesToReplay
        progress?("replaying the journal in memory", 0, UInt64(frames))
        let overlay = OverlayImageStorage(over: storage)
        let volume: TreeVolume
        do {
            volume = try TreeVolume.open(overlay)
        } catch .damagedImage(let why) {
            // What the frames hold does not replay. (Any other error, a read of the image
            // that failed, is the check's: it says nothing of the journal.)
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
            committed.replay = .notChecked("the replay's commit does not fit the image's capacity (\(failure)); "
                                           + "a mount with more room (--size) replays it, one without opens it read-only")
            return committed
        }
        var replayed = try run(overlay, budgetBytes: budgetBytes, progress: progress)
        replayed.problems = replayed.problems.map { "after the journal's replay: \($0)" }
        replayed.generation = committed.generation
        replayed.framesToReplay = frames
        replayed.journalFrames = committed.journalFrames
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
    public static func longestReplay(_ storage: any ImageStorage, failingAt frames: Int) throws(FSError) -> Int? {
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
