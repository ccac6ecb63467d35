import OffloadCore

/// Format 2's checksums (docs/FORMAT.md, "Version 2: commit slots", "Version 2: tree
/// nodes"): every tree node a slot's roots reach, bottom up (each node's own CRC, then
/// the copy its parent keeps in the child's entry, then the root pointer's copy in the
/// slot), the frames of the journal chain each slot names, and last the slots' two
/// CRCs. As for format 1, only checksums change, the walk follows the rules loosely
/// (any block with a node's magic inside the image is fixed) and is bounded by the
/// image: each block is visited once, and never deeper than a tree can be.
extension ChecksumRepair {
    static let slotHeaderChecksumOffset = 24
    static let slotHeaderBytes = 128
    static let slotBodyChecksumOffset = 128
    static let slotBodyBytes = 256
    /// Where the two root pointers (24 bytes each) start, and their checksum inside one.
    static let rootPointerOffsets = [136, 160]
    static let rootChecksumOffset = 20
    static let journalHeadOffset = 184

    static func applyFormatTwo(to image: any ImageStorage) {
        var visited = Set<UInt64>()
        for slot: UInt64 in 0..<2 {
            var bytes = image.readBytes(at: slot * block, count: slotBodyBytes)
            guard bytes.count == slotBodyBytes, Array(bytes[0..<16]) == Superblock.magic,
                  u32(bytes, 16) == CommitSlot.version else { continue }
            for pointer in rootPointerOffsets {
                let root = u64(bytes, pointer)
                guard root != 0, let checksum = fixNode(root, depth: 0, visited: &visited, in: image) else { continue }
                put(checksum, into: &bytes, at: pointer + rootChecksumOffset)
            }
            fixChain(from: LogSegment(start: u64(bytes, journalHeadOffset), length: u64(bytes, journalHeadOffset + 8)),
                     in: image)
            put(0, into: &bytes, at: slotHeaderChecksumOffset)
            put(0, into: &bytes, at: slotBodyChecksumOffset)
            put(Checksum.crc32c(Array(bytes[0..<slotHeaderBytes])), into: &bytes, at: slotHeaderChecksumOffset)
            var body = bytes
            put(0, into: &body, at: slotHeaderChecksumOffset)
            put(Checksum.crc32c(body), into: &bytes, at: slotBodyChecksumOffset)
            write(bytes, to: image, at: slot * block)
        }
    }

    /// Fixes the node at `number` and, first, the children it names; returns its CRC, or
    /// nil when the block holds no node (outside the image, or no node's magic).
    private static func fixNode(_ number: UInt64, depth: Int, visited: inout Set<UInt64>,
                                in image: any ImageStorage) -> UInt32? {
        guard number >= 2, number < image.length / block else { return nil }
        var node = image.readBytes(at: number * block, count: TreeNode.size)
        guard node.count == TreeNode.size, u32(node, 0) == TreeNode.magic else { return nil }
        guard depth <= Int(TreeNode.maximumLevel), visited.insert(number).inserted else { return u32(node, 4) }
        if node[36] > 0 {
            let children = min(Int(node[38]) | Int(node[39]) << 8, TreeNode.maximumChildren)
            for i in 0..<children {
                let entry = TreeNode.headerSize + i * TreeNode.internalEntrySize + TreeKey.encodedSize
                if let checksum = fixNode(u64(node, entry), depth: depth + 1, visited: &visited, in: image) {
                    put(checksum, into: &node, at: entry + 16)
                }
            }
        }
        put(0, into: &node, at: 4)
        let checksum = Checksum.crc32c(node)
        put(checksum, into: &node, at: 4)
        write(node, to: image, at: number * block)
        return checksum
    }

    private static func put(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }

    private static func write(_ bytes: [UInt8], to image: any ImageStorage, at offset: UInt64) {
        // Inside the file by construction: a failure here is the harness's bug.
        try! bytes.withBytes { (buffer) throws(FSError) in try image.write(buffer, at: offset) }
    }
}
