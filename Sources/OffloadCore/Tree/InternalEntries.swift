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
