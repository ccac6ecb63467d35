/// One node's 4096 bytes in memory: a node being changed (dirty until a commit writes
/// it), or a buffer that reads land in. Owns its memory; not shared between threads.
final class TreePage {
    let bytes: UnsafeMutableRawPointer

    /// `byteCount` is more than a node only for the scratch page where an internal node
    /// is laid out with one entry too many before it splits.
    init(byteCount: Int = TreeNode.size) {
        precondition(byteCount >= TreeNode.size)
        bytes = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    }

    deinit { bytes.deallocate() }

    var view: TreeNodeView { TreeNodeView(UnsafeRawPointer(bytes)) }
    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: bytes, count: TreeNode.size) }
    var mutableBuffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: bytes, count: TreeNode.size) }

    func copy(from other: TreePage) { bytes.copyMemory(from: other.bytes, byteCount: TreeNode.size) }
}

/// Builds a leaf item by item into a page whose header is already written: item headers
/// grow from byte 48, values from the end backwards (the packed layout `validate` wants).
struct LeafBuilder {
    let page: UnsafeMutableRawPointer
    private(set) var count = 0
    private var valuesStart = TreeNode.size

    init(_ page: UnsafeMutableRawPointer) { self.page = page }

    /// Bytes still free for item headers and values.
    var freeBytes: Int { valuesStart - TreeNode.headerSize - count * TreeNode.leafItemHeaderSize }

    mutating func append(_ key: TreeKey, _ value: UnsafeRawBufferPointer) {
        precondition(TreeNode.leafBytes(valueBytes: value.count) <= freeBytes && value.count <= TreeNode.maximumValueBytes,
                     "leaf overfilled")
        valuesStart -= value.count
        if let source = value.baseAddress, !value.isEmpty {
            (page + valuesStart).copyMemory(from: source, byteCount: value.count)
        }
        let header = page + TreeNode.headerSize + count * TreeNode.leafItemHeaderSize
        key.encode(at: header)
        header.storeBytes(of: UInt16(valuesStart).littleEndian, toByteOffset: TreeKey.encodedSize, as: UInt16.self)
        header.storeBytes(of: UInt16(value.count).littleEndian, toByteOffset: TreeKey.encodedSize + 2, as: UInt16.self)
        count += 1
    }

    /// Sets the item count and zeroes the free gap (so a node's bytes depend only on its items).
    func finish() {
        let headersEnd = TreeNode.headerSize + count * TreeNode.leafItemHeaderSize
        (page + headersEnd).initializeMemory(as: UInt8.self, repeating: 0, count: valuesStart - headersEnd)
        TreeNode.setCount(page, count)
    }
}

/// Internal entries: fixed 37-byte records, edited in place.
enum InternalEntries {
    @inline(__always)
    static func offset(_ i: Int) -> Int { TreeNode.headerSize + i * TreeNode.internalEntrySize }

    static func write(_ page: UnsafeMutableRawPointer, at i: Int, key: TreeKey, child: UInt64, generation: UInt64,
                      checksum: UInt32) {
        let entry = page + offset(i)
        key.encode(at: entry)
        entry.storeBytes(of: child.littleEndian, toByteOffset: TreeKey.encodedSize, as: UInt64.self)
        entry.storeBytes(of: generation.littleEndian, toByteOffset: TreeKey.encodedSize + 8, as: UInt64.self)
        entry.storeBytes(of: checksum.littleEndian, toByteOffset: TreeKey.encodedSize + 16, as: UInt32.self)
    }

    static func setKey(_ page: UnsafeMutableRawPointer, at i: Int, _ key: TreeKey) { key.encode(at: page + offset(i)) }

    static func setChild(_ page: UnsafeMutableRawPointer, at i: Int, _ child: UInt64) {
        page.storeBytes(of: child.littleEndian, toByteOffset: offset(i) + TreeKey.encodedSize, as: UInt64.self)
    }

    static func setChildGeneration(_ page: UnsafeMutableRawPointer, at i: Int, _ generation: UInt64) {
        page.storeBytes(of: generation.littleEndian, toByteOffset: offset(i) + TreeKey.encodedSize + 8, as: UInt64.self)
    }

    static func setChildChecksum(_ page: UnsafeMutableRawPointer, at i: Int, _ checksum: UInt32) {
        page.storeBytes(of: checksum.littleEndian, toByteOffset: offset(i) + TreeKey.encodedSize + 16, as: UInt32.self)
    }

    /// Inserts a room for one entry at `i` (entries from `i` move up one); the count grows.
    static func openGap(_ page: UnsafeMutableRawPointer, at i: Int) {
        let count = TreeNodeView(page).count
        precondition(count < TreeNode.maximumChildren && i <= count)
        (page + offset(i + 1)).copyMemory(from: page + offset(i), byteCount: (count - i) * TreeNode.internalEntrySize)
        TreeNode.setCount(page, count + 1)
    }

    /// Removes entry `i`; the count shrinks and the freed entry is zeroed.
    static func remove(_ page: UnsafeMutableRawPointer, at i: Int) {
        let count = TreeNodeView(page).count
        precondition(i < count)
        (page + offset(i)).copyMemory(from: page + offset(i + 1), byteCount: (count - i - 1) * TreeNode.internalEntrySize)
        (page + offset(count - 1)).initializeMemory(as: UInt8.self, repeating: 0, count: TreeNode.internalEntrySize)
        TreeNode.setCount(page, count - 1)
    }

    /// Copies `count` entries of `source` starting at `from` to `destination` at `to`.
    static func copy(from source: UnsafeRawPointer, _ from: Int, to destination: UnsafeMutableRawPointer, _ to: Int, count: Int) {
        (destination + offset(to)).copyMemory(from: source + offset(from), byteCount: count * TreeNode.internalEntrySize)
    }

    /// Zeroes the bytes after the last entry (so a node's bytes depend only on its entries).
    static func clearTail(_ page: UnsafeMutableRawPointer) {
        let end = offset(TreeNodeView(page).count)
        (page + end).initializeMemory(as: UInt8.self, repeating: 0, count: TreeNode.size - end)
    }
}
