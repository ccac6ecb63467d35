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
            guard previous.journal.length > 0 else { return found }
            var reader = MetadataLogReader(imageID: previous.imageID, stream: 0, firstSequence: previous.journalSequence,
                                           head: previous.journal, fileBytes: storage.length) { offset, count in
                storage.readBytes(at: offset, count: count)
            }
            reading: while true {
                switch reader.next() {
                case .records(let payload):
                    guard let frame = try? VolumeJournalFrame.decode(payload) else {
                        found.leftOut += 1
                        break reading
                    }
                    if frame.generation == previous.generation + 1 {
                        found.frames.append(frame)
                        // Only the segments up to the last frame replayed: later ones hold
                        // frames nothing replays (and may lie on blocks the previous commit
                        // holds pending).
                        found.segments = reader.segments
                        found.nextSequence = reader.expectedSequence
                    } else if frame.generation > previous.generation + 1 {
                        found.leftOut += 1
                    }
                case .end:
                    break reading
                }
            }
            if found.frames.isEmpty {
                found.segments = reader.segments
                found.nextSequence = reader.expectedSequence
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
    static func fallBack(_ storage: any ImageStorage, to previous: CommitSlot, _ since: FramesSince) throws(FSError) {
        let volume = try TreeVolume(storage: storage, slot: previous, replaying: since.frames, oldChain: since.segments,
                                    nextSequence: since.nextSequence)
        for segment in since.segments { volume.logSpace.releaseLogSegment(segment.range) }
        try volume.commit()
        try volume.close()
    }
}
