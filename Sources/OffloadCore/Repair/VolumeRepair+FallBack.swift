extension VolumeRepair {
    /// Takes the image back to `previous` (the commit before the current one, which checks
    /// clean) and brings it forward again by replaying the journal kept since it: the
    /// frames of the commit after it, which is what the damaged current commit wrote into
    /// its trees. It is what a mount does when the current slot is torn, with the frames
    /// past that generation (written after the damaged commit) left out: replay cannot
    /// apply them over a commit that is not theirs. Returns the frames replayed and the
    /// frames left out.
    ///
    /// The commit this makes has the damaged commit's generation, so its slot goes over
    /// the damaged one; until then the previous commit and every block it or the replayed
    /// frames use stay as they are (the volume allocates only from what its block tree
    /// holds free and claims what the frames' extents name): a crash leaves the image as
    /// it was, and repair starts again.
    static func fallBack(_ storage: any ImageStorage, to previous: CommitSlot) throws(FSError) -> (replayed: Int, leftOut: Int) {
        var frames: [(generation: UInt64, changes: [JournalChange])] = []
        var leftOut = 0
        var oldChain: [LogSegment] = []
        var nextSequence = previous.journalSequence
        if previous.journal.length > 0 {
            var reader = MetadataLogReader(imageID: previous.imageID, stream: 0, firstSequence: previous.journalSequence,
                                           head: previous.journal, fileBytes: storage.length) { offset, count in
                storage.readBytes(at: offset, count: count)
            }
            reading: while true {
                switch reader.next() {
                case .records(let payload):
                    guard let frame = try? VolumeJournalFrame.decode(payload), frame.generation <= previous.generation + 1 else {
                        leftOut += 1
                        break reading
                    }
                    if frame.generation > previous.generation { frames.append(frame) }
                    nextSequence = reader.expectedSequence
                case .end:
                    nextSequence = reader.expectedSequence
                    break reading
                }
            }
            // Only the segments read up to the last frame replayed: the chain's later
            // segments hold frames nothing will replay.
            oldChain = reader.segments
            if leftOut > 0 {
                counting: while true {
                    switch reader.next() {
                    case .records: leftOut += 1
                    case .end: break counting
                    }
                }
            }
        }
        let volume = try TreeVolume(storage: storage, slot: previous, replaying: frames, oldChain: oldChain,
                                    nextSequence: nextSequence)
        for segment in oldChain { volume.logSpace.releaseLogSegment(segment.range) }
        try volume.commit()
        try volume.close()
        return (frames.count, leftOut)
    }
}
