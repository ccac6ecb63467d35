/// The unit of metadata on disk: a header with a checksum, then a payload.
///
/// Journal and checkpoint are chains of frames in image blocks. A frame is valid only
/// when its magic, image id, stream, sequence number, length and CRC-32C all match what
/// the reader expects, so a torn write (the daemon killed mid-append), stale bytes from an
/// older use of the same blocks, or a bit flip all end a chain at the last good frame.
/// Layout (little-endian), 40 bytes:
///
///     0  magic   u32  "OFFR"
///     4  crc     u32  CRC-32C of bytes 8..<40 and of the payload
///     8  image   u64  the image id from the superblock
///    16  stream  u64  0 for the journal, the checkpoint's generation for a checkpoint
///    24  seq     u64  position in the stream; frames follow each other without gaps
///    32  length  u32  payload bytes
///    36  kind    u32  0 records, 1 link (payload: next segment start u64, length u64)
public struct FrameHeader: Equatable, Sendable {
    public static let size = 40
    public static let magic: UInt32 = 0x5246_464F  // "OFFR" little-endian
    /// A frame's payload is at most this long (a checkpoint splits into many frames).
    public static let maximumPayload = 64 << 20

    public enum Kind: UInt32, Sendable {
        case records = 0
        case link = 1
    }

    public var imageID: UInt64
    public var stream: UInt64
    public var sequence: UInt64
    public var length: UInt32
    public var kind: Kind

    public init(imageID: UInt64, stream: UInt64, sequence: UInt64, length: UInt32, kind: Kind) {
        self.imageID = imageID
        self.stream = stream
        self.sequence = sequence
        self.length = length
        self.kind = kind
    }

    /// The whole frame: header with its checksum, then `payload`.
    public static func encode(imageID: UInt64, stream: UInt64, sequence: UInt64, kind: Kind,
                              payload: UnsafeRawBufferPointer, into w: inout ByteWriter) {
        let start = w.count
        w.fixed(size) { f in
            f.u32(magic)
            f.u32(0)
            f.u64(imageID); f.u64(stream); f.u64(sequence)
            f.u32(UInt32(payload.count)); f.u32(kind.rawValue)
        }
        w.raw(payload)
        let crc = w.bytes.withUnsafeBytes { all in
            Checksum.crc32c(UnsafeRawBufferPointer(rebasing: all[(start + 8)...]))
        }
        w.patch(u32: crc, at: start + 4)
    }

    /// Parses and checks a header (not the payload's checksum: see `checksumMatches`).
    /// Returns nil when the bytes are not a frame header at all.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> (header: FrameHeader, crc: UInt32)? {
        guard bytes.count >= size else { return nil }
        var r = ByteReader(bytes)
        guard let m = try? r.u32(), m == magic,
              let crc = try? r.u32(), let image = try? r.u64(), let stream = try? r.u64(),
              let seq = try? r.u64(), let length = try? r.u32(), let kindValue = try? r.u32(),
              let kind = Kind(rawValue: kindValue), Int(length) <= maximumPayload,
              seq <= Superblock.maximumCounter else { return nil }
        return (FrameHeader(imageID: image, stream: stream, sequence: seq, length: length, kind: kind), crc)
    }

    /// True when `crc` covers header bytes 8..<40 (`headerBytes`) and `payload`.
    public static func checksumMatches(_ crc: UInt32, headerBytes: UnsafeRawBufferPointer,
                                       payload: UnsafeRawBufferPointer) -> Bool {
        let partial = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: headerBytes[8..<size]))
        return Checksum.crc32c(payload, continuing: partial) == crc
    }
}

/// Where a chain of frames continues: a byte range of the image (block-aligned).
public struct LogSegment: Equatable, Sendable {
    public var start: UInt64
    public var length: UInt64
    public init(start: UInt64, length: UInt64) {
        self.start = start
        self.length = length
    }
    public var range: Range<UInt64> { start..<start + length }
    /// A link frame: 40 bytes of header and 16 of payload.
    public static let linkFrameSize = FrameHeader.size + 16

    func encodeLink(into w: inout ByteWriter) {
        w.u64(start)
        w.u64(length)
    }
}
