/// The three items that make one directory entry in format 2 (docs/ARCHITECTURE.md,
/// "Keys and items"): the entry by name's hash (lookup), by index (readdir), and the
/// back reference from the child (link counts, paths for repair). Each stands alone: no
/// item needs another to decode.

/// One directory entry as held by a name item.
public struct NamedEntry: Equatable, Sendable {
    public var name: [UInt8]
    public var child: UInt64
    /// The child's file type (st_mode >> 12), for readdir's d_type.
    public var type: UInt8
    /// The entry's `IndexItem` number in the directory.
    public var index: UInt64

    public init(name: [UInt8], child: UInt64, type: UInt8, index: UInt64) {
        self.name = name
        self.child = child
        self.type = type
        self.index = index
    }

    /// What the decoders check of an entry.
    var isEncodable: Bool {
        ItemCoding.isValidName(name) && ItemCoding.isInode(child) && ItemCoding.isFileType(type) && index >= 3 && index < UInt64.max
    }
}

/// The value of (directory, name, hash): every entry of the directory whose name has
/// that hash, usually one. Colliding names share the item up to `maximumBytes`; a name
/// that would make it longer is refused (`fits`), which takes names chosen to collide
/// under this image's key, and 4 KiB nodes hold at least four such items.
public struct NameItem: Equatable, Sendable {
    public static let maximumBytes = 1024
    public var entries: [NamedEntry]

    public init(entries: [NamedEntry]) { self.entries = entries }

    /// The encoded size with `entry` added.
    public func fits(adding entry: NamedEntry) -> Bool {
        encodedSize + Self.entryBytes(entry) <= Self.maximumBytes && entries.count < 255
    }

    public var encodedSize: Int { 1 + entries.reduce(0) { $0 + Self.entryBytes($1) } }
    static func entryBytes(_ entry: NamedEntry) -> Int { 18 + entry.name.count }

    public func encoded() -> [UInt8] {
        precondition(!entries.isEmpty && entries.count < 256 && encodedSize <= Self.maximumBytes)
        assert(entries.allSatisfy { $0.isEncodable } && Set(entries.map(\.name)).count == entries.count,
               "\(self) would not decode")
        return BucketCoding.encode(entries, capacity: encodedSize) { entry, w in
            w.u64(entry.child)
            w.u64(entry.index)
            w.u8(entry.type)
            w.u8(UInt8(entry.name.count))
            w.raw(entry.name)
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> NameItem {
        NameItem(entries: try BucketCoding.decode(bytes, maximumBytes: maximumBytes, what: "a name item") {
            (r, earlier: [NamedEntry]) throws(ByteReader.Malformed) in
            let child = try r.u64(), index = try r.u64(), type = try r.u8()
            try ItemCoding.checkChild(child, type: type)
            try ItemCoding.checkIndex(index)
            let name = try ItemCoding.name(&r)
            guard !earlier.contains(where: { $0.name == name }) else {
                throw ByteReader.Malformed(description: "a name item holding one name twice")
            }
            return NamedEntry(name: name, child: child, type: type, index: index)
        })
    }
}

/// The value of (directory, index, n): the directory's entry number n.
public struct IndexItem: Equatable, Sendable {
    public var name: [UInt8]
    public var child: UInt64
    public var type: UInt8

    public init(name: [UInt8], child: UInt64, type: UInt8) {
        self.name = name
        self.child = child
        self.type = type
    }

    public func encoded() -> [UInt8] {
        precondition(ItemCoding.isValidName(name))
        assert(ItemCoding.isInode(child) && ItemCoding.isFileType(type), "\(self) would not decode")
        var w = ByteWriter(capacity: 10 + name.count)
        w.u64(child)
        w.u8(type)
        w.u8(UInt8(name.count))
        w.raw(name)
        return w.bytes
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> IndexItem {
        var r = ByteReader(bytes)
        let child = try r.u64(), type = try r.u8()
        try ItemCoding.checkChild(child, type: type)
        let name = try ItemCoding.name(&r)
        try ItemCoding.requireEnd(r, "an index item")
        return IndexItem(name: name, child: child, type: type)
    }
}

/// One link of an inode, as its back reference holds it.
public struct Link: Equatable, Sendable {
    public var directory: UInt64
    public var index: UInt64
    public var name: [UInt8]

    public init(directory: UInt64, index: UInt64, name: [UInt8]) {
        self.directory = directory
        self.index = index
        self.name = name
    }
}

/// The value of (ino, backReference, hash(directory, name)): the inode's links whose
/// directory and name have that hash, usually one. One item per link (not per
/// directory, which btrfs learned overflows a leaf with many hard links in one directory).
public struct BackReferenceItem: Equatable, Sendable {
    public static let maximumBytes = 1024
    public var links: [Link]

    public init(links: [Link]) { self.links = links }

    public var encodedSize: Int { 1 + links.reduce(0) { $0 + 17 + $1.name.count } }

    public func fits(adding link: Link) -> Bool {
        encodedSize + 17 + link.name.count <= Self.maximumBytes && links.count < 255
    }

    public func encoded() -> [UInt8] {
        precondition(!links.isEmpty && links.count < 256 && encodedSize <= Self.maximumBytes)
        assert(links.allSatisfy { ItemCoding.isInode($0.directory) && $0.index >= 3 && ItemCoding.isValidName($0.name) },
               "\(self) would not decode")
        return BucketCoding.encode(links, capacity: encodedSize) { link, w in
            w.u64(link.directory)
            w.u64(link.index)
            w.u8(UInt8(link.name.count))
            w.raw(link.name)
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> BackReferenceItem {
        BackReferenceItem(links: try BucketCoding.decode(bytes, maximumBytes: maximumBytes, what: "a back reference") {
            (r, earlier: [Link]) throws(ByteReader.Malformed) in
            let directory = try r.u64(), index = try r.u64()
            try ItemCoding.checkChild(directory, type: 4)
            try ItemCoding.checkIndex(index)
            let name = try ItemCoding.name(&r)
            guard !earlier.contains(where: { $0.directory == directory && $0.name == name }) else {
                throw ByteReader.Malformed(description: "a back reference holding one link twice")
            }
            return Link(directory: directory, index: index, name: name)
        })
    }
}
