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
        } catch {
            let replayable = longestReplay(storage, failingAt: frames)
            committed.add("the journal's \(frames) operations after commit \(committed.generation) do not replay "
                          + "(the next mount fails the same way; the first \(replayable) do): \(error)")
            committed.replay = .failed(replayable: replayable)
            return committed
        }
        volume.waitForPunches()
        progress?("replaying the journal in memory", UInt64(frames), UInt64(frames))
        if let failure = volume.failure {
            // A full image: the mount opens it read-only with the replay in memory.
            committed.replay = .notChecked("the replay's commit does not fit the image (\(failure)); "
                                           + "the next mount opens it read-only")
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
    /// each in an overlay of its own), so about log2(frames) replays. A frame's replay
    /// fails on what it or the frames before it hold (a claim of its extents, its
    /// changes recorded over theirs, their commit), so every longer replay fails too and
    /// the search finds where the first failing frame is. (Frames that left a failure
    /// only a later one undoes would make it stop short: it finds a prefix that replays,
    /// maybe not the longest.) 0 when none replays.
    public static func longestReplay(_ storage: any ImageStorage, failingAt frames: Int) -> Int {
        var replays = 0, fails = frames
        while fails - replays > 1 {
            let middle = replays + (fails - replays) / 2
            if (try? TreeVolume.open(OverlayImageStorage(over: storage), replayingAtMost: middle)) != nil {
                replays = middle
            } else {
                fails = middle
            }
        }
        return replays
    }
}
