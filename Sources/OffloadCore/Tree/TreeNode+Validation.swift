/// What a node read from the image must be, as the reader knows it before reading: the
/// image and tree, the block it was read from, and the level, generation and checksum
/// its parent (or the root pointer) recorded.
public struct TreeNodeExpectation: Sendable, Equatable {
    public var imageID: UInt64
    public var treeID: UInt32
    public var block: UInt64
    public var level: UInt8
    public var generation: UInt64
    public var checksum: UInt32

    public init(imageID: UInt64, treeID: UInt32, block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32) {
        self.imageID = imageID
        self.treeID = treeID
        self.block = block
        self.level = level
        self.generation = generation
        self.checksum = checksum
    }
}

extension TreeNode {
    /// Checks every byte of a node read from the image (`page`: `TreeNode.size` bytes)
    /// against the format and against `expected`, and throws `.damagedImage` naming the
    /// block and the first rule broken. Bytes that pass can be read with `TreeNodeView`
    /// without further checks. Never traps, whatever the bytes.
    ///
    /// The generation must equal the one the parent recorded (btrfs's "parent transid"
    /// check): a node is written once, by the commit that allocated its block, so an
    /// older generation there means the write was lost and the block holds a stale node,
    /// a newer one that the block was reused while still referenced. The checksum must
    /// equal the parent's record too, which also catches a stale node of the same
    /// generation.
    public static func validate(_ page: UnsafeRawBufferPointer, _ expected: TreeNodeExpectation) throws(FSError) {
        guard page.count == size, let base = page.baseAddress else {
            throw damaged(expected, "it is \(page.count) bytes, not \(size)")
        }
        let view = TreeNodeView(base)
        let storedMagic = UInt32(littleEndian: base.loadUnaligned(as: UInt32.self))
        guard storedMagic == magic else {
            throw damaged(expected, "no node magic (found \(hex(storedMagic)))")
        }
        let storedCRC = UInt32(littleEndian: base.loadUnaligned(fromByteOffset: crcOffset, as: UInt32.self))
        var crc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: page[0..<crcOffset]))
        crc = zeroChecksum(continuing: crc)
        crc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: page[(crcOffset + 4)...]), continuing: crc)
        guard crc == storedCRC else {
            throw damaged(expected, "checksum mismatch (stored \(hex(storedCRC)), computed \(hex(crc)))")
        }
        guard view.imageID == expected.imageID else {
            throw damaged(expected, "it belongs to image \(hex(view.imageID)), not \(hex(expected.imageID))")
        }
        guard view.treeID == expected.treeID else {
            throw damaged(expected, "it belongs to tree \(view.treeID)")
        }
        guard view.block == expected.block else {
            throw damaged(expected, "it was written for block \(view.block) (a misdirected write)")
        }
        guard view.level <= maximumLevel, view.level == expected.level else {
            throw damaged(expected, "its level is \(view.level), \(expected.level) expected")
        }
        guard view.generation == expected.generation else {
            throw damaged(expected, "its generation is \(view.generation), the parent recorded \(expected.generation) (a lost or misplaced write)")
        }
        guard storedCRC == expected.checksum else {
            throw damaged(expected, "its checksum is \(hex(storedCRC)), the parent recorded \(hex(expected.checksum)) (a lost or misplaced write)")
        }
        guard base.load(fromByteOffset: levelOffset + 1, as: UInt8.self) == 0,
              base.loadUnaligned(fromByteOffset: 40, as: UInt64.self) == 0 else {
            throw damaged(expected, "reserved header bytes are not zero")
        }
        try validateItems(view, expected, checkingGenerations: true)
    }

    /// The item rules alone (counts, offsets, key order, child pointers), and with
    /// `checkingGenerations` no child newer than the node. Nodes built in memory are
    /// checked without that rule: they have no generation until the commit stamps them
    /// (a split's new half says 0, a copy the generation it was copied from), while
    /// their children may be committed nodes of any generation.
    static func validateItems(_ view: TreeNodeView, _ expected: TreeNodeExpectation,
                              checkingGenerations: Bool) throws(FSError) {
        if view.isLeaf {
            try validateLeaf(view, expected)
        } else {
            try validateInternal(view, expected, checkingGenerations: checkingGenerations)
        }
    }

    /// CRC-32C continued over the four zero bytes that stand for the checksum field.
    private static func zeroChecksum(continuing crc: UInt32) -> UInt32 {
        withUnsafeBytes(of: UInt32(0)) { Checksum.crc32c($0, continuing: crc) }
    }

    private static func validateLeaf(_ view: TreeNodeView, _ expected: TreeNodeExpectation) throws(FSError) {
        let count = view.count
        guard count <= maximumLeafItems else {
            throw damaged(expected, "\(count) items do not fit in a leaf")
        }
        let headersEnd = headerSize + count * leafItemHeaderSize
        var valuesStart = size
        for i in 0..<count {
            let offset = view.valueOffset(i), length = view.valueLength(i)
            guard length <= maximumValueBytes else {
                throw damaged(expected, "item \(i) has a value of \(length) bytes, more than \(maximumValueBytes)")
            }
            // Packed from the end backwards in item order: value i ends where value
            // i-1 starts, so no two values overlap and none reaches the headers.
            guard offset + length == valuesStart, offset >= headersEnd else {
                throw damaged(expected, "item \(i)'s value at \(offset) (\(length) bytes) is not where the packed layout puts it (ending at \(valuesStart), after the headers at \(headersEnd))")
            }
            valuesStart = offset
            if i > 0 {
                guard view.key(i - 1) < view.key(i) else {
                    throw damaged(expected, "key \(i) \(view.key(i)) does not follow key \(i - 1) \(view.key(i - 1))")
                }
            }
        }
    }

    private static func validateInternal(_ view: TreeNodeView, _ expected: TreeNodeExpectation,
                                         checkingGenerations: Bool) throws(FSError) {
        let count = view.count
        guard count >= 1, count <= maximumChildren else {
            throw damaged(expected, "an internal node with \(count) children (1 to \(maximumChildren) allowed)")
        }
        for i in 0..<count {
            if i > 0 {
                guard view.key(i - 1) < view.key(i) else {
                    throw damaged(expected, "key \(i) \(view.key(i)) does not follow key \(i - 1) \(view.key(i - 1))")
                }
            }
            let child = view.childBlock(i)
            guard child != expected.block else {
                throw damaged(expected, "child \(i) points back at the node itself")
            }
            guard !checkingGenerations || view.childGeneration(i) <= view.generation else {
                throw damaged(expected, "child \(i) has generation \(view.childGeneration(i)), newer than the node's \(view.generation)")
            }
        }
    }

    static func damaged(_ expected: TreeNodeExpectation, _ what: String) -> FSError {
        .damagedImage("tree \(expected.treeID) node at block \(expected.block) (level \(expected.level)): \(what)")
    }

    private static func hex<T: FixedWidthInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }
}
