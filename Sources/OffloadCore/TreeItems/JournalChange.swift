/// One change stated by a format 2 journal frame (docs/ARCHITECTURE.md, "Decisions from
/// the design review": self-contained records).
///
/// Each change says everything replay needs to apply it to the delta without reading the
/// tree: a link carries its index and type, an unlink its child and index (so the name,
/// index and back-reference items can all be removed), xattrs are set and removed one name
/// at a time. Replay therefore costs RAM work proportional to the journal's bytes, which is
/// what bounds mount time after a crash. A frame holds one operation's changes; its
/// stream number is the generation the operation joined, and replay applies only frames of
/// generations newer than the committed one, so reference counts change exactly once.
public enum JournalChange: Equatable, Sendable {
    /// The inode's attributes, whole (creates, chmod, times, link counts, sizes).
    case attributes(inode: UInt64, InodeItem)
    /// A new name in `directory`: its name, index and back-reference items.
    case link(directory: UInt64, NamedEntry)
    /// A name gone from `directory`, with what it named.
    case unlink(directory: UInt64, NamedEntry)
    case setXattr(inode: UInt64, name: [UInt8], value: [UInt8])
    case removeXattr(inode: UInt64, name: [UInt8])
    case symlinkTarget(inode: UInt64, [UInt8])
    /// `range` of the file now holds `pieces` (tiling it exactly), and the file is `size`
    /// bytes long. RAM pieces carry their bytes.
    case fileRange(inode: UInt64, size: UInt64, range: Range<UInt64>, pieces: [FilePiece])
    /// The inode's orphan item is now `item` (nil: it has none).
    case orphan(inode: UInt64, OrphanItem?)
    /// The inode and all its items are gone.
    case drop(inode: UInt64)

    /// The inode whose items the change is of: a name's change is its directory's.
    public var object: UInt64 {
        switch self {
        case .attributes(let inode, _), .setXattr(let inode, _, _), .removeXattr(let inode, _),
             .symlinkTarget(let inode, _), .fileRange(let inode, _, _, _), .orphan(let inode, _), .drop(let inode):
            return inode
        case .link(let directory, _), .unlink(let directory, _):
            return directory
        }
    }

    /// Whether the change is of `inode`'s items or of a name of it.
    public func mentions(_ inode: UInt64) -> Bool {
        switch self {
        case .link(let directory, let entry), .unlink(let directory, let entry):
            return directory == inode || entry.child == inode
        default:
            return object == inode
        }
    }

    enum Tag: UInt8 {
        case attributes = 1, link, unlink, setXattr, removeXattr, symlinkTarget, fileRange, orphan, drop
    }

    /// Limits no valid change exceeds: PATH_MAX for a target, XATTR_NAME_MAX and
    /// XATTR_SIZE_MAX, 1 MiB for a RAM piece (the write size limit).
    static let targetLimit = 4095
    static let xattrNameLimit = 255
    static let memoryPieceLimit = 1 << 20

    public func encode(into w: inout ByteWriter) {
        assert(isEncodable, "\(self) would not decode")
        encodeUnchecked(into: &w)
    }

    /// The encoding without the assertion (tests write what the decoder must refuse).
    func encodeUnchecked(into w: inout ByteWriter) {
        switch self {
        case .attributes(let inode, let item):
            w.u8(Tag.attributes.rawValue); w.u64(inode); item.encode(into: &w)
        case .link(let directory, let entry):
            w.u8(Tag.link.rawValue); Self.encode(directory, entry, into: &w)
        case .unlink(let directory, let entry):
            w.u8(Tag.unlink.rawValue); Self.encode(directory, entry, into: &w)
        case .setXattr(let inode, let name, let value):
            w.u8(Tag.setXattr.rawValue); w.u64(inode); w.blob(name); w.blob(value)
        case .removeXattr(let inode, let name):
            w.u8(Tag.removeXattr.rawValue); w.u64(inode); w.blob(name)
        case .symlinkTarget(let inode, let target):
            w.u8(Tag.symlinkTarget.rawValue); w.u64(inode); w.blob(target)
        case .fileRange(let inode, let size, let range, let pieces):
            w.u8(Tag.fileRange.rawValue); w.u64(inode); w.u64(size)
            w.u64(range.lowerBound); w.u64(range.upperBound); w.u32(UInt32(pieces.count))
            for piece in pieces {
                switch piece.extent {
                case .mmapOffload(let offset, let size): w.u8(1); w.u64(size); w.u64(offset)
                case .repeatingBytes(let value, let count): w.u8(2); w.u64(count); w.u8(value)
                case .inMemory(let bytes): w.u8(3); w.blob(bytes)
                }
            }
        case .orphan(let inode, let item):
            w.u8(Tag.orphan.rawValue); w.u64(inode)
            if let item { w.u8(1); w.raw(item.encoded()) } else { w.u8(0) }
        case .drop(let inode):
            w.u8(Tag.drop.rawValue); w.u64(inode)
        }
    }

    /// What the decoder checks, for the encoder's assertion.
    var isEncodable: Bool {
        switch self {
        case .link(let directory, let entry), .unlink(let directory, let entry):
            return ItemCoding.isInode(directory) && entry.isEncodable
        case .fileRange(let inode, _, let range, let pieces):
            var cursor = range.lowerBound
            for piece in pieces {
                guard piece.offset == cursor, piece.extent.size > 0, piece.extent.size <= range.upperBound - cursor else {
                    return false
                }
                cursor += piece.extent.size
            }
            return ItemCoding.isInode(inode) && cursor == range.upperBound
        case .attributes(let inode, _), .setXattr(let inode, _, _), .removeXattr(let inode, _),
             .symlinkTarget(let inode, _), .orphan(let inode, _), .drop(let inode):
            return ItemCoding.isInode(inode)
        }
    }

    /// A `.link` or `.unlink` before its name: directory, child and index (u64 each), type
    /// and the name's length (u8 each).
    private static let entryHeaderSize = 26

    private static func encode(_ directory: UInt64, _ entry: NamedEntry, into w: inout ByteWriter) {
        w.fixed(entryHeaderSize) { f in
            f.u64(directory); f.u64(entry.child); f.u64(entry.index); f.u8(entry.type)
            f.u8(UInt8(entry.name.count))
        }
        w.raw(entry.name)
    }

    /// Decodes one change; throws on anything malformed, so that replay can trust it.
    public static func decode(from r: inout ByteReader) throws(ByteReader.Malformed) -> JournalChange {
        let raw = try r.u8()
        guard let tag = Tag(rawValue: raw) else { throw ByteReader.Malformed(description: "unknown change \(raw)") }
        switch tag {
        case .attributes:
            let inode = try inodeNumber(&r)
            let bytes = try r.raw(InodeItem.encodedSize)
            let item = try InodeItem.decode(bytes: bytes)
            return .attributes(inode: inode, item)
        case .link:
            let (directory, entry) = try decodeEntry(&r)
            return .link(directory: directory, entry)
        case .unlink:
            let (directory, entry) = try decodeEntry(&r)
            return .unlink(directory: directory, entry)
        case .setXattr:
            let inode = try inodeNumber(&r), name = try xattrName(&r)
            return .setXattr(inode: inode, name: name, value: try r.blob(limit: XattrItem.valueLimit))
        case .removeXattr:
            let inode = try inodeNumber(&r)
            return .removeXattr(inode: inode, name: try xattrName(&r))
        case .symlinkTarget:
            let inode = try inodeNumber(&r), target = try r.blob(limit: targetLimit)
            guard !target.isEmpty, !target.contains(0) else {
                throw ByteReader.Malformed(description: "an empty or NUL-holding symlink target")
            }
            return .symlinkTarget(inode: inode, target)
        case .fileRange:
            return try decodeFileRange(&r)
        case .orphan:
            let inode = try inodeNumber(&r)
            switch try r.u8() {
            case 0: return .orphan(inode: inode, nil)
            case 1:
                let bytes = try r.raw(OrphanItem.encodedSize)
                return .orphan(inode: inode, try OrphanItem.decode(bytes: bytes))
            case let other: throw ByteReader.Malformed(description: "orphan presence byte \(other)")
            }
        case .drop:
            return .drop(inode: try inodeNumber(&r))
        }
    }

    private static func decodeEntry(_ r: inout ByteReader) throws(ByteReader.Malformed) -> (UInt64, NamedEntry) {
        let directory = try inodeNumber(&r), child = try r.u64(), index = try r.u64(), type = try r.u8()
        try ItemCoding.checkChild(child, type: type)
        try ItemCoding.checkIndex(index)
        let name = try ItemCoding.name(&r)
        return (directory, NamedEntry(name: name, child: child, type: type, index: index))
    }

    private static func decodeFileRange(_ r: inout ByteReader) throws(ByteReader.Malformed) -> JournalChange {
        let inode = try inodeNumber(&r), size = try r.u64(), start = try r.u64(), end = try r.u64()
        guard start <= end, size <= OffloadedFile.maximumSize, end <= OffloadedFile.maximumSize else {
            throw ByteReader.Malformed(description: "file range \(start)..<\(end) of size \(size)")
        }
        let count = Int(try r.u32())
        // The smallest piece is a RAM piece of one byte: kind, length, byte (6 bytes).
        guard count <= r.remaining / 6 else { throw ByteReader.Malformed(description: "\(count) extents cannot fit") }
        var pieces: [FilePiece] = []
        pieces.reserveCapacity(count)
        var cursor = start
        for _ in 0..<count {
            let extent: Extent
            switch try r.u8() {
            case 1:
                let length = try r.u64(), offset = try r.u64()
                guard length <= UInt64(Int64.max), offset <= UInt64(Int64.max) - length else {
                    throw ByteReader.Malformed(description: "an image extent of \(length) bytes at \(offset)")
                }
                extent = .mmapOffload(offset: offset, size: length)
            case 2:
                let length = try r.u64()
                extent = .repeatingBytes(value: try r.u8(), count: length)
            case 3:
                extent = .inMemory(try r.blob(limit: memoryPieceLimit))
            case let other:
                throw ByteReader.Malformed(description: "unknown extent kind \(other)")
            }
            // The pieces tile the range: each starts where the last ended, none is empty.
            guard extent.size > 0, extent.size <= end - cursor else {
                throw ByteReader.Malformed(description: "an extent of \(extent.size) bytes at \(cursor) past \(end)")
            }
            pieces.append(FilePiece(offset: cursor, extent: extent))
            cursor += extent.size
        }
        guard cursor == end else { throw ByteReader.Malformed(description: "extents end at \(cursor), the range at \(end)") }
        return .fileRange(inode: inode, size: size, range: start..<end, pieces: pieces)
    }

    private static func inodeNumber(_ r: inout ByteReader) throws(ByteReader.Malformed) -> UInt64 {
        let number = try r.u64()
        guard ItemCoding.isInode(number) else {
            throw ByteReader.Malformed(description: "inode number \(number) out of range")
        }
        return number
    }

    private static func xattrName(_ r: inout ByteReader) throws(ByteReader.Malformed) -> [UInt8] {
        let name = try r.blob(limit: xattrNameLimit)
        guard XattrItem.isStoredName(name) else { throw ByteReader.Malformed(description: "an invalid xattr name") }
        return name
    }

    /// All changes of one frame payload.
    public static func decodeAll(_ payload: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> [JournalChange] {
        var reader = ByteReader(payload)
        var changes: [JournalChange] = []
        while !reader.isAtEnd { changes.append(try decode(from: &reader)) }
        return changes
    }
}
