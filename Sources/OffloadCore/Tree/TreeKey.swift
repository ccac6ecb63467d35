/// The key of every item in a metadata tree: (object, kind, offset), ordered
/// lexicographically in that order, as btrfs orders its keys.
///
/// `object` groups everything about one thing (an inode number), `kind` says which sort of
/// item it is (attributes, a directory entry, an extent...), and `offset` orders items of
/// one kind (a file offset, a name's hash). All items of one object are therefore
/// neighbours in the tree, and a scan over one (object, kind) reads adjacent leaves.
/// What the kinds are is the namespace's business (a later step); the tree only orders them.
///
/// On disk a key is 17 bytes, little-endian: object u64, kind u8, offset u64
/// (docs/FORMAT.md, "Version 2 (in progress): tree nodes").
public struct TreeKey: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var object: UInt64
    public var kind: UInt8
    public var offset: UInt64

    /// Bytes of an encoded key.
    public static let encodedSize = 17
    /// The lowest possible key: the lower bound of the leftmost subtree.
    public static let minimum = TreeKey(object: 0, kind: 0, offset: 0)
    /// The highest possible key.
    public static let maximum = TreeKey(object: .max, kind: .max, offset: .max)

    public init(object: UInt64, kind: UInt8, offset: UInt64) {
        self.object = object
        self.kind = kind
        self.offset = offset
    }

    @inline(__always)
    public static func < (a: TreeKey, b: TreeKey) -> Bool {
        if a.object != b.object { return a.object < b.object }
        if a.kind != b.kind { return a.kind < b.kind }
        return a.offset < b.offset
    }

    public var description: String { "(\(object), \(kind), \(offset))" }

    /// Reads a key encoded at `pointer` (no alignment needed).
    @inline(__always)
    init(decodingAt pointer: UnsafeRawPointer) {
        object = UInt64(littleEndian: pointer.loadUnaligned(as: UInt64.self))
        kind = pointer.load(fromByteOffset: 8, as: UInt8.self)
        offset = UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: 9, as: UInt64.self))
    }

    /// Writes the 17-byte encoding at `pointer` (no alignment needed).
    @inline(__always)
    func encode(at pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: object.littleEndian, as: UInt64.self)
        pointer.storeBytes(of: kind, toByteOffset: 8, as: UInt8.self)
        pointer.storeBytes(of: offset.littleEndian, toByteOffset: 9, as: UInt64.self)
    }

    /// The encoding as an array (tests, tools).
    public var encoded: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedSize)
        bytes.withUnsafeMutableBytes { encode(at: $0.baseAddress!) }
        return bytes
    }

    /// Decodes the first 17 bytes of `bytes`; nil when there are fewer.
    public init?(decoding bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.encodedSize, let base = bytes.baseAddress else { return nil }
        self.init(decodingAt: base)
    }
}
