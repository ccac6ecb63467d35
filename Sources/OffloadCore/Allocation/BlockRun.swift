/// One item of the block tree: `blocks` each with `count` references, used as `use`.
public struct BlockRun: Hashable, Sendable, CustomStringConvertible {
    public enum Use: Hashable, Sendable {
        case data
        /// Segments of the journal: named by the commit slot's journal chain, by no
        /// extent (so repair and fsck can tell them from file data).
        case journal
        /// Nodes of the tree `tree`. Not their level: a commit writes nodes of every level
        /// side by side, and runs of one tree's nodes then coalesce; the node header says
        /// its level.
        case node(tree: UInt32)
    }

    public var blocks: Range<UInt64>
    public var count: UInt32
    public var use: Use

    public init(blocks: Range<UInt64>, count: UInt32, use: Use) {
        self.blocks = blocks
        self.count = count
        self.use = use
    }

    public var description: String { "\(blocks) x\(count) \(use)" }

    var key: TreeKey { TreeKey(object: blocks.lowerBound, kind: BlockReferenceTree.runKind, offset: 0) }

    /// True when `next` starts where this run ends with the same count and use.
    func continues(into next: BlockRun) -> Bool {
        blocks.upperBound == next.blocks.lowerBound && count == next.count && use == next.use
    }

    /// Value: length u64 (blocks), count u32, use u8 (1 data, 2 node, 3 journal), tree u32
    /// (nodes; 0 otherwise).
    static let encodedSize = 17

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: Self.encodedSize)
        w.u64(UInt64(blocks.count)); w.u32(count)
        switch use {
        case .data: w.u8(1); w.u32(0)
        case .node(let tree): w.u8(2); w.u32(tree)
        case .journal: w.u8(3); w.u32(0)
        }
        return w.bytes
    }

    static func decode(first: UInt64, _ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> BlockRun {
        guard bytes.count == encodedSize else {
            throw ByteReader.Malformed(description: "a block run of \(bytes.count) bytes")
        }
        var r = ByteReader(bytes)
        let length = try r.u64(), count = try r.u32(), use = try r.u8(), tree = try r.u32()
        guard length >= 1, length <= BlockReferenceTree.pendingFreeBase - first, count >= 1 else {
            throw ByteReader.Malformed(description: "a run of \(length) blocks from \(first) with \(count) references")
        }
        let blocks = first..<(first + length)
        switch (use, tree) {
        case (1, 0): return BlockRun(blocks: blocks, count: count, use: .data)
        case (2, _): return BlockRun(blocks: blocks, count: count, use: .node(tree: tree))
        case (3, 0): return BlockRun(blocks: blocks, count: count, use: .journal)
        default: throw ByteReader.Malformed(description: "a run used as \(use) by tree \(tree)")
        }
    }
}
