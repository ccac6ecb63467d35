/// An inode's attributes: the value of its (ino, inode, 0) item, 104 bytes.
///
/// Only attributes: names are name, index and back-reference items, xattrs and a
/// symlink's target have items of their own, and so do extents. So a chmod rewrites 104
/// bytes, not (as format 1's inode record does) every xattr the inode has.
public struct InodeItem: Equatable, Sendable {
    public static let encodedSize = 104
    static let version: UInt8 = 1

    /// The file type as in st_mode >> 12 (S_IFREG >> 12 = 8, S_IFDIR >> 12 = 4, ...).
    public var type: UInt8
    /// st_mode & 0o7777.
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var linkCount: UInt32
    /// Reserved for inode flags (chattr); zero (other values are refused until defined).
    public var flags: UInt32
    public var size: UInt64
    public var rdev: UInt64
    public var accessTime: RecordTime
    public var modificationTime: RecordTime
    public var changeTime: RecordTime
    public var birthTime: RecordTime
    /// For a directory, the directory holding its entry (the root: itself); else 0.
    public var parent: UInt64
    /// For a directory, the index its next entry gets (`IndexItem`); else 0.
    public var nextIndex: UInt64

    public init(type: UInt8, permissions: UInt32, uid: UInt32, gid: UInt32, linkCount: UInt32,
                flags: UInt32 = 0, size: UInt64, rdev: UInt64, accessTime: RecordTime,
                modificationTime: RecordTime, changeTime: RecordTime, birthTime: RecordTime,
                parent: UInt64, nextIndex: UInt64) {
        self.type = type
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.linkCount = linkCount
        self.flags = flags
        self.size = size
        self.rdev = rdev
        self.accessTime = accessTime
        self.modificationTime = modificationTime
        self.changeTime = changeTime
        self.birthTime = birthTime
        self.parent = parent
        self.nextIndex = nextIndex
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: Self.encodedSize)
        encode(into: &w)
        return w.bytes
    }

    /// Appends the item's `encodedSize` bytes to `w`, with no buffer of its own: a journal
    /// frame states an item with most changes (`JournalChange`), and every write journals
    /// one.
    public func encode(into w: inout ByteWriter) {
        assert(permissions <= 0o7777 && flags == 0 && size <= UInt64(Int64.max) && ItemCoding.isFileType(type), "\(self) would not decode")
        // `fixed` traps unless exactly `encodedSize` bytes are stored.
        w.fixed(Self.encodedSize) { f in
            f.u8(Self.version)
            f.u8(type)
            f.u16(0)
            f.u32(permissions)
            f.u32(uid)
            f.u32(gid)
            f.u32(linkCount)
            f.u32(flags)
            f.u64(size)
            f.u64(rdev)
            Self.encode(accessTime, into: &f)
            Self.encode(modificationTime, into: &f)
            Self.encode(changeTime, into: &f)
            Self.encode(birthTime, into: &f)
            f.u64(parent)
            f.u64(nextIndex)
        }
    }

    private static func encode(_ time: RecordTime, into f: inout FixedBytes) {
        f.i64(time.seconds)
        f.u32(time.nanoseconds)
    }

    /// Decodes a value; refuses anything but exactly one well-formed item.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> InodeItem {
        guard bytes.count == encodedSize else {
            throw ByteReader.Malformed(description: "an inode item of \(bytes.count) bytes (\(encodedSize) expected)")
        }
        var r = ByteReader(bytes)
        let version = try r.u8()
        guard version == Self.version else { throw ByteReader.Malformed(description: "inode item version \(version)") }
        let type = try r.u8()
        guard ItemCoding.isFileType(type) else { throw ByteReader.Malformed(description: "inode item: file type \(type)") }
        guard try r.u16() == 0 else { throw ByteReader.Malformed(description: "inode item: reserved bytes set") }
        let permissions = try r.u32()
        guard permissions <= 0o7777 else {
            throw ByteReader.Malformed(description: "inode item: permissions \(String(permissions, radix: 8))")
        }
        let uid = try r.u32(), gid = try r.u32(), linkCount = try r.u32(), flags = try r.u32()
        guard flags == 0 else { throw ByteReader.Malformed(description: "inode item: flags \(flags)") }
        let size = try r.u64(), rdev = try r.u64()
        guard size <= UInt64(Int64.max) else { throw ByteReader.Malformed(description: "inode item: size \(size)") }
        // Four reads, not an array of them: every read of an inode decodes its item.
        let accessTime = try ItemCoding.time(&r), modificationTime = try ItemCoding.time(&r)
        let changeTime = try ItemCoding.time(&r), birthTime = try ItemCoding.time(&r)
        let parent = try r.u64(), nextIndex = try r.u64()
        return InodeItem(type: type, permissions: permissions, uid: uid, gid: gid, linkCount: linkCount,
                         flags: flags, size: size, rdev: rdev, accessTime: accessTime, modificationTime: modificationTime,
                         changeTime: changeTime, birthTime: birthTime, parent: parent, nextIndex: nextIndex)
    }
}
