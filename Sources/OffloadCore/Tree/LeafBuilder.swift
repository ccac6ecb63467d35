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
