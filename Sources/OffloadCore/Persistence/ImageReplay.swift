/// The filesystem an image holds, rebuilt from its checkpoint and journal: what mount,
/// fsck and info work from. Plain values: no `BackingStore`, no namespace objects.
///
/// Loading is read-only (pread through `read`): it never writes the image and never
/// touches memory past the end of the file, so a truncated or damaged image gives an
/// error or a shorter journal, not a crash.
public final class ImageReplay {
    public let superblock: Superblock
    public internal(set) var inodes: [UInt64: InodeRecord] = [:]
    /// directory -> name -> child
    public internal(set) var entries: [UInt64: [[UInt8]: UInt64]] = [:]
    public internal(set) var files: [UInt64: ReplayedFile] = [:]
    public internal(set) var nextInode: UInt64 = 2
    /// The checkpoint's and the journal's segments: blocks in use by metadata.
    public private(set) var checkpointSegments: [LogSegment] = []
    public private(set) var journalSegments: [LogSegment] = []
    public private(set) var journalFrames: UInt64 = 0
    public private(set) var journalBytes: UInt64 = 0
    public private(set) var checkpointBytes: UInt64 = 0
    public private(set) var records: UInt64 = 0
    /// Why the journal ended: normally its unwritten or torn tail.
    public private(set) var journalEnd = ""
    /// The sequence number a journal continuing this one would start at.
    public private(set) var nextJournalSequence: UInt64 = 0
    /// Journal frames whose records did not decode (damage inside a frame whose
    /// checksum matched is a bug, not a torn write); replay stopped at the first.
    public private(set) var problems: [String] = []
    /// What salvaging skipped (only with `salvage`).
    public internal(set) var salvaged: [String] = []

    /// Reports bytes of metadata read so far and the total expected (for progress).
    public typealias Progress = (_ done: UInt64, _ total: UInt64) -> Void

    init(superblock: Superblock) { self.superblock = superblock }

    /// Reads and replays the checkpoint, then the journal until its first invalid frame.
    /// A checkpoint that does not read back whole is damage (`.damagedImage`): it was
    /// complete and durable before the superblock named it.
    ///
    /// `salvage` (fsck --repair) skips damaged checkpoint frames instead of failing: what
    /// they held is lost, and the analysis then finds the loose ends to repair.
    public static func load(superblock: Superblock, fileBytes: UInt64,
                            read: @escaping (UInt64, Int) -> [UInt8],
                            salvage: Bool = false,
                            progress: Progress? = nil) throws(FSError) -> ImageReplay {
        let replay = ImageReplay(superblock: superblock)
        let total = superblock.checkpoint.length.addingReportingOverflow(superblock.journal.length).partialValue
        // About 170 bytes of checkpoint per inode: size the tables once (bounded by what
        // the file can hold, so a damaged count cannot make it reserve much).
        let checkpointBytes = min(superblock.checkpointFrames.multipliedReportingOverflow(by: 64 << 10).partialValue,
                                  fileBytes)
        let estimate = Int(min(checkpointBytes / 170, 1 << 22))
        replay.inodes.reserveCapacity(estimate)
        replay.files.reserveCapacity(estimate)
        if superblock.checkpointFrames > 0 {
            var reader = MetadataLogReader(imageID: superblock.imageID, stream: superblock.checkpointStream,
                                           firstSequence: 0, head: superblock.checkpoint,
                                           fileBytes: fileBytes, read: read)
            checkpoint: while reader.frames < superblock.checkpointFrames {
                switch reader.next() {
                case .records(let payload):
                    do {
                        try replay.apply(payload: payload)
                    } catch {
                        guard salvage else { throw .damagedImage("checkpoint frame \(reader.frames - 1): \(error)") }
                        replay.salvaged.append("checkpoint frame \(reader.frames - 1) did not decode and was skipped")
                    }
                    progress?(reader.bytesRead, total)
                case .end(let reason):
                    if salvage, let lost = reader.resynchronize() {
                        replay.salvaged.append("\(lost) damaged checkpoint frames skipped (\(reason))")
                        continue
                    }
                    guard salvage else {
                        throw .damagedImage("checkpoint (stream \(superblock.checkpointStream)) ends after \(reader.frames) of \(superblock.checkpointFrames) frames: \(reason); `offloadfs fsck --repair IMAGE` salvages the rest")
                    }
                    replay.salvaged.append("the checkpoint ends after \(reader.frames) of \(superblock.checkpointFrames) frames: \(reason)")
                    break checkpoint
                }
            }
            replay.checkpointSegments = reader.segments
            replay.checkpointBytes = reader.bytesRead
        }
        replay.nextJournalSequence = superblock.journalSequence
        if superblock.journal.length > 0 {
            var reader = MetadataLogReader(imageID: superblock.imageID, stream: 0,
                                           firstSequence: superblock.journalSequence, head: superblock.journal,
                                           fileBytes: fileBytes, read: read)
            loop: while true {
                switch reader.next() {
                case .records(let payload):
                    do {
                        try replay.apply(payload: payload)
                    } catch {
                        let what = "journal frame \(reader.expectedSequence - 1) does not decode: \(error)"
                        // Salvage keeps what came before it, like a torn tail.
                        if salvage { replay.salvaged.append(what) } else { replay.problems.append(what) }
                        replay.journalEnd = "undecodable frame"
                        break loop
                    }
                    progress?(replay.checkpointBytes + reader.bytesRead, total)
                case .end(let reason):
                    replay.journalEnd = reason
                    break loop
                }
            }
            replay.journalSegments = reader.segments
            replay.journalFrames = reader.frames
            replay.journalBytes = reader.bytesRead
            replay.nextJournalSequence = reader.expectedSequence
        }
        return replay
    }

    /// Decodes a whole frame first, so a frame applies entirely or not at all.
    func apply(payload: [UInt8]) throws(ByteReader.Malformed) {
        let decoded = try payload.withUnsafeBytes { raw in
            Result { () throws(ByteReader.Malformed) in try MetadataRecord.decodeAll(raw) }
        }.get()
        for record in decoded { apply(record) }
    }

    /// Applies one record. Records for inodes that are gone are ignored: a file can be
    /// written through an open handle after its last name went, and its drop may come
    /// first in a checkpoint taken meanwhile.
    public func apply(_ record: MetadataRecord) {
        records += 1
        switch record {
        case .inode(let inode):
            inodes[inode.number] = inode
            nextInode = max(nextInode, inode.number &+ 1)
            if inode.type == Self.regularType, files[inode.number] == nil { files[inode.number] = ReplayedFile() }
        case .entry(let directory, let name, let child):
            entries[directory, default: [:]][name] = child
        case .removeEntry(let directory, let name):
            entries[directory]?[name] = nil
        case .fileRange(let inode, let size, let range, let pieces):
            guard let file = files[inode] else { return }
            file.apply(size: size, range: range, pieces: pieces)
        case .drop(let inode):
            inodes[inode] = nil
            files[inode] = nil
            entries[inode] = nil
        case .nextInode(let next):
            nextInode = max(nextInode, next)
        }
    }

    /// st_mode >> 12 of the kinds replay cares about.
    public static let regularType: UInt8 = 0o10
    public static let directoryType: UInt8 = 0o04
    public static let symlinkType: UInt8 = 0o12
}
