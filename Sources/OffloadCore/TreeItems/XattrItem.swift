/// The value of (ino, xattr, h): the inode's extended attributes whose names hash to `h`
/// (the top 48 bits of the name's hash), usually one.
///
/// A value that fits stays in the item. A longer one (Linux allows 64 KiB, and format 1
/// kept such values) is cut into chunks of at most `chunkBytes`, each the whole value of
/// its own item (ino, xattr, h | n), n = `firstChunk`, `firstChunk` + 1, ...: the value
/// never leaves the tree, so it is checksummed, copied on write and shared by snapshots
/// like everything else there, with no block references to keep. Colliding names in one
/// item take disjoint chunk numbers.
public struct XattrItem: Equatable, Sendable {
    public static let maximumBytes = 1024
    /// The most bytes of one chunk item.
    /// Three chunk items fill a 4 KiB leaf: 3 × (21 bytes of item header + 1,328) = 4,047
    /// of the 4,048 bytes after the node header.
    public static let chunkBytes = 1328
    /// Linux's XATTR_SIZE_MAX.
    public static let valueLimit = 65536
    /// Linux's XATTR_NAME_MAX.
    public static let nameLimit = 255
    /// The namespaces whose names an image stores (with at least one byte after the
    /// prefix), and the two POSIX ACLs of `system.`: what the namespace accepts from a
    /// client (anything else is EOPNOTSUPP there). An image holding another name is
    /// damaged: no request could have put it there, and none could read it back.
    public static let namespacePrefixes: [[UInt8]] = [Array("user.".utf8), Array("trusted.".utf8), Array("security.".utf8)]
    public static let posixACLAccessName = Array("system.posix_acl_access".utf8)
    public static let posixACLDefaultName = Array("system.posix_acl_default".utf8)

    /// True for a name an image may hold: 1 to 255 bytes, no NUL, a POSIX ACL's or one
    /// in a stored namespace.
    public static func isStoredName(_ name: [UInt8]) -> Bool {
        guard !name.isEmpty, name.count <= nameLimit, !name.contains(0) else { return false }
        if name == posixACLAccessName || name == posixACLDefaultName { return true }
        return namespacePrefixes.contains { name.count > $0.count && name.starts(with: $0) }
    }

    public struct Attribute: Equatable, Sendable {
        public var name: [UInt8]
        public var valueLength: UInt32
        /// 0 when the value is `inlineValue`; else the chunk number of its first chunk.
        public var firstChunk: UInt16
        public var inlineValue: [UInt8]

        public init(name: [UInt8], valueLength: UInt32, firstChunk: UInt16, inlineValue: [UInt8]) {
            self.name = name
            self.valueLength = valueLength
            self.firstChunk = firstChunk
            self.inlineValue = inlineValue
        }

        /// The chunk numbers the value takes (empty when inline).
        public var chunks: Range<Int> { Int(firstChunk)..<(Int(firstChunk) + chunkCount) }

        /// The bytes chunk item `chunk` (one of `chunks`) holds: every chunk is whole but
        /// the last, which holds the rest of the value.
        public func chunkLength(_ chunk: Int) -> Int {
            precondition(chunks.contains(chunk), "chunk \(chunk) is not one of \(chunks)")
            return min(XattrItem.chunkBytes, Int(valueLength) - (chunk - Int(firstChunk)) * XattrItem.chunkBytes)
        }

        /// How many chunk items the value takes (0 when inline).
        public var chunkCount: Int {
            firstChunk == 0 ? 0 : (Int(valueLength) + XattrItem.chunkBytes - 1) / XattrItem.chunkBytes
        }

        var encodedSize: Int { 1 + name.count + 8 + inlineValue.count }
    }

    public var attributes: [Attribute]

    public init(attributes: [Attribute]) { self.attributes = attributes }

    public var encodedSize: Int { 1 + attributes.reduce(0) { $0 + $1.encodedSize } }

    public func encoded() -> [UInt8] {
        precondition(!attributes.isEmpty && attributes.count < 256 && encodedSize <= Self.maximumBytes)
        assert((try? Self.decode(bytes: Self.unchecked(attributes))) != nil, "\(self) would not decode")
        return Self.unchecked(attributes)
    }

    /// The encoding without the checks (tests write what the decoder must refuse).
    static func unchecked(_ attributes: [Attribute]) -> [UInt8] {
        BucketCoding.encode(attributes, capacity: maximumBytes) { attribute, w in
            w.u8(UInt8(attribute.name.count))
            w.raw(attribute.name)
            w.u32(attribute.valueLength)
            w.u16(attribute.firstChunk)
            w.u16(UInt16(attribute.inlineValue.count))
            w.raw(attribute.inlineValue)
        }
    }

    /// The attributes of an item that does not decode that can be kept, for repair: each
    /// entry read as `decode` reads it, and kept when it passes `decode`'s checks of one
    /// attribute against those kept before it; `dropped` counts the others. Reading stops
    /// where the entries' lengths no longer fit the item, and what is past that point is
    /// dropped uncounted; `readAll` says whether every entry the item's count names was
    /// read (bytes after the last are dropped). Nil for an item longer than an item may be
    /// or with no entry count. An item holds the attributes whose names share a 48-bit
    /// hash, so a damaged name no longer drops the others under it.
    static func salvage(_ bytes: UnsafeRawBufferPointer) -> (kept: [Attribute], dropped: Int, readAll: Bool)? {
        guard bytes.count <= maximumBytes else { return nil }
        var r = ByteReader(bytes)
        guard let count = try? Int(r.u8()), count > 0 else { return nil }
        var kept: [Attribute] = [], dropped = 0
        for _ in 0..<count {
            guard let entry = try? Self.readEntry(&r) else { return (kept, dropped, false) }
            if (try? Self.check(entry, against: kept)) != nil { kept.append(entry) } else { dropped += 1 }
        }
        return (kept, dropped, true)
    }

    /// One entry's bytes, unchecked.
    private static func readEntry(_ r: inout ByteReader) throws(ByteReader.Malformed) -> Attribute {
        let nameLength = Int(try r.u8())
        let name = try r.raw(nameLength)
        let valueLength = try r.u32(), firstChunk = try r.u16(), inlineLength = Int(try r.u16())
        return Attribute(name: name, valueLength: valueLength, firstChunk: firstChunk, inlineValue: try r.raw(inlineLength))
    }

    /// `decode`'s checks of one attribute against those before it in the item.
    private static func check(_ attribute: Attribute, against earlier: [Attribute]) throws(ByteReader.Malformed) {
        guard isStoredName(attribute.name), !earlier.contains(where: { $0.name == attribute.name }) else {
            throw ByteReader.Malformed(description: "an xattr item with a name no namespace stores, or a repeated one")
        }
        guard attribute.valueLength <= valueLimit else {
            throw ByteReader.Malformed(description: "an xattr value of \(attribute.valueLength) bytes")
        }
        if attribute.firstChunk == 0 {
            guard attribute.inlineValue.count == Int(attribute.valueLength) else {
                throw ByteReader.Malformed(description: "an inline xattr value of \(attribute.inlineValue.count) of \(attribute.valueLength) bytes")
            }
        } else {
            let chunks = attribute.chunks
            guard attribute.inlineValue.isEmpty, attribute.valueLength > 0, chunks.upperBound <= 65536,
                  !earlier.contains(where: { $0.chunks.overlaps(chunks) }) else {
                throw ByteReader.Malformed(description: "xattr chunks \(chunks) overlap or run past the last")
            }
        }
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> XattrItem {
        XattrItem(attributes: try BucketCoding.decode(bytes, maximumBytes: maximumBytes, what: "an xattr item") {
            (r, earlier: [Attribute]) throws(ByteReader.Malformed) in
            let attribute = try readEntry(&r)
            try check(attribute, against: earlier)
            return attribute
        })
    }
}
