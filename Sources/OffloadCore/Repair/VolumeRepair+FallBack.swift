extension VolumeRepair {
    /// The journal frames kept since `previous` that the commit after it wrote into its
    /// trees (generation `previous + 1`), and the chain's segments up to the last of them.
    /// Frames of later generations, which replay over `previous` cannot apply, are left
    /// out (`framesLeftOutByFallBack` counts them and names their files).
    struct FramesSince {
        var frames: [(generation: UInt64, changes: [JournalChange])] = []
        var segments: [LogSegment] = []
        var nextSequence: UInt64

        static func read(_ storage: any ImageStorage, since previous: CommitSlot) -> FramesSince {
            var found = FramesSince(nextSequence: previous.journalSequence)
            let journal = SlotJournal(storage, previous) { frame, sofar in
                guard case .success(let frame) = frame else { return false }
                if frame.generation == previous.generation + 1 {
                    found.frames.append(frame)
                    // Only the segments up to the last frame replayed: later ones hold
                    // frames nothing replays (and may lie on blocks the previous commit
                    // holds pending).
                    found.segments = sofar.segments
                    found.nextSequence = sofar.nextSequence
                }
                // Frames of later generations are left out (`framesLeftOutByFallBack`).
                return true
            }
            if found.frames.isEmpty {
                found.segments = journal.segments
                found.nextSequence = journal.nextSequence
            }
            return found
        }
    }

    /// The frames a fall-back from `damaged` to `previous` leaves out, counted, and the
    /// files they change (`framesLeftOut`): those of generations after `damaged`'s in
    /// `previous`'s chain, which links on to the damaged commit's when that commit
    /// continued it; and in the damaged commit's own chain when it is not one of those
    /// segments (a mount's opening commit starts a chain of its own). Read before the
    /// fall-back writes its commit over the damaged commit's slot.
    static func framesLeftOutByFallBack(_ storage: any ImageStorage, previous: CommitSlot,
                                        damaged: CommitSlot) -> (frames: Int, files: [FileChange]) {
        let after = max(previous.generation + 1, damaged.generation)
        let inPrevious = framesLeftOut(storage, chainOf: previous, after: after, keeping: 0)
        guard damaged.journal.length > 0, !inPrevious.segments.contains(damaged.journal) else {
            return (inPrevious.frames, inPrevious.files)
        }
        let inDamaged = framesLeftOut(storage, chainOf: damaged, after: after, keeping: 0)
        return (inPrevious.frames + inDamaged.frames, inPrevious.files + inDamaged.files)
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
