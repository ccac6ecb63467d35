/// Reads a chain of frames written by `MetadataLog`, from the image file with pread.
///
/// Everything read is checked before it is used: a frame counts only when magic, image
/// id, stream, the expected sequence number, a length inside the segment and the CRC-32C
/// all match; a link must point to a block-aligned segment inside the file. The first
/// frame that fails ends the chain (`end`): after a crash that is the torn or unwritten
/// tail of the journal, which is expected; inside a checkpoint it is damage.
public struct MetadataLogReader {
    public enum Item {
        case records([UInt8])
        case end(reason: String)
    }

    let imageID: UInt64
    let stream: UInt64
    let fileBytes: UInt64
    let read: (UInt64, Int) -> [UInt8]
    public private(set) var expectedSequence: UInt64
    /// Segments visited so far (they are in use and must not be freed).
    public private(set) var segments: [LogSegment] = []
    /// Frames read, links included.
    public private(set) var frames: UInt64 = 0
    public private(set) var bytesRead: UInt64 = 0
    /// The image byte where the next frame is read: once `next` returned `.end`, where
    /// the chain ended (nil when its first segment could not be read).
    public var offset: UInt64? { segments.last.map { $0.start + UInt64(position) } }
    private var buffer: [UInt8] = []
    private var position = 0
    private var finished = false

    /// Segments are read whole; a link or superblock naming a longer one is damage.
    public static let maximumSegmentBytes: UInt64 = 1 << 30

    /// `avoiding`: segments of another chain (the checkpoint's, for the journal) that
    /// this one must not overlap either.
    public init(imageID: UInt64, stream: UInt64, firstSequence: UInt64, head: LogSegment,
                fileBytes: UInt64, avoiding: [LogSegment] = [], read: @escaping (UInt64, Int) -> [UInt8]) {
        self.imageID = imageID
        self.stream = stream
        self.expectedSequence = firstSequence
        self.fileBytes = fileBytes
        self.read = read
        for segment in avoiding where overlappingSegment(segment) == nil { taken.insert(segment.start, segment.range.upperBound) }
        if let problem = enter(head) {
            finished = true
            pendingEnd = problem
        }
    }

    private var pendingEnd: String?
    /// Start -> end of every segment visited or avoided: disjoint, so a segment overlaps
    /// one of them exactly when it overlaps the last one starting before its end.
    private let taken = ChunkedSortedMap<UInt64>()

    /// The next frame's payload, or the end of the chain with the reason it ended.
    public mutating func next() -> Item {
        if let reason = pendingEnd {
            pendingEnd = nil
            return .end(reason: reason)
        }
        guard !finished else { return .end(reason: "already ended") }
        while true {
            switch parseFrame() {
            case .bad(let reason):
                return stop(reason)
            case .link(let segment, _):
                frames += 1
                expectedSequence += 1
                if let problem = enter(segment) { return stop(problem) }
            case .records(let payload, let length):
                position += length
                bytesRead += UInt64(length)
                frames += 1
                expectedSequence += 1
                return .records(payload)
            }
        }
    }

    private enum Parsed {
        case records([UInt8], frameLength: Int)
        case link(LogSegment, frameLength: Int)
        case bad(String)
    }

    /// Checks the frame at `position` of the current segment.
    private func parseFrame() -> Parsed {
        let where_ = "at image byte \(segments[segments.count - 1].start + UInt64(position))"
        guard buffer.count - position >= FrameHeader.size else { return .bad("no frame header fits \(where_)") }
        return buffer.withUnsafeBytes { all -> Parsed in
            let headerBytes = UnsafeRawBufferPointer(rebasing: all[position..<position + FrameHeader.size])
            guard let (header, crc) = FrameHeader.decode(headerBytes) else { return .bad("no frame \(where_)") }
            guard header.imageID == imageID, header.stream == stream else {
                return .bad("frame \(where_) belongs to another image or stream")
            }
            guard header.sequence == expectedSequence else {
                return .bad("frame \(where_) has sequence \(header.sequence), expected \(expectedSequence)")
            }
            let payloadStart = position + FrameHeader.size
            guard Int(header.length) <= all.count - payloadStart else {
                return .bad("frame \(where_) is longer than its segment")
            }
            let payload = UnsafeRawBufferPointer(rebasing: all[payloadStart..<payloadStart + Int(header.length)])
            guard FrameHeader.checksumMatches(crc, headerBytes: headerBytes, payload: payload) else {
                return .bad("frame \(where_) fails its checksum")
            }
            let frameLength = FrameHeader.size + Int(header.length)
            guard header.kind == .link else { return .records(Array(payload), frameLength: frameLength) }
            var r = ByteReader(payload)
            guard let start = try? r.u64(), let length = try? r.u64() else {
                return .bad("link frame \(where_) is malformed")
            }
            return .link(LogSegment(start: start, length: length), frameLength: frameLength)
        }
    }

    /// After a bad frame (`end`), looks further in the current segment for the next
    /// valid frame of this stream with a higher sequence number, and continues there.
    /// Frames in between are lost; returns how many, or nil when none follows. For
    /// `fsck --repair`, which salvages what a damaged checkpoint still holds.
    public mutating func resynchronize() -> UInt64? {
        guard !segments.isEmpty else { return nil }
        let skippedFrom = expectedSequence
        let found: (at: Int, header: FrameHeader)? = buffer.withUnsafeBytes { all in
            var candidate = position + 1
            while candidate + FrameHeader.size <= all.count {
                defer { candidate += 1 }
                // Nearly every position fails at the magic: test it alone first (a scan
                // of a 1 MiB segment then costs a load per byte, not a header decode).
                guard all.loadUnaligned(fromByteOffset: candidate, as: UInt32.self) == FrameHeader.magic.littleEndian else { continue }
                let headerBytes = UnsafeRawBufferPointer(rebasing: all[candidate..<candidate + FrameHeader.size])
                guard let (header, crc) = FrameHeader.decode(headerBytes), header.imageID == imageID,
                      header.stream == stream, header.sequence > expectedSequence,
                      Int(header.length) <= all.count - candidate - FrameHeader.size else { continue }
                let payload = UnsafeRawBufferPointer(rebasing: all[(candidate + FrameHeader.size)..<(candidate + FrameHeader.size + Int(header.length))])
                if FrameHeader.checksumMatches(crc, headerBytes: headerBytes, payload: payload) { return (candidate, header) }
            }
            return nil
        }
        guard let found else { return nil }
        position = found.at
        expectedSequence = found.header.sequence
        finished = false
        return found.header.sequence - skippedFrom
    }

    private mutating func stop(_ reason: String) -> Item {
        finished = true
        return .end(reason: reason)
    }

    private func overlappingSegment(_ segment: LogSegment) -> LogSegment? {
        guard let i = taken.floor(segment.range.upperBound - 1) else { return nil }
        let start = taken.key(at: i), end = taken.value(at: i)
        return end > segment.start ? LogSegment(start: start, length: end - start) : nil
    }

    /// Moves to a segment; returns why it cannot be read, if so.
    private mutating func enter(_ segment: LogSegment) -> String? {
        let block = UInt64(BackingStore.blockSize)
        guard segment.length > 0 else { return "empty segment" }
        guard segment.start % block == 0, segment.length % block == 0,
              segment.start >= Superblock.blocks * block,
              segment.length <= Self.maximumSegmentBytes,
              segment.start <= fileBytes, segment.length <= fileBytes - segment.start else {
            return "segment \(segment.start)+\(segment.length) lies outside the image (\(fileBytes) bytes)"
        }
        // A chain cannot loop (every frame needs the next sequence number); this stops a
        // damaged link from naming blocks already read, which would make the same blocks
        // count twice as metadata and let a hostile image be read over and over.
        if let other = overlappingSegment(segment) {
            return "segment \(segment.start)+\(segment.length) overlaps segment \(other.start)+\(other.length), already read"
        }
        taken.insert(segment.start, segment.range.upperBound)
        segments.append(segment)
        buffer = read(segment.start, Int(segment.length))
        position = 0
        return nil
    }
}
