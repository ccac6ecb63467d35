/// The bytes of one tree node: a 4096-byte block (docs/FORMAT.md, "Version 2 (in
/// progress): tree nodes"). Little-endian throughout.
///
/// Header, 48 bytes:
///
///     0  magic       u32  "OFTN"
///     4  crc         u32  CRC-32C of the whole 4096 bytes with this field zero
///     8  image       u64  the image id: a node of another image is refused
///    16  generation  u64  the commit that wrote the node
///    24  block       u64  the node's own block number: a misdirected write is refused
///    32  tree        u32  which tree owns the node
///    36  level       u8   0 for a leaf; a node's children are one level lower
///    37  reserved    u8   zero
///    38  count       u16  items (leaf) or children (internal node)
///    40  reserved    u64  zero
///
/// A leaf (btrfs's layout): `count` item headers of 21 bytes from byte 48 (key 17, value
/// offset u16, value length u16), keys strictly increasing; the values packed from the
/// end of the block backwards in item order: value 0 ends at byte 4096, value i ends
/// where value i-1 starts. The bytes between the last item header and the last value are
/// zero when written and otherwise ignored (the checksum covers them).
///
/// An internal node: `count` entries of 37 bytes from byte 48 (key 17, child block u64,
/// child generation u64, child crc u32: the child's checksum field), keys strictly
/// increasing. The parent's record of the child's generation and checksum catches a
/// lost or misdirected write of the child before its bytes are trusted. Every key in child i's subtree lies
/// in [key i, key i+1); key 0 is the lower bound the parent gives the node (the lowest
/// key, `TreeKey.minimum`, on the leftmost path).
public enum TreeNode {
    public static let size = 4096
    public static let headerSize = 48
    public static let magic: UInt32 = 0x4E54_464F  // "OFTN" little-endian
    public static let leafItemHeaderSize = TreeKey.encodedSize + 4
    public static let internalEntrySize = TreeKey.encodedSize + 20
    /// Bytes a leaf has for item headers and values.
    public static let leafSpace = size - headerSize
    /// Item headers alone fill a leaf at this count (all values empty).
    public static let maximumLeafItems = leafSpace / leafItemHeaderSize
    public static let maximumChildren = (size - headerSize) / internalEntrySize
    /// The largest value an item may hold. Two items of this size take 3,842 of a leaf's
    /// 4,048 bytes, and any full leaf plus one more item splits into two leaves that fit
    /// (each side is at most two items' worth once the other holds all it can), which a
    /// value up to 2,003 bytes would still allow; the margin is kept for header growth.
    /// Larger values are the caller's business: the format keeps them in the tree as
    /// several items (xattr chunks, symlink-target parts; docs/FORMAT.md, "Version 2 (in
    /// progress): items").
    public static let maximumValueBytes = 1_900
    /// The deepest a tree may be: 8 levels hold far more than an image can (7 internal
    /// levels of full nodes address 109^7 leaves). A deeper level in a node means damage.
    public static let maximumLevel: UInt8 = 7

    // Header field offsets.
    static let crcOffset = 4
    static let imageOffset = 8
    static let generationOffset = 16
    static let blockOffset = 24
    static let treeOffset = 32
    static let levelOffset = 36
    static let countOffset = 38

    /// Writes a header with a zero checksum (see `seal`).
    static func writeHeader(_ page: UnsafeMutableRawPointer, imageID: UInt64, treeID: UInt32,
                            level: UInt8, count: Int, generation: UInt64, block: UInt64) {
        page.initializeMemory(as: UInt8.self, repeating: 0, count: headerSize)
        page.storeBytes(of: magic.littleEndian, as: UInt32.self)
        page.storeBytes(of: imageID.littleEndian, toByteOffset: imageOffset, as: UInt64.self)
        page.storeBytes(of: generation.littleEndian, toByteOffset: generationOffset, as: UInt64.self)
        page.storeBytes(of: block.littleEndian, toByteOffset: blockOffset, as: UInt64.self)
        page.storeBytes(of: treeID.littleEndian, toByteOffset: treeOffset, as: UInt32.self)
        page.storeBytes(of: level, toByteOffset: levelOffset, as: UInt8.self)
        page.storeBytes(of: UInt16(count).littleEndian, toByteOffset: countOffset, as: UInt16.self)
    }

    static func setCount(_ page: UnsafeMutableRawPointer, _ count: Int) {
        precondition(count >= 0 && count <= maximumLeafItems)
        page.storeBytes(of: UInt16(count).littleEndian, toByteOffset: countOffset, as: UInt16.self)
    }

    static func setGeneration(_ page: UnsafeMutableRawPointer, _ generation: UInt64) {
        page.storeBytes(of: generation.littleEndian, toByteOffset: generationOffset, as: UInt64.self)
    }

    static func setBlock(_ page: UnsafeMutableRawPointer, _ block: UInt64) {
        page.storeBytes(of: block.littleEndian, toByteOffset: blockOffset, as: UInt64.self)
    }

    /// Fills in the checksum over the whole node (the field itself counted as zero).
    static func seal(_ page: UnsafeMutableRawPointer) {
        page.storeBytes(of: UInt32(0), toByteOffset: crcOffset, as: UInt32.self)
        let crc = Checksum.crc32c(UnsafeRawBufferPointer(start: page, count: size))
        page.storeBytes(of: crc.littleEndian, toByteOffset: crcOffset, as: UInt32.self)
    }

    /// Bytes an item with a value of `valueBytes` takes in a leaf.
    @inline(__always)
    static func leafBytes(valueBytes: Int) -> Int { leafItemHeaderSize + valueBytes }
}

/// A read-only view of a node's bytes, decoded in place (no copy, no allocation). Only
/// for bytes that passed `TreeNode.validate`, or a node the tree built itself: the
/// accessors trust the counts and offsets.
struct TreeNodeView {
    let base: UnsafeRawPointer

    @inline(__always) init(_ base: UnsafeRawPointer) { self.base = base }

    var level: UInt8 { base.load(fromByteOffset: TreeNode.levelOffset, as: UInt8.self) }
    var isLeaf: Bool { level == 0 }
    var count: Int { Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: TreeNode.countOffset, as: UInt16.self))) }
    var generation: UInt64 { field(TreeNode.generationOffset) }
    var block: UInt64 { field(TreeNode.blockOffset) }
    var imageID: UInt64 { field(TreeNode.imageOffset) }
    var treeID: UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: TreeNode.treeOffset, as: UInt32.self)) }
    /// The checksum field (meaningful once the node is sealed).
    var checksum: UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: TreeNode.crcOffset, as: UInt32.self)) }

    @inline(__always)
    private func field(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// Where entry `i`'s key starts (leaf item header or internal entry).
    @inline(__always)
    func entryOffset(_ i: Int) -> Int {
        TreeNode.headerSize + i * (isLeaf ? TreeNode.leafItemHeaderSize : TreeNode.internalEntrySize)
    }

    @inline(__always)
    func key(_ i: Int) -> TreeKey { TreeKey(decodingAt: base + entryOffset(i)) }

    // Leaf items.

    @inline(__always)
    func valueOffset(_ i: Int) -> Int {
        Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: entryOffset(i) + TreeKey.encodedSize, as: UInt16.self)))
    }

    @inline(__always)
    func valueLength(_ i: Int) -> Int {
        Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: entryOffset(i) + TreeKey.encodedSize + 2, as: UInt16.self)))
    }

    @inline(__always)
    func value(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + valueOffset(i), count: valueLength(i))
    }

    /// Bytes item `i` takes (header and value).
    func itemBytes(_ i: Int) -> Int { TreeNode.leafBytes(valueBytes: valueLength(i)) }

    /// Bytes the items take in all: header and values (leaf), or entries (internal).
    var usedBytes: Int {
        if !isLeaf { return count * TreeNode.internalEntrySize }
        return count == 0 ? 0 : count * TreeNode.leafItemHeaderSize + (TreeNode.size - valueOffset(count - 1))
    }

    // Internal entries.

    @inline(__always)
    func childBlock(_ i: Int) -> UInt64 {
        UInt64(littleEndian: base.loadUnaligned(fromByteOffset: entryOffset(i) + TreeKey.encodedSize, as: UInt64.self))
    }

    @inline(__always)
    func childGeneration(_ i: Int) -> UInt64 {
        UInt64(littleEndian: base.loadUnaligned(fromByteOffset: entryOffset(i) + TreeKey.encodedSize + 8, as: UInt64.self))
    }

    @inline(__always)
    func childChecksum(_ i: Int) -> UInt32 {
        UInt32(littleEndian: base.loadUnaligned(fromByteOffset: entryOffset(i) + TreeKey.encodedSize + 16, as: UInt32.self))
    }

    // Search.

    /// The first index whose key is >= `key` (`count` when there is none), and whether
    /// that key equals `key`.
    @inline(__always)
    func search(_ key: TreeKey) -> (index: Int, found: Bool) {
        var low = 0, high = count
        while low < high {
            let middle = (low + high) >> 1
            if self.key(middle) < key { low = middle + 1 } else { high = middle }
        }
        return (low, low < count && self.key(low) == key)
    }

    /// The child whose key range holds `key`: the last entry whose key is <= `key` (0
    /// when `key` is below every entry, which only a damaged bound could cause).
    @inline(__always)
    func childIndex(for key: TreeKey) -> Int {
        let (index, found) = search(key)
        return found ? index : max(0, index - 1)
    }
}
