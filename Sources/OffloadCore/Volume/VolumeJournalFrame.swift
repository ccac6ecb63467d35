/// The payload of one format 2 journal frame: one operation, tagged with the generation
/// it joined (docs/FORMAT.md, "Version 2 (in progress): journal"): generation u64, then
/// its `JournalChange`s. Replay applies only frames of generations newer than the
/// committed one: a chain continued by a commit may still hold frames of the generation
/// that commit wrote (operations that were inside it when the chain switched).
public enum VolumeJournalFrame {
    public static func encode(generation: UInt64, _ changes: [JournalChange]) -> [UInt8] {
        // Room for the usual change (an inode item is 104 bytes and its entry header 26),
        // so that a frame of such changes does not grow its buffer (one with file bytes
        // or long names may); by index, since the iterator would copy each change.
        var writer = ByteWriter(capacity: 8 + 160 * changes.count)
        writer.u64(generation)
        for i in changes.indices { changes[i].encode(into: &writer) }
        return writer.bytes
    }

    /// Sets the generation of a payload `encode` made (its first 8 bytes).
    static func tag(_ payload: inout [UInt8], generation: UInt64) {
        precondition(payload.count >= 8)
        for i in 0..<8 { payload[i] = UInt8(truncatingIfNeeded: generation >> (8 * UInt64(i))) }
    }

    /// Decodes a payload; damage when it does not decode (its CRC matched, so it is not
    /// a torn frame).
    public static func decode(_ payload: [UInt8]) throws(FSError) -> (generation: UInt64, changes: [JournalChange]) {
        let result = payload.withUnsafeBytes { raw in
            Result { () throws(ByteReader.Malformed) -> (UInt64, [JournalChange]) in
                var reader = ByteReader(raw)
                let generation = try reader.u64()
                let changes = try JournalChange.decodeAll(UnsafeRawBufferPointer(rebasing: raw[8...]))
                return (generation, changes)
            }
        }
        switch result {
        case .success(let frame): return frame
        case .failure(let problem): throw .damagedImage("a journal frame that does not decode: \(problem.description)")
        }
    }
}

/// The journal chain a commit slot names, read to its end (a torn tail is its end): for
/// fsck and repair, which read it without opening a volume.
struct SlotJournal {
    /// The chain's segments read so far, and the sequence number after the last frame.
    private(set) var segments: [LogSegment] = []
    private(set) var nextSequence: UInt64
    /// Where the chain ended, or the next frame would be read when `body` stopped (nil for
    /// an empty chain, or one whose first segment cannot be read).
    private(set) var endOffset: UInt64?

    /// Calls `body` with each frame of the chain `slot` names, decoded or not, and the
    /// journal as read so far; `body` returns false to stop.
    init(_ storage: any ImageStorage, _ slot: CommitSlot,
         _ body: (Result<(generation: UInt64, changes: [JournalChange]), FSError>, SlotJournal) -> Bool) {
        nextSequence = slot.journalSequence
        guard slot.journal.length > 0 else { return }
        var reader = MetadataLogReader(imageID: slot.imageID, stream: 0, firstSequence: slot.journalSequence,
                                       head: slot.journal, fileBytes: storage.length) { offset, count in
            storage.readBytes(at: offset, count: count)
        }
        reading: while true {
            switch reader.next() {
            case .records(let payload):
                segments = reader.segments
                nextSequence = reader.expectedSequence
                let frame = Result { () throws(FSError) in try VolumeJournalFrame.decode(payload) }
                guard body(frame, self) else { break reading }
            case .end:
                break reading
            }
        }
        segments = reader.segments
        nextSequence = reader.expectedSequence
        endOffset = reader.offset
    }
}
