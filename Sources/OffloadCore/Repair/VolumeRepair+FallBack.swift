extension VolumeRepair {
    /// The journal frames kept since `previous` that the commit after it wrote into its
    /// trees (generation `previous + 1`), the chain's segments up to the last of them, and
    /// the frames of later generations, which replay over `previous` cannot apply.
    struct FramesSince {
        var frames: [(generation: UInt64, changes: [JournalChange])] = []
        var segments: [LogSegment] = []
        var nextSequence: UInt64
        var leftOut = 0

        static func read(_ storage: any ImageStorage, since previous: CommitSlot) -> FramesSince {
            var found = FramesSince(nextSequence: previous.journalSequence)
            let journal = SlotJournal(storage, previous) { frame, sofar in
                guard case .success(let frame) = frame else {
                    found.leftOut += 1
                    return false
                }
                if frame.generation == previous.generation + 1 {
                    found.frames.append(frame)
                    // Only the segments up to the last frame replayed: later ones hold
                    // frames nothing replays (and may lie on blocks the previous commit
                    // holds pending).
                    found.segments = sofar.segments
                    found.nextSequence = sofar.nextSequence
                } else if frame.generation > previous.generation + 1 {
                    found.leftOut += 1
                }
                return true
            }
            if found.frames.isEmpty {
                found.segments = journal.segments
                found.nextSequence = journal.nextSequence
            }
            return found
        }
    }

    /// Takes the image back to `previous` (the commit before the current one, which checks
    /// clean) and brings it forward again by replaying `since.frames`, the frames of the
    /// commit after it: what the damaged current commit wrote into its trees. It is what a
    /// mount does when the current slot is torn, with the frames of later generations
    /// (written after the damaged commit) left out: replay cannot apply them over a commit
    /// that is not theirs.
    ///
    /// The commit this makes has the damaged commit's generation, so its slot goes over
    /// the damaged one; until then the previous commit and every block it or the replayed
    /// frames use stay as they are (the volume allocates only from what its block tree
    /// holds free and claims what the frames' extents name): a crash leaves the image as
    /// it was, and repair starts again.
    /// The new chains are numbered past `numberingPast` too (the sequence after the damaged
    /// commit's chain): that commit's mount may have left frames in blocks free under
    /// `previous`, numbered from where replay of `previous`'s chain ended, as the fall-back's
    /// would otherwise be (`TreeVolume.firstSequence(after:)`).
    static func fallBack(_ storage: any ImageStorage, to previous: CommitSlot, _ since: FramesSince,
                         numberingPast: UInt64) throws(FSError) {
        // Nothing punched before the commit is durable: the previous commit's pending frees
        // may be blocks the damaged commit wrote nodes on (freed nodes reused without a
        // punch), which repair of that commit needs if this fails.
        let volume = try TreeVolume(storage: storage, slot: previous, replaying: since.frames, oldChain: since.segments,
                                    nextSequence: max(since.nextSequence, numberingPast), punchingFirst: false)
        for segment in since.segments { volume.logSpace.releaseLogSegment(segment.range) }
        try volume.commit()
        try volume.close()
    }
}
