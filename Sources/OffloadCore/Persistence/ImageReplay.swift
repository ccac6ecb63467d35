/// The filesystem an image holds, rebuilt from its checkpoint and journal: what mount,
/// fsck and info work from. Plain values: no `BackingStore`, no namespace objects.
///
/// Loading is read-only (pread through `read`): it never writes the image and never
/// touches memory past the end of the file, so a truncated or damaged image gives an
/// error or a shorter journal, not a crash.
public final class ImageReplay {
    /// The superblock the replay started from (the image's capacity, its id).
    public let superblock: Superblock
    /// The commit (checkpoint and journal) this replay read: the superblock's current
    /// one, or its previous one (`loadPrevious`).
    public let commit: Superblock.Commit
    public internal(set) var inodes: [UInt64: InodeRecord] = [:]
    /// directory -> name -> child
    public internal(set) var entries: [UInt64: [[UInt8]: UInt64]] = [:]
    public internal(set) var files: [UInt64: ReplayedFile] = [:]
    public internal(set) var nextInode: UInt64 = 2
    /// The checkpoint's and the journal's segments: blocks in use by metadata.
    public private(set) var checkpointSegments: [LogSegment] = []
    public private(set) var journalSegments: [LogSegment] = []
    /// Segments of another commit this replay took objects from (`ImageSalvage.merge`):
    /// in use like its own until the next checkpoint no longer needs them.
    public internal(set) var borrowedSegments: [LogSegment] = []
    /// Every metadata segment the replayed tree rests on, each once.
    public var metadataSegments: [LogSegment] {
        var seen = Set<UInt64>()
        return (checkpointSegments + journalSegments + borrowedSegments).filter { seen.insert($0.start).inserted }
    }
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
    /// Salvage only: contents of files whose inode record was lost (see `stray`).
    public internal(set) var strays: [UInt64: ReplayedFile] = [:]
    /// Set when a journal frame did not decode: the journal ended early, not at its tail.
    public private(set) var journalUndecodable = false
    /// What salvaging skipped (only with `salvage`).
    public internal(set) var salvaged: [String] = []
    /// Only with `salvage`: what each object's state rests on, to tell what a damaged
    /// checkpoint lost (see `ImageSalvage`).
    public internal(set) var provenance: Provenance?
    /// False when the replay only walks the chains for their segments: records are read
    /// and checksummed, not decoded, and the tables stay empty.
    private var applying = true

    /// Reports bytes of metadata read so far and the total expected (for progress).
    public typealias Progress = (_ done: UInt64, _ total: UInt64) -> Void

    init(superblock: Superblock, commit: Superblock.Commit) {
        self.superblock = superblock
        self.commit = commit
    }

    /// Reads and replays the superblock's current commit: the checkpoint, then the journal
    /// until its first invalid frame. A checkpoint that does not read back whole is damage
    /// (`.damagedImage`): it was complete and durable before the superblock named it.
    ///
    /// `salvage` (fsck --repair) skips damaged checkpoint frames instead of failing: what
    /// they held is lost here, and `ImageSalvage` looks for it in the previous commit.
    public static func load(superblock: Superblock, fileBytes: UInt64,
                            read: @escaping (UInt64, Int) -> [UInt8],
                            salvage: Bool = false,
                            progress: Progress? = nil) throws(FSError) -> ImageReplay {
        try load(superblock: superblock, commit: superblock.current, fileBytes: fileBytes, read: read,
                 salvage: salvage, progress: progress)
    }

    /// Reads and replays the superblock's previous commit (nil if it names none), with
    /// `salvage` on: its checkpoint, then its journal, which leads into the current
    /// journal by a link frame or, when a mount started a new chain, by sequence number:
    /// where it ends at the current journal's first sequence, reading goes on there.
    public static func loadPrevious(of superblock: Superblock, fileBytes: UInt64,
                                    read: @escaping (UInt64, Int) -> [UInt8]) -> ImageReplay? {
        guard let previous = superblock.previous, previous.checkpointFrames > 0 else { return nil }
        return try? load(superblock: superblock, commit: previous, fileBytes: fileBytes, read: read,
                         salvage: true, continuation: (superblock.journal, superblock.journalSequence))
    }

    /// The metadata segments of the superblock's previous commit (empty if it names
    /// none): the chains `loadPrevious` reads, walked the same way (damaged checkpoint
    /// frames skipped, its journal continued into the current one), with no record decoded
    /// or applied. What the version 1 upgrade keeps from the previous commit: its blocks,
    /// which format 1's repair may still read. Loading that commit whole held a second
    /// copy of the tree (about 1 KB an inode) only to list them.
    ///
    /// A walk that decodes nothing does not stop at a frame whose records do not decode
    /// (`loadPrevious` does), so it may list more of a damaged journal's chain, never less.
    public static func previousCommitSegments(of superblock: Superblock, fileBytes: UInt64,
                                              read: @escaping (UInt64, Int) -> [UInt8]) -> [LogSegment] {
        guard let previous = superblock.previous, previous.checkpointFrames > 0,
              let walk = try? load(superblock: superblock, commit: previous, fileBytes: fileBytes, read: read,
                                   salvage: true, applying: false,
                                   continuation: (superblock.journal, superblock.journalSequence)) else { return [] }
        return walk.metadataSegments
    }

    static func load(superblock: Superblock, commit: Superblock.Commit, fileBytes: UInt64,
                     read: @escaping (UInt64, Int) -> [UInt8], salvage: Bool, applying: Bool = true,
                     continuation: (head: LogSegment, sequence: UInt64)? = nil,
                     progress: Progress? = nil) throws(FSError) -> ImageReplay {
        let imageID = superblock.imageID
        let replay = ImageReplay(superblock: superblock, commit: commit)
        replay.applying = applying
        if salvage && applying { replay.provenance = Provenance() }
        let total = commit.checkpoint.length.addingReportingOverflow(commit.journal.length).partialValue
        // About 170 bytes of checkpoint per inode: size the tables once (bounded by what
        // the file can hold, so a damaged count cannot make it reserve much).
        let checkpointBytes = min(commit.checkpointFrames.multipliedReportingOverflow(by: 64 << 10).partialValue,
                                  fileBytes)
        let estimate = applying ? Int(min(checkpointBytes / 170, 1 << 22)) : 0
        replay.inodes.reserveCapacity(estimate)
        replay.files.reserveCapacity(estimate)
        if commit.checkpointFrames > 0 {
            try replay.loadCheckpoint(imageID: imageID, fileBytes: fileBytes, read: read, salvage: salvage) {
                progress?($0, total)
            }
        }
        replay.provenance?.inJournal = true
        replay.nextJournalSequence = commit.journalSequence
        if commit.journal.length > 0 {
            var reader = replay.replayJournal(head: commit.journal, sequence: commit.journalSequence, imageID: imageID,
                                              fileBytes: fileBytes, read: read, salvage: salvage) {
                progress?(replay.checkpointBytes + $0, total)
            }
            if let continuation, !reader.segments.contains(continuation.head),
               reader.expectedSequence == continuation.sequence, !replay.journalUndecodable {
                // The chain ends where a mount began a new one: go on there.
                reader = replay.replayJournal(head: continuation.head, sequence: continuation.sequence,
                                              imageID: imageID, fileBytes: fileBytes, read: read, salvage: salvage) {
                    progress?(replay.checkpointBytes + $0, total)
                }
            }
        }
        return replay
    }

    /// Applies exactly `commit.checkpointFrames` frames of the checkpoint chain (or, with
    /// `salvage`, whatever good frames it still has).
    private func loadCheckpoint(imageID: UInt64, fileBytes: UInt64, read: @escaping (UInt64, Int) -> [UInt8],
                                salvage: Bool, progress: (UInt64) -> Void) throws(FSError) {
        var reader = MetadataLogReader(imageID: imageID, stream: commit.checkpointStream,
                                       firstSequence: 0, head: commit.checkpoint,
                                       fileBytes: fileBytes, read: read)
        checkpoint: while reader.frames < commit.checkpointFrames {
            switch reader.next() {
            case .records(let payload):
                do {
                    try apply(payload: payload)
                } catch {
                    guard salvage else { throw .damagedImage("checkpoint frame \(reader.frames - 1): \(error)") }
                    salvaged.append("checkpoint frame \(reader.frames - 1) did not decode and was skipped")
                    provenance?.lostCheckpointFrames += 1
                }
                progress(reader.bytesRead)
            case .end(let reason):
                if salvage, let lost = reader.resynchronize() {
                    salvaged.append("\(lost) damaged checkpoint frames skipped (\(reason))")
                    provenance?.lostCheckpointFrames += lost
                    continue
                }
                guard salvage else {
                    throw .damagedImage("checkpoint (stream \(commit.checkpointStream)) ends after \(reader.frames) of \(commit.checkpointFrames) frames: \(reason); `offloadfs fsck --repair IMAGE` salvages the rest")
                }
                salvaged.append("the checkpoint ends after \(reader.frames) of \(commit.checkpointFrames) frames: \(reason)")
                provenance?.lostCheckpointFrames += max(1, commit.checkpointFrames - min(reader.frames, commit.checkpointFrames))
                break checkpoint
            }
        }
        checkpointSegments = reader.segments
        checkpointBytes = reader.bytesRead
    }

    /// Replays a journal chain from `head` until its first invalid frame; returns the
    /// reader, which knows where it ended.
    private func replayJournal(head: LogSegment, sequence: UInt64, imageID: UInt64, fileBytes: UInt64,
                               read: @escaping (UInt64, Int) -> [UInt8], salvage: Bool,
                               progress: (UInt64) -> Void) -> MetadataLogReader {
        // Blocks already read (the checkpoint's, a chain this one continues) must not be
        // read again: a chain that would overlap them ends there.
        var reader = MetadataLogReader(imageID: imageID, stream: 0, firstSequence: sequence, head: head,
                                       fileBytes: fileBytes, avoiding: checkpointSegments + journalSegments, read: read)
        let bytesBefore = journalBytes
        loop: while true {
            switch reader.next() {
            case .records(let payload):
                do {
                    try apply(payload: payload)
                } catch {
                    let what = "journal frame \(reader.expectedSequence - 1) does not decode: \(error)"
                    // Salvage keeps what came before it, like a torn tail.
                    if salvage { salvaged.append(what) } else { problems.append(what) }
                    journalEnd = "undecodable frame"
                    journalUndecodable = true
                    break loop
                }
                progress(bytesBefore + reader.bytesRead)
            case .end(let reason):
                journalEnd = reason
                break loop
            }
        }
        journalSegments += reader.segments
        journalFrames += reader.frames
        journalBytes = bytesBefore + reader.bytesRead
        nextJournalSequence = reader.expectedSequence
        return reader
    }

    /// Decodes a whole frame first, so a frame applies entirely or not at all. Nothing when
    /// the replay only walks the chains (`applying` false: `previousCommitSegments`).
    func apply(payload: [UInt8]) throws(ByteReader.Malformed) {
        guard applying else { return }
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
        provenance?.note(record)
        switch record {
        case .inode(let inode):
            inodes[inode.number] = inode
            nextInode = max(nextInode, inode.number &+ 1)
            if inode.type == Self.regularType, files[inode.number] == nil {
                files[inode.number] = strays.removeValue(forKey: inode.number) ?? ReplayedFile()
            }
        case .entry(let directory, let name, let child):
            entries[directory, default: [:]][name] = child
        case .removeEntry(let directory, let name):
            entries[directory]?[name] = nil
        case .fileRange(let inode, let size, let range, let pieces):
            guard let file = files[inode] ?? stray(inode) else { return }
            file.apply(size: size, range: range, pieces: pieces)
            provenance?.stated(range, of: inode)
        case .drop(let inode):
            inodes[inode] = nil
            files[inode] = nil
            strays[inode] = nil
            entries[inode] = nil
        case .nextInode(let next):
            nextInode = max(nextInode, next)
        }
    }

    /// Salvage only: where a file's contents go when its inode record is missing. In an
    /// undamaged checkpoint every file's record comes before its `file range` records;
    /// one whose record was in a damaged frame gets its contents kept here, for its
    /// record from the journal or the previous commit, or for /lost+found (`repair`).
    private func stray(_ inode: UInt64) -> ReplayedFile? {
        guard let provenance, !provenance.inJournal || strays[inode] != nil else { return nil }
        if let file = strays[inode] { return file }
        let file = ReplayedFile()
        strays[inode] = file
        return file
    }

    /// st_mode >> 12 of the kinds replay cares about.
    public static let regularType: UInt8 = 0o10
    public static let directoryType: UInt8 = 0o04
    public static let symlinkType: UInt8 = 0o12
}
