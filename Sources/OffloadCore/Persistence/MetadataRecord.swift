/// One change to the filesystem's metadata, as the journal and the checkpoint store it.
///
/// Every record states the RESULTING state of one object (an inode's attributes, one
/// directory entry, one byte range of a file), never a delta: applying a record twice, or
/// applying records to a state that already contains some of them, gives the same result.
/// That is what lets a checkpoint be taken while the filesystem keeps changing (each
/// object is captured under its own lock, and the journal records written since the
/// checkpoint began are replayed on top; see docs/ARCHITECTURE.md, "Persistence").
///
/// Plain values only (numbers and byte strings): the namespace converts to and from them.
/// The byte encoding is in docs/FORMAT.md.
public enum MetadataRecord: Equatable, Sendable {
    /// The inode's attributes, extended attributes and symlink target, created or replaced.
    case inode(InodeRecord)
    /// `name` in `directory` refers to `child` (created or replaced).
    case entry(directory: UInt64, name: [UInt8], child: UInt64)
    /// `name` in `directory` no longer exists.
    case removeEntry(directory: UInt64, name: [UInt8])
    /// File `inode` now has length `size`, and its bytes in `range` are `pieces` (sorted,
    /// inside `range`; what the pieces leave uncovered is a hole). Bytes at or past `size`
    /// no longer exist.
    case fileRange(inode: UInt64, size: UInt64, range: Range<UInt64>, pieces: [FilePiece])
    /// The inode is gone (no names, no users): its storage is free.
    case drop(inode: UInt64)
    /// Inode numbers below this have been handed out; new ones start here.
    case nextInode(UInt64)

    /// Type tags in the encoding. Never reuse a retired value.
    enum Tag: UInt8 {
        case inode = 1, entry = 2, removeEntry = 3, fileRange = 4, drop = 5, nextInode = 6
    }
}

/// One extent of a file at a file offset.
public struct FilePiece: Equatable, Sendable {
    public var offset: UInt64
    public var extent: Extent

    public init(offset: UInt64, extent: Extent) {
        self.offset = offset
        self.extent = extent
    }
}

/// A point in time as stored: seconds and nanoseconds since the epoch.
public struct RecordTime: Equatable, Sendable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }
}

/// Everything about an inode except its file data and its names.
public struct InodeRecord: Equatable, Sendable {
    public var number: UInt64
    /// The file type as in st_mode >> 12 (S_IFREG >> 12 = 8, S_IFDIR >> 12 = 4, ...).
    public var type: UInt8
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// As the namespace counted it; recovery recomputes it from the entries and fsck
    /// compares the two.
    public var linkCount: UInt32
    public var rdev: UInt64
    public var accessTime: RecordTime
    public var modificationTime: RecordTime
    public var changeTime: RecordTime
    public var birthTime: RecordTime
    /// For directories, the directory holding its entry (the root: itself).
    public var parent: UInt64
    public var symlinkTarget: [UInt8]
    public var xattrs: [Xattr]

    public struct Xattr: Equatable, Sendable {
        public var name: [UInt8]
        public var value: [UInt8]
        public init(name: [UInt8], value: [UInt8]) {
            self.name = name
            self.value = value
        }
    }

    public init(number: UInt64, type: UInt8, permissions: UInt32, uid: UInt32, gid: UInt32,
                linkCount: UInt32, rdev: UInt64, accessTime: RecordTime, modificationTime: RecordTime,
                changeTime: RecordTime, birthTime: RecordTime, parent: UInt64,
                symlinkTarget: [UInt8], xattrs: [Xattr]) {
        self.number = number
        self.type = type
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.linkCount = linkCount
        self.rdev = rdev
        self.accessTime = accessTime
        self.modificationTime = modificationTime
        self.changeTime = changeTime
        self.birthTime = birthTime
        self.parent = parent
        self.symlinkTarget = symlinkTarget
        self.xattrs = xattrs
    }
}

extension MetadataRecord {
    /// Pieces per `fileRange` record: a RAM piece encodes to at most about 4.1 KB, so a
    /// record stays near 8 MB, far below `FrameHeader.maximumPayload`.
    public static let piecesPerFileRange = 2048

    /// At least the encoded size of the `fileRange` records (with their frames' headers)
    /// for `pieces` extents holding `memoryBytes` of RAM bytes in all (docs/FORMAT.md: 37
    /// bytes a record, at most 29 a piece besides its RAM bytes).
    public static func fileRangeBound(pieces: Int, memoryBytes: Int) -> Int {
        let records = max(1, (pieces + piecesPerFileRange - 1) / piecesPerFileRange)
        return records * (37 + FrameHeader.size) + 29 * pieces + memoryBytes
    }

    /// `fileRange` records stating that `range` of file `inode` (now `size` bytes long)
    /// holds `pieces` (sorted, inside `range`): one record, or consecutive records for
    /// consecutive parts of the range when there are more than `piecesPerFileRange`.
    public static func fileRanges(inode: UInt64, size: UInt64, range: Range<UInt64>,
                                  pieces: [FilePiece]) -> [MetadataRecord] {
        guard pieces.count > piecesPerFileRange else {
            return [.fileRange(inode: inode, size: size, range: range, pieces: pieces)]
        }
        var records: [MetadataRecord] = []
        var index = 0
        var from = range.lowerBound
        while index < pieces.count {
            let end = min(index + piecesPerFileRange, pieces.count)
            let to = end == pieces.count ? range.upperBound : pieces[end].offset
            records.append(.fileRange(inode: inode, size: size, range: from..<to, pieces: Array(pieces[index..<end])))
            index = end
            from = to
        }
        return records
    }
}

// MARK: - Encoding

extension MetadataRecord {
    /// Limits a damaged length field cannot get past: the largest name (NAME_MAX), symlink
    /// target (PATH_MAX), xattr name and value (XATTR_NAME_MAX, XATTR_SIZE_MAX) and RAM
    /// extent (one block) the namespace ever stores.
    static let nameLimit = 255
    static let targetLimit = 4096
    static let xattrNameLimit = 255
    static let xattrValueLimit = 65536
    static let memoryPieceLimit = 1 << 20

    public func encode(into w: inout ByteWriter) {
        switch self {
        case .inode(let r):
            w.u8(Tag.inode.rawValue)
            w.u64(r.number); w.u8(r.type); w.u32(r.permissions); w.u32(r.uid); w.u32(r.gid)
            w.u32(r.linkCount); w.u64(r.rdev)
            for t in [r.accessTime, r.modificationTime, r.changeTime, r.birthTime] {
                w.i64(t.seconds); w.u32(t.nanoseconds)
            }
            w.u64(r.parent)
            w.blob(r.symlinkTarget)
            w.u32(UInt32(r.xattrs.count))
            for x in r.xattrs { w.blob(x.name); w.blob(x.value) }
        case .entry(let directory, let name, let child):
            w.u8(Tag.entry.rawValue); w.u64(directory); w.blob(name); w.u64(child)
        case .removeEntry(let directory, let name):
            w.u8(Tag.removeEntry.rawValue); w.u64(directory); w.blob(name)
        case .fileRange(let inode, let size, let range, let pieces):
            w.u8(Tag.fileRange.rawValue); w.u64(inode); w.u64(size)
            w.u64(range.lowerBound); w.u64(range.upperBound)
            w.u32(UInt32(pieces.count))
            for p in pieces {
                w.u64(p.offset)
                switch p.extent {
                case .mmapOffload(let offset, let size): w.u8(0); w.u64(offset); w.u64(size)
                case .repeatingBytes(let value, let count): w.u8(1); w.u8(value); w.u64(count)
                case .inMemory(let bytes): w.u8(2); w.blob(bytes)
                }
            }
        case .drop(let inode):
            w.u8(Tag.drop.rawValue); w.u64(inode)
        case .nextInode(let next):
            w.u8(Tag.nextInode.rawValue); w.u64(next)
        }
    }

    /// Decodes one record; throws on anything malformed, including ranges that do not
    /// add up, so that replay can trust what it gets.
    public static func decode(from r: inout ByteReader) throws(ByteReader.Malformed) -> MetadataRecord {
        let tagByte = try r.u8()
        guard let tag = Tag(rawValue: tagByte) else {
            throw ByteReader.Malformed(description: "unknown record type \(tagByte)")
        }
        switch tag {
        case .inode:
            let number = try inodeNumber(&r), type = try r.u8(), permissions = try r.u32()
            let uid = try r.u32(), gid = try r.u32(), linkCount = try r.u32(), rdev = try r.u64()
            var times: [RecordTime] = []
            for _ in 0..<4 {
                let seconds = try r.i64(), nanoseconds = try r.u32()
                guard nanoseconds < 1_000_000_000 else {
                    throw ByteReader.Malformed(description: "nanoseconds \(nanoseconds) out of range")
                }
                times.append(RecordTime(seconds: seconds, nanoseconds: nanoseconds))
            }
            let parent = try inodeNumber(&r)
            let target = try r.blob(limit: targetLimit)
            let xattrCount = Int(try r.u32())
            guard xattrCount <= r.remaining / 8 else {
                throw ByteReader.Malformed(description: "\(xattrCount) xattrs cannot fit")
            }
            var xattrs: [InodeRecord.Xattr] = []
            for _ in 0..<xattrCount {
                let name = try r.blob(limit: xattrNameLimit)
                let value = try r.blob(limit: xattrValueLimit)
                xattrs.append(.init(name: name, value: value))
            }
            return .inode(InodeRecord(
                number: number, type: type, permissions: permissions, uid: uid, gid: gid,
                linkCount: linkCount, rdev: rdev, accessTime: times[0], modificationTime: times[1],
                changeTime: times[2], birthTime: times[3], parent: parent, symlinkTarget: target,
                xattrs: xattrs))
        case .entry:
            let directory = try inodeNumber(&r), name = try r.blob(limit: nameLimit), child = try inodeNumber(&r)
            return .entry(directory: directory, name: name, child: child)
        case .removeEntry:
            let directory = try inodeNumber(&r), name = try r.blob(limit: nameLimit)
            return .removeEntry(directory: directory, name: name)
        case .fileRange:
            let inode = try inodeNumber(&r), size = try r.u64()
            let start = try r.u64(), end = try r.u64()
            guard start <= end, size <= OffloadedFile.maximumSize, end <= OffloadedFile.maximumSize else {
                throw ByteReader.Malformed(description: "file range \(start)..<\(end) of size \(size) is invalid")
            }
            let count = Int(try r.u32())
            guard count <= r.remaining / 9 else {
                throw ByteReader.Malformed(description: "\(count) extents cannot fit")
            }
            var pieces: [FilePiece] = []
            pieces.reserveCapacity(count)
            var cursor = start
            for _ in 0..<count {
                let offset = try r.u64()
                let extent: Extent
                switch try r.u8() {
                case 0:
                    let imageOffset = try r.u64(), length = try r.u64()
                    guard imageOffset <= UInt64(Int64.max) && length <= UInt64(Int64.max) else {
                        throw ByteReader.Malformed(description: "image extent out of range")
                    }
                    extent = .mmapOffload(offset: imageOffset, size: length)
                case 1:
                    let value = try r.u8(), length = try r.u64()
                    extent = .repeatingBytes(value: value, count: length)
                case 2:
                    extent = .inMemory(try r.blob(limit: memoryPieceLimit))
                case let other:
                    throw ByteReader.Malformed(description: "unknown extent type \(other)")
                }
                // Pieces are sorted, non-empty, inside the range, and do not overlap.
                guard offset >= cursor, offset <= end, extent.size > 0, extent.size <= end - offset else {
                    throw ByteReader.Malformed(description: "extent at \(offset) (\(extent)) does not fit in \(start)..<\(end)")
                }
                cursor = offset + extent.size
                pieces.append(FilePiece(offset: offset, extent: extent))
            }
            return .fileRange(inode: inode, size: size, range: start..<end, pieces: pieces)
        case .drop:
            return .drop(inode: try inodeNumber(&r))
        case .nextInode:
            return .nextInode(try inodeNumber(&r))
        }
    }

    /// Inode numbers are handed out one at a time from 2: no namespace reaches 2^63, and
    /// the number after the highest must not overflow. Every field that names an inode is
    /// checked (an entry's directory and child, a parent, a file range's or a drop's
    /// inode): a hostile number in one of them once reached a repaired image's checkpoint
    /// as an inode of its own, which the next open refused (found by the fuzzer).
    public static let maximumInode = UInt64(Int64.max)

    private static func inodeNumber(_ r: inout ByteReader) throws(ByteReader.Malformed) -> UInt64 {
        let number = try r.u64()
        guard number <= maximumInode else { throw ByteReader.Malformed(description: "inode number \(number) out of range") }
        return number
    }

    /// All records of one frame payload.
    public static func decodeAll(_ payload: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> [MetadataRecord] {
        var reader = ByteReader(payload)
        var records: [MetadataRecord] = []
        while !reader.isAtEnd { records.append(try decode(from: &reader)) }
        return records
    }
}
