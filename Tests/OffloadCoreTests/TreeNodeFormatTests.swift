import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// The bytes of tree nodes (docs/FORMAT.md, "Version 2 (in progress): tree nodes"): keys,
/// headers, leaf and internal layouts, and every rule `TreeNode.validate` enforces.
final class TreeNodeFormatTests: XCTestCase {
    static let imageID: UInt64 = 0x1122_3344_5566_7788
    static let treeID: UInt32 = 7

    func testKeysOrderByObjectThenKindThenOffsetAndEncodeIn17LittleEndianBytes() {
        let key = TreeKey(object: 0x0102_0304_0506_0708, kind: 0x09, offset: 0x0A0B_0C0D_0E0F_1011)
        XCTAssertEqual(key.encoded, [0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x09,
                                     0x11, 0x10, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A])
        XCTAssertEqual(key.encoded.withUnsafeBytes { TreeKey(decoding: $0) }, key)
        XCTAssertNil([UInt8](repeating: 0, count: 16).withUnsafeBytes { TreeKey(decoding: $0) })
        XCTAssertLessThan(TreeKey(object: 1, kind: 9, offset: 9), TreeKey(object: 2, kind: 0, offset: 0))
        XCTAssertLessThan(TreeKey(object: 2, kind: 1, offset: 9), TreeKey(object: 2, kind: 2, offset: 0))
        XCTAssertLessThan(TreeKey(object: 2, kind: 2, offset: 1), TreeKey(object: 2, kind: 2, offset: 2))
        XCTAssertLessThan(TreeKey.minimum, TreeKey(object: 0, kind: 0, offset: 1))
        XCTAssertLessThan(TreeKey(object: .max, kind: .max, offset: .max - 1), TreeKey.maximum)
    }

    /// A committed one-leaf tree, its block and its bytes.
    func committedLeaf(_ items: [(TreeKey, [UInt8])], generation: UInt64 = 5)
        throws -> (pages: MemoryTreePages, root: CopyOnWriteTree.Root, bytes: [UInt8]) {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        for (key, value) in items { try tree.upsert(key, value) }
        let root = try XCTUnwrap(try tree.commit(generation: generation).root)
        return (pages, root, try XCTUnwrap(pages.bytes(of: root.block)))
    }

    func testLeafBytesAreLaidOutAsDocumented() throws {
        let a = TreeKey(object: 1, kind: 2, offset: 3), b = TreeKey(object: 1, kind: 2, offset: 4)
        let (_, root, bytes) = try committedLeaf([(b, [0xBB, 0xBB, 0xBB]), (a, [0xAA])])
        XCTAssertEqual(bytes.count, 4096)
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }
        XCTAssertEqual(Array(bytes[0..<4]), Array("OFTN".utf8))
        var zeroed = bytes
        zeroed.replaceSubrange(4..<8, with: [0, 0, 0, 0])
        XCTAssertEqual(u32(4), Checksum.crc32c(zeroed), "crc of the whole block with the field zero")
        XCTAssertEqual(u64(8), Self.imageID)
        XCTAssertEqual(u64(16), 5, "generation")
        XCTAssertEqual(u64(24), root.block)
        XCTAssertEqual(u32(32), Self.treeID)
        XCTAssertEqual(bytes[36], 0, "level")
        XCTAssertEqual(bytes[37], 0)
        XCTAssertEqual(u16(38), 2, "count")
        XCTAssertEqual(u64(40), 0)
        // Item headers from 48, keys in order; values packed from the end in item order.
        XCTAssertEqual(Array(bytes[48..<65]), a.encoded)
        XCTAssertEqual(u16(65), 4095)
        XCTAssertEqual(u16(67), 1)
        XCTAssertEqual(Array(bytes[69..<86]), b.encoded)
        XCTAssertEqual(u16(86), 4092)
        XCTAssertEqual(u16(88), 3)
        XCTAssertEqual(Array(bytes[4092..<4096]), [0xBB, 0xBB, 0xBB, 0xAA])
        XCTAssertTrue(bytes[90..<4092].allSatisfy { $0 == 0 }, "the free gap is zero")
    }

    func testInternalNodeBytesAreLaidOutAsDocumented() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        // Enough 1,000-byte values for a few leaves under one internal root.
        for i in 0..<12 { try tree.upsert(TreeKey(object: UInt64(i), kind: 1, offset: 0), [UInt8](repeating: UInt8(i), count: 1000)) }
        let root = try XCTUnwrap(try tree.commit(generation: 9).root)
        XCTAssertEqual(root.level, 1)
        let bytes = try XCTUnwrap(pages.bytes(of: root.block))
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }
        XCTAssertEqual(bytes[36], 1, "level")
        let count = Int(bytes[38]) | Int(bytes[39]) << 8
        XCTAssertGreaterThanOrEqual(count, 3)
        XCTAssertEqual(Array(bytes[48..<65]), TreeKey.minimum.encoded, "entry 0's key is the lowest key")
        for i in 0..<count {
            let entry = 48 + 37 * i
            let child = u64(entry + 17)
            XCTAssertEqual(u64(entry + 25), 9, "child generation")
            let childBytes = try XCTUnwrap(pages.bytes(of: child))
            XCTAssertEqual(Array(bytes[entry + 33..<entry + 37]), Array(childBytes[4..<8]), "child crc")
            XCTAssertEqual(childBytes[36], 0, "children are leaves")
            if i > 0 { XCTAssertEqual(Array(bytes[entry..<entry + 17]), Array(childBytes[48..<65]), "separator = the child's first key") }
        }
        XCTAssertTrue(bytes[(48 + 37 * count)...].allSatisfy { $0 == 0 })
        XCTAssertEqual(UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24, root.checksum)
    }

    // MARK: - Refusals

    func expectation(_ root: CopyOnWriteTree.Root) -> TreeNodeExpectation {
        TreeNodeExpectation(imageID: Self.imageID, treeID: Self.treeID, block: root.block, level: root.level,
                            generation: root.generation, checksum: root.checksum)
    }

    /// Validates `bytes` changed by `damage`, resealed unless `reseal` is false, and
    /// expects a refusal whose message contains `message`. A resealed node is expected
    /// with its new checksum (as if its parent recorded it), so that the rule after the
    /// checksums is what refuses it, unless `recordedChecksum` says to keep the old one.
    func assertRefused(_ bytes: [UInt8], _ expected: TreeNodeExpectation, reseal: Bool = true,
                       recordedChecksum: Bool = false, _ message: String,
                       file: StaticString = #filePath, line: UInt = #line, damage: (inout [UInt8]) -> Void) {
        var damaged = bytes
        var expected = expected
        damage(&damaged)
        if reseal {
            damaged.withUnsafeMutableBytes { TreeNode.seal($0.baseAddress!) }
            if !recordedChecksum { expected.checksum = damaged.withUnsafeBytes { TreeNodeView($0.baseAddress!).checksum } }
        }
        do {
            try damaged.withBytes { (buffer) throws(FSError) in try TreeNode.validate(buffer, expected) }
            XCTFail("accepted a node with \(message)", file: file, line: line)
        } catch {
            guard case .damagedImage(let why) = error else { return XCTFail("\(error)", file: file, line: line) }
            XCTAssertTrue(why.contains(message), "'\(why)' does not say '\(message)'", file: file, line: line)
            XCTAssertTrue(why.contains("block \(expected.block)"), why, file: file, line: line)
        }
    }

    func put16(_ value: Int, _ at: Int, _ bytes: inout [UInt8]) {
        bytes[at] = UInt8(value & 0xFF)
        bytes[at + 1] = UInt8(value >> 8)
    }

    func put64(_ value: UInt64, _ at: Int, _ bytes: inout [UInt8]) {
        for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    func testEveryHeaderRuleRefusesADamagedLeaf() throws {
        let items = (0..<5).map { (TreeKey(object: 1, kind: 1, offset: UInt64($0 * 10)), [UInt8](repeating: 7, count: 30)) }
        let (_, root, bytes) = try committedLeaf(items)
        let expected = expectation(root)
        XCTAssertNoThrow(try bytes.withBytes { (b) throws(FSError) in try TreeNode.validate(b, expected) })
        assertRefused(bytes, expected, "no node magic") { $0[0] ^= 1 }
        assertRefused(bytes, expected, reseal: false, "checksum mismatch") { $0[4000] ^= 0x10 }
        assertRefused(bytes, expected, reseal: false, "checksum mismatch") { $0[5] ^= 0x10 }
        assertRefused(bytes, expected, "belongs to image") { $0[8] ^= 1 }
        assertRefused(bytes, expected, "belongs to tree") { $0[32] ^= 1 }
        assertRefused(bytes, expected, "misdirected write") { $0[24] ^= 1 }
        assertRefused(bytes, expected, "its level is 1") { $0[36] = 1 }
        assertRefused(bytes, expected, "its level is 200") { $0[36] = 200 }
        assertRefused(bytes, expected, "its generation is 4") { $0[16] = 4 }
        assertRefused(bytes, expected, "its generation is 6") { $0[16] = 6 }
        // Self-consistent (resealed) but not the node the parent recorded.
        assertRefused(bytes, expected, recordedChecksum: true, "the parent recorded 0x") { $0[4000] ^= 0x10 }
        assertRefused(bytes, expected, "reserved header bytes") { $0[37] = 1 }
        assertRefused(bytes, expected, "reserved header bytes") { $0[47] = 1 }
        var wrongSize = bytes
        wrongSize.removeLast()
        assertRefused(wrongSize, expected, reseal: false, "4095 bytes") { _ in }
    }

    func testEveryLeafRuleRefusesADamagedLeaf() throws {
        let items = (0..<5).map { (TreeKey(object: 1, kind: 1, offset: UInt64($0 * 10)), [UInt8](repeating: 7, count: 30)) }
        let (_, root, bytes) = try committedLeaf(items)
        let expected = expectation(root)
        let header = { (i: Int) in 48 + 21 * i }
        assertRefused(bytes, expected, "items do not fit") { self.put16(193, 38, &$0) }
        // A count above the real one: item 5's header is zeros (offset 0: in the headers).
        assertRefused(bytes, expected, "item 5's value") { self.put16(6, 38, &$0) }
        assertRefused(bytes, expected, "more than 1900") { self.put16(1901, header(0) + 19, &$0) }
        assertRefused(bytes, expected, "not where the packed layout") { self.put16(4000, header(0) + 17, &$0) }
        assertRefused(bytes, expected, "not where the packed layout") { self.put16(31, header(2) + 19, &$0) }
        // A value packed in order but reaching back into the item headers.
        let full = (0..<3).map { (TreeKey(object: 2, kind: 0, offset: UInt64($0)), [UInt8](repeating: 9, count: 1300)) }
        let (_, fullRoot, fullBytes) = try committedLeaf(full)
        XCTAssertEqual(Int(fullBytes[header(2) + 17]) | Int(fullBytes[header(2) + 18]) << 8, 196)
        assertRefused(fullBytes, expectation(fullRoot), "not where the packed layout") { b in
            self.put16(96, header(2) + 17, &b)
            self.put16(1400, header(2) + 19, &b)
        }
        assertRefused(bytes, expected, "does not follow key 1") { $0[header(2) + 9] = 10 }
        assertRefused(bytes, expected, "does not follow key 2") { $0[header(3) + 9] = 20 }
    }

    func testEveryInternalRuleRefusesADamagedNode() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        for i in 0..<12 { try tree.upsert(TreeKey(object: UInt64(i), kind: 1, offset: 0), [UInt8](repeating: 1, count: 1000)) }
        let root = try XCTUnwrap(try tree.commit(generation: 3).root)
        let bytes = try XCTUnwrap(pages.bytes(of: root.block))
        let expected = expectation(root)
        XCTAssertNoThrow(try bytes.withBytes { (b) throws(FSError) in try TreeNode.validate(b, expected) })
        assertRefused(bytes, expected, "with 0 children") { self.put16(0, 38, &$0) }
        assertRefused(bytes, expected, "with 110 children") { self.put16(110, 38, &$0) }
        assertRefused(bytes, expected, "does not follow key 0") { $0.replaceSubrange(85..<102, with: TreeKey.minimum.encoded) }
        assertRefused(bytes, expected, "points back at the node") { self.put64(root.block, 48 + 37 + 17, &$0) }
        assertRefused(bytes, expected, "newer than the node's") { self.put64(4, 48 + 25, &$0) }
        // A child rewritten in place, self-consistent and of the same generation: the
        // parent's recorded checksum refuses it on the way down.
        let child = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[48 + 37 + 17 + $1]) << (8 * UInt64($1)) }
        var childBytes = try XCTUnwrap(pages.bytes(of: child))
        childBytes[4095] ^= 1
        childBytes.withUnsafeMutableBytes { TreeNode.seal($0.baseAddress!) }
        pages.overwrite(child, with: childBytes)
        let reopened = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: root)
        let firstKey = try XCTUnwrap(childBytes.withUnsafeBytes { TreeKey(decoding: UnsafeRawBufferPointer(rebasing: $0[48..<65])) })
        XCTAssertThrowsError(try reopened.lookup(firstKey)) {
            guard case FSError.damagedImage(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("block \(child)") && why.contains("the parent recorded"), why)
        }
    }

    func testARootRecordedWithTheWrongGenerationLevelOrChecksumIsRefusedWhenOpened() throws {
        let (pages, root, _) = try committedLeaf([(TreeKey(object: 1, kind: 1, offset: 1), [1])])
        for wrong in [CopyOnWriteTree.Root(block: root.block, generation: 4, level: 0, checksum: root.checksum),
                      CopyOnWriteTree.Root(block: root.block, generation: 5, level: 1, checksum: root.checksum),
                      CopyOnWriteTree.Root(block: root.block, generation: 5, level: 9, checksum: root.checksum),
                      CopyOnWriteTree.Root(block: root.block, generation: 5, level: 0, checksum: root.checksum ^ 1)] {
            XCTAssertThrowsError(try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: wrong)) {
                guard case FSError.damagedImage = $0 else { return XCTFail("\($0)") }
            }
        }
        XCTAssertThrowsError(try CopyOnWriteTree(pages: pages, imageID: Self.imageID + 1, treeID: Self.treeID, root: root))
        XCTAssertThrowsError(try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID + 1, root: root))
    }

    func testValuesUpToTheMaximumAreStoredAndLargerOnesRefused() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        let big = [UInt8](repeating: 0xEE, count: TreeNode.maximumValueBytes)
        for i in 0..<7 { try tree.upsert(TreeKey(object: 3, kind: 0, offset: UInt64(i)), big) }
        XCTAssertThrowsError(try tree.upsert(TreeKey(object: 4, kind: 0, offset: 0), big + [0])) {
            guard case FSError.invalidArgument(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("1901 bytes"), why)
        }
        XCTAssertEqual(try tree.lookup(TreeKey(object: 3, kind: 0, offset: 6)), big)
        XCTAssertNil(try tree.lookup(TreeKey(object: 4, kind: 0, offset: 0)))
        XCTAssertEqual(try tree.check().items, 7)
    }

    /// Random damage to every node of a committed tree. Half the rounds reseal the node
    /// and record its new checksum in its parent (resealed too) up to the root pointer,
    /// so that the checksums pass and the structural rules are what stands between the
    /// bytes and the readers; the other half leave the checksum wrong. Opening, looking
    /// up, scanning and checking never trap (they answer or throw); unsealed damage is
    /// always refused; sealed damage is refused by the rules after the checksums, or
    /// accepted (values, free bytes) and checked whole.
    func testRandomlyDamagedNodesNeverTrap() throws {
        var rng = SplitMix64(seed: 11)
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        for i in 0..<600 {
            try tree.upsert(TreeKey(object: rng.next() % 64, kind: UInt8(i % 3), offset: rng.next() % 1000),
                            randomBytes(Int(rng.next() % 120), using: &rng))
        }
        let root = try XCTUnwrap(try tree.commit(generation: 2).root)
        XCTAssertEqual(root.level, 1)
        var blocks: [UInt64] = []
        try tree.forEachNodeBlock { blocks.append($0) }
        XCTAssertEqual(blocks[0], root.block)
        let rootBytes = try XCTUnwrap(pages.bytes(of: root.block))
        func crc(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { TreeNodeView($0.baseAddress!).checksum } }
        var refused = 0, accepted = 0, unsealedAccepted = 0, structurallyRefused = 0, sealedAccepted = 0
        for round in 0..<3000 {
            let block = blocks[Int(rng.next() % UInt64(blocks.count))]
            let original = try XCTUnwrap(pages.bytes(of: block))
            var damaged = original
            for _ in 0..<(1 + round % 4) {
                // Mostly the header and item area, where the structure is.
                let at = rng.next() % 4 == 0 ? Int(rng.next() % 4096) : Int(rng.next() % 400)
                damaged[at] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
            }
            let sealed = round % 2 == 0
            var openAt = root
            if sealed { damaged.withUnsafeMutableBytes { TreeNode.seal($0.baseAddress!) } }
            pages.overwrite(block, with: damaged)
            if sealed && block != root.block {
                // The parent records the damaged child's new checksum.
                var parent = rootBytes
                parent.withUnsafeMutableBytes { p in
                    let view = TreeNodeView(p.baseAddress!)
                    for i in 0..<view.count where view.childBlock(i) == block {
                        InternalEntries.setChildChecksum(p.baseAddress!, at: i, crc(damaged))
                    }
                    TreeNode.seal(p.baseAddress!)
                }
                pages.overwrite(root.block, with: parent)
                openAt.checksum = crc(parent)
            } else if sealed {
                openAt.checksum = crc(damaged)
            }
            do {
                let reopened = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: openAt)
                _ = try reopened.lookup(TreeKey(object: rng.next() % 64, kind: 1, offset: rng.next() % 1000))
                _ = try reopened.floor(TreeKey(object: rng.next() % 64, kind: 1, offset: rng.next() % 1000))
                try reopened.scan(from: .minimum, through: .maximum) { _, _ in true }
                _ = try reopened.check()
                accepted += 1
                if sealed { sealedAccepted += 1 } else { unsealedAccepted += 1 }
            } catch {
                refused += 1
                if sealed, case .damagedImage(let why) = error, !why.contains("checksum") { structurallyRefused += 1 }
            }
            pages.overwrite(block, with: original)
            pages.overwrite(root.block, with: rootBytes)
        }
        print("random damage: \(refused) refused (\(structurallyRefused) resealed ones by a structural rule), \(accepted) accepted (\(sealedAccepted) resealed)")
        XCTAssertEqual(unsealedAccepted, 0, "a node whose checksum does not match is always refused")
        XCTAssertGreaterThan(refused, 1500, "\(accepted) accepted")
        XCTAssertGreaterThan(structurallyRefused, 500, "resealed damage must reach the rules after the checksums")
        XCTAssertGreaterThan(sealedAccepted, 50, "damage to values and free bytes passes every rule and the whole-tree check")
        XCTAssertEqual(try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: root).check().items,
                       try tree.check().items)
    }
}
