/// The value of (ino, extent, file offset): one extent of a regular file, starting at that
/// offset. Lengths and image offsets stay within 2^63 - 1, as file sizes do. A file's
/// extent items are disjoint and inside its size; bytes below the size that no item covers
/// read as zeros (btrfs's NO_HOLES), so a hole or a zero fill takes no item
/// (`FileSystemTree` never writes a fill of zeros).
public enum ExtentItem: Equatable, Sendable {
    /// `length` bytes of the image starting at byte `offset` (not necessarily
    /// block-aligned); each holds a reference on every block its bytes touch.
    case image(offset: UInt64, length: UInt64)
    /// `length` copies of `byte`: holes, zero ranges, fills; nothing stored.
    case fill(byte: UInt8, length: UInt64)
    /// The bytes themselves, in the leaf: small files need no block and no daemon RAM.
    case inline([UInt8])

    /// The most bytes an inline extent holds.
    public static let inlineLimit = 1024

    /// The extent a file holds for it (`OffloadedFile`'s kinds).
    public var fileExtent: Extent {
        switch self {
        case .image(let offset, let length): return .mmapOffload(offset: offset, size: length)
        case .fill(let byte, let length): return .repeatingBytes(value: byte, count: length)
        case .inline(let bytes): return .inMemory(bytes)
        }
    }

    public var length: UInt64 {
        switch self {
        case .image(_, let length), .fill(_, let length): return length
        case .inline(let bytes): return UInt64(bytes.count)
        }
    }

    enum Tag: UInt8 { case image = 1, fill = 2, inline = 3 }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 17)
        switch self {
        case .image(let offset, let length):
            precondition(length > 0 && length <= UInt64(Int64.max) && offset <= UInt64(Int64.max) - length)
            w.u8(Tag.image.rawValue); w.u64(length); w.u64(offset)
        case .fill(let byte, let length):
            precondition(length > 0 && length <= UInt64(Int64.max))
            w.u8(Tag.fill.rawValue); w.u64(length); w.u8(byte)
        case .inline(let bytes):
            precondition(!bytes.isEmpty && bytes.count <= Self.inlineLimit)
            w.u8(Tag.inline.rawValue); w.raw(bytes)
        }
        return w.bytes
    }

    /// The bytes an encoded extent stores (an image extent's length, an inline extent's
    /// bytes; a fill stores none), checked as `decode` checks it, without copying an
    /// inline extent's bytes out.
    public static func storedLength(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> UInt64 {
        if bytes.first == Tag.inline.rawValue {
            guard (1...inlineLimit).contains(bytes.count - 1) else {
                throw ByteReader.Malformed(description: "an inline extent of \(bytes.count - 1) bytes")
            }
            return UInt64(bytes.count - 1)
        }
        switch try decode(bytes) {
        case .image(_, let length): return length
        case .fill, .inline: return 0
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> ExtentItem {
        var r = ByteReader(bytes)
        let tag = try r.u8()
        let item: ExtentItem
        switch Tag(rawValue: tag) {
        case .image:
            let length = try r.u64(), offset = try r.u64()
            // Within what files and images can be (2^63 - 1 bytes): sums with file offsets
            // and image offsets then never overflow.
            guard length > 0, length <= UInt64(Int64.max), offset <= UInt64(Int64.max) - length else {
                throw ByteReader.Malformed(description: "an image extent of \(length) bytes at \(offset)")
            }
            item = .image(offset: offset, length: length)
        case .fill:
            let length = try r.u64(), byte = try r.u8()
            guard length > 0, length <= UInt64(Int64.max) else {
                throw ByteReader.Malformed(description: "a fill extent of \(length) bytes")
            }
            item = .fill(byte: byte, length: length)
        case .inline:
            guard (1...inlineLimit).contains(r.remaining) else {
                throw ByteReader.Malformed(description: "an inline extent of \(r.remaining) bytes")
            }
            item = .inline(try r.raw(r.remaining))
        case nil:
            throw ByteReader.Malformed(description: "unknown extent kind \(tag)")
        }
        try ItemCoding.requireEnd(r, "an extent item")
        return item
    }
}
