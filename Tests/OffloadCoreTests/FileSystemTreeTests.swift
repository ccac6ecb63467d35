import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix

/// `FileSystemTree`'s edges the random model test does not aim at: hash items full of
/// colliding names, the largest xattr value going to chunks and back inline, and items
/// that are damaged or hostile (an error, never a trap).
final class FileSystemTreeTests: XCTestCase {
    func makeTree(bits: Int = 48) throws -> FileSystemTree {
        let tree = try CopyOnWriteTree(pages: MemoryTreePages(), imageID: 1, treeID: 1, root: nil)
        return FileSystemTree(tree: tree, hashes: .weakened(SipHash24(key0: 3, key1: 4), bits: bits))
    }

    func testNamesCollidingUnderTheKeyFillTheirItemAndTheNextIsRefusedWithNothingChanged() throws {
        // One hash bit: every name lands in one of two name items, which hold three names
        // of 255 bytes each (1 + 3 × 273 bytes of at most 1,024), so the seventh is refused.
        let fs = try makeTree(bits: 1)
        var linked: [[UInt8]] = []
        var refusal: FSError?
        for n in 0..<7 {
            let name = Array(repeating: UInt8(ascii: "a") + UInt8(n), count: 255)
            do {
                try fs.apply(.link(directory: 1, NamedEntry(name: name, child: 10 + UInt64(n), type: 8, index: 3 + UInt64(n))))
                linked.append(name)
            } catch {
                refusal = error
                XCTAssertNil(try fs.lookup(directory: 1, name: name), "a refused name was linked")
                XCTAssertFalse(try fs.hasItems(10 + UInt64(n)), "a refused link left a back reference")
                XCTAssertNil(try fs.entries(directory: 1).first { $0.index == 3 + UInt64(n) }, "a refused link left its index")
            }
        }
        XCTAssertEqual(refusal, .noSpace)
        XCTAssertGreaterThanOrEqual(linked.count, 3)
        for name in linked { XCTAssertEqual(try fs.lookup(directory: 1, name: name)?.name, name) }
        XCTAssertEqual(try fs.entries(directory: 1).map(\.name), linked)
    }

    func testTheLargestXattrValueGoesToChunksAndAShortOneBackInline() throws {
        let fs = try makeTree()
        let name = Array("user.big".utf8)
        let value = (0..<XattrItem.valueLimit).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try fs.apply(.setXattr(inode: 5, name: name, value: value))
        XCTAssertEqual(try fs.xattr(5, name: name), value)
        XCTAssertEqual(try itemCount(fs, inode: 5), 1 + 50, "65,536 bytes take 50 chunks of 1,328 bytes and the item naming them")
        try fs.apply(.setXattr(inode: 5, name: name, value: [1, 2, 3]))
        XCTAssertEqual(try fs.xattr(5, name: name), [1, 2, 3])
        XCTAssertEqual(try itemCount(fs, inode: 5), 1, "the chunks of the replaced value remain")
        try fs.apply(.removeXattr(inode: 5, name: name))
        XCTAssertEqual(try itemCount(fs, inode: 5), 0)
        XCTAssertThrowsError(try fs.apply(.removeXattr(inode: 5, name: name))) { XCTAssertEqual($0 as? FSError, .noAttribute) }
        XCTAssertThrowsError(try fs.apply(.setXattr(inode: 5, name: name, value: value + [0]))) {
            XCTAssertEqual($0 as? FSError, .argumentListTooLong)
        }
    }

    func itemCount(_ fs: FileSystemTree, inode: UInt64) throws -> Int {
        var count = 0
        try fs.tree.scan(from: TreeKey(object: inode, kind: 0, offset: 0), through: TreeKey(object: inode, kind: .max, offset: .max)) {
            _, _ in
            count += 1
            return true
        }
        return count
    }

    func testDamagedAndHostileItemsAreDamageNotATrap() throws {
        let fs = try makeTree()
        try fs.tree.upsert(TreeKey(object: 7, kind: ItemKind.inode.rawValue, offset: 0), [1, 2, 3])
        XCTAssertThrowsError(try fs.inode(7)) { Self.assertDamage($0) }
        // An extent reaching past the largest file: its end would overflow a file offset.
        try fs.tree.upsert(TreeKey(object: 8, kind: ItemKind.extent.rawValue, offset: .max - 10),
                           ExtentItem.fill(byte: 1, length: 1 << 40).encoded())
        XCTAssertThrowsError(try fs.extents(8, overlapping: 0..<UInt64.max)) { Self.assertDamage($0) }
        XCTAssertThrowsError(try fs.apply(.fileRange(inode: 8, size: 10, range: 0..<10, pieces: [
            FilePiece(offset: 0, extent: .repeatingBytes(value: 2, count: 10)),
        ]))) { Self.assertDamage($0) }
        // Overlapping extents.
        try fs.tree.upsert(TreeKey(object: 9, kind: ItemKind.extent.rawValue, offset: 0), ExtentItem.fill(byte: 1, length: 100).encoded())
        try fs.tree.upsert(TreeKey(object: 9, kind: ItemKind.extent.rawValue, offset: 50), ExtentItem.fill(byte: 2, length: 100).encoded())
        XCTAssertThrowsError(try fs.extents(9, overlapping: 0..<200)) { Self.assertDamage($0) }
        // Image extents whose lengths would overflow the count of stored bytes (st_blocks),
        // and one that ends past the largest file.
        let huge = UInt64(Int64.max) - 4096
        for i in 0..<3 {
            try fs.tree.upsert(TreeKey(object: 10, kind: ItemKind.extent.rawValue, offset: UInt64(i)),
                               ExtentItem.image(offset: 0, length: huge).encoded())
        }
        XCTAssertThrowsError(try fs.storedBytes(10)) { Self.assertDamage($0) }
        try fs.tree.upsert(TreeKey(object: 13, kind: ItemKind.extent.rawValue, offset: huge),
                           ExtentItem.image(offset: 0, length: 8192).encoded())
        XCTAssertThrowsError(try fs.storedBytes(13)) { Self.assertDamage($0) }
        // A symlink target with a part missing, and an xattr with a short chunk.
        try fs.tree.upsert(TreeKey(object: 11, kind: ItemKind.symlinkTarget.rawValue, offset: 1), [65])
        XCTAssertThrowsError(try fs.symlinkTarget(11)) { Self.assertDamage($0) }
        try fs.apply(.setXattr(inode: 12, name: Array("user.x".utf8), value: Array(repeating: 9, count: 3000)))
        let chunk = TreeKey(object: 12, kind: ItemKind.xattr.rawValue, offset: fs.hashes.xattr(Array("user.x".utf8)) | 2)
        try fs.tree.upsert(chunk, [1, 2])
        XCTAssertThrowsError(try fs.xattr(12, name: Array("user.x".utf8))) { Self.assertDamage($0) }
    }

    static func assertDamage(_ error: Error, file: StaticString = #filePath, line: UInt = #line) {
        guard case .damagedImage? = error as? FSError else {
            return XCTFail("\(error) is not damage", file: file, line: line)
        }
    }

    func testTruncateAndPunchLeaveNoItemForTheHole() throws {
        let fs = try makeTree()
        try fs.apply(.fileRange(inode: 3, size: 10_000, range: 0..<10_000, pieces: [
            FilePiece(offset: 0, extent: .mmapOffload(offset: 4096, size: 10_000)),
        ]))
        XCTAssertEqual(fs.takeReferenceChanges().retained, [1..<4])
        // Punch 4,000..<6,000 (a hole piece), then grow by truncate: the hole and the growth
        // take no item; the image extent is cut in two, each holding its blocks.
        try fs.apply(.fileRange(inode: 3, size: 10_000, range: 4_000..<6_000, pieces: [
            FilePiece(offset: 4_000, extent: .repeatingBytes(value: 0, count: 2_000)),
        ]))
        try fs.apply(.fileRange(inode: 3, size: 1 << 40, range: 10_000..<10_000, pieces: []))
        let extents = try fs.extents(3, overlapping: 0..<UInt64.max)
        XCTAssertEqual(extents.map(\.offset), [0, 6_000])
        XCTAssertEqual(extents.map(\.extent), [.image(offset: 4096, length: 4_000), .image(offset: 10_096, length: 4_000)])
        let changes = fs.takeReferenceChanges()
        XCTAssertEqual(changes.released, [1..<4])
        XCTAssertEqual(changes.retained, [1..<2, 2..<4])
        // Shrinking past the second extent releases it and cuts the first.
        try fs.apply(.fileRange(inode: 3, size: 100, range: 100..<100, pieces: []))
        XCTAssertEqual(try fs.extents(3, overlapping: 0..<UInt64.max).map(\.extent), [.image(offset: 4096, length: 100)])
        let shrink = fs.takeReferenceChanges()
        XCTAssertEqual(Set(shrink.released), [1..<2, 2..<4])
        XCTAssertEqual(shrink.retained, [1..<2])
    }

    /// The extents a change cuts, where the written range and the part past the new size
    /// meet (one search) and where they do not (two): a write past a smaller new size, a
    /// range that starts past the size, a write below the size that leaves its tail.
    func testTheCutCoversTheRangeAndWhatLiesPastTheSize() throws {
        let fs = try makeTree()
        let fills: [FilePiece] = [
            FilePiece(offset: 0, extent: .repeatingBytes(value: 1, count: 1_000)),
            FilePiece(offset: 1_000, extent: .repeatingBytes(value: 2, count: 1_000)),
            FilePiece(offset: 2_000, extent: .repeatingBytes(value: 3, count: 1_000)),
        ]
        func offsets() throws -> [UInt64] { try fs.extents(3, overlapping: 0..<UInt64.max).map(\.offset) }
        func items() throws -> [ExtentItem] { try fs.extents(3, overlapping: 0..<UInt64.max).map(\.extent) }
        try fs.apply(.fileRange(inode: 3, size: 3_000, range: 0..<3_000, pieces: fills))
        // A write of 500..<2_600 with the size cut to 1_500: the range reaches past the size.
        try fs.apply(.fileRange(inode: 3, size: 1_500, range: 500..<2_600, pieces: [
            FilePiece(offset: 500, extent: .repeatingBytes(value: 9, count: 2_100)),
        ]))
        XCTAssertEqual(try offsets(), [0, 500])
        XCTAssertEqual(try items(), [.fill(byte: 1, length: 500), .fill(byte: 9, length: 1_000)])
        // A range that starts past the size: only the size cuts.
        try fs.apply(.fileRange(inode: 3, size: 700, range: 1_200..<1_300, pieces: []))
        XCTAssertEqual(try offsets(), [0, 500])
        XCTAssertEqual(try items(), [.fill(byte: 1, length: 500), .fill(byte: 9, length: 200)])
        // Grown again, then a write inside that ends below the size: the tail stays.
        try fs.apply(.fileRange(inode: 3, size: 3_000, range: 700..<3_000, pieces: [
            FilePiece(offset: 700, extent: .repeatingBytes(value: 4, count: 2_300)),
        ]))
        try fs.apply(.fileRange(inode: 3, size: 3_000, range: 100..<800, pieces: [
            FilePiece(offset: 100, extent: .repeatingBytes(value: 5, count: 700)),
        ]))
        XCTAssertEqual(try offsets(), [0, 100, 800])
        XCTAssertEqual(try items(), [.fill(byte: 1, length: 100), .fill(byte: 5, length: 700), .fill(byte: 4, length: 2_200)])
    }

    /// A write in place (the pieces of the range are the bytes its item already holds)
    /// changes no item and moves no reference; pieces that continue each other in the file
    /// and in the image become one item. Before, every 4 KiB overwrite cut its extent in
    /// three, and the commit moved each block's reference down and up again.
    func testAnOverwriteInPlaceChangesNothingAndNeighbouringPiecesJoin() throws {
        let fs = try makeTree()
        try fs.apply(.fileRange(inode: 3, size: 1 << 20, range: 0..<(1 << 20), pieces: [
            FilePiece(offset: 0, extent: .mmapOffload(offset: 1 << 20, size: 300_000)),
            FilePiece(offset: 300_000, extent: .mmapOffload(offset: (1 << 20) + 300_000, size: (1 << 20) - 300_000)),
        ]))
        XCTAssertEqual(try fs.extents(3, overlapping: 0..<UInt64.max).map(\.extent), [.image(offset: 1 << 20, length: 1 << 20)])
        XCTAssertEqual(fs.takeReferenceChanges().retained, [256..<512])
        // Three overwrites in place, one unaligned.
        for start in [UInt64(8_192), 500_000, 1_000_001] {
            try fs.apply(.fileRange(inode: 3, size: 1 << 20, range: start..<start + 4_096, pieces: [
                FilePiece(offset: start, extent: .mmapOffload(offset: (1 << 20) + start, size: 4_096)),
            ]))
        }
        XCTAssertEqual(try fs.extents(3, overlapping: 0..<UInt64.max).map(\.extent), [.image(offset: 1 << 20, length: 1 << 20)])
        XCTAssertEqual(fs.takeReferenceChanges(), ExtentReferenceChanges())
        // A write elsewhere in the image (copy-on-write) still cuts the item.
        try fs.apply(.fileRange(inode: 3, size: 1 << 20, range: 8_192..<12_288, pieces: [
            FilePiece(offset: 8_192, extent: .mmapOffload(offset: 4 << 20, size: 4_096)),
        ]))
        XCTAssertEqual(try fs.extents(3, overlapping: 0..<UInt64.max).map(\.offset), [0, 8_192, 12_288])
        XCTAssertEqual(fs.takeReferenceChanges().retained, [256..<258, 1024..<1025, 259..<512])
    }

    /// `cancelling` against a plain count per block: random retains and releases (one
    /// range repeated, overlapping, empty) leave every block's net count as the originals
    /// do, with no block both retained and released, and no more blocks than went in.
    func testCancellingKeepsEveryBlocksNetCount() {
        var random = SplitMix64(seed: 11)
        for _ in 0..<400 {
            func ranges() -> [Range<UInt64>] {
                (0..<Int(random.next() % 12)).map { _ in
                    let start = random.next() % 40
                    return start..<start + random.next() % 10
                }
            }
            let retained = ranges()
            let released = ranges() + (random.next() % 2 == 0 ? retained.prefix(3) : [])
            func counts(_ retained: [Range<UInt64>], _ released: [Range<UInt64>]) -> [Int] {
                var counts = [Int](repeating: 0, count: 64)
                for blocks in retained { for block in blocks { counts[Int(block)] += 1 } }
                for blocks in released { for block in blocks { counts[Int(block)] -= 1 } }
                return counts
            }
            let net = ExtentReferenceChanges.cancelling(retained: retained, released: released)
            XCTAssertEqual(counts(net.retained, net.released), counts(retained, released), "\(retained) \(released)")
            XCTAssertTrue(Set(net.retained.flatMap { Array($0) }).isDisjoint(with: net.released.flatMap { Array($0) }))
            XCTAssertFalse(net.retained.contains(where: \.isEmpty) || net.released.contains(where: \.isEmpty))
            let length = { (ranges: [Range<UInt64>]) in ranges.reduce(0) { $0 + $1.count } }
            XCTAssertLessThanOrEqual(length(net.retained) + length(net.released), length(retained) + length(released))
        }
    }

    func testAFileOfManyExtentsIsDroppedAcrossCommitsWithItsOrphanItemSayingSo() throws {
        let fs = try makeTree()
        let extents = 5_000
        try fs.apply(.attributes(inode: 4, NamespaceChangeScript.inode(type: 8, links: 0, size: UInt64(extents) * 4096)))
        try fs.apply(.fileRange(inode: 4, size: UInt64(extents) * 4096, range: 0..<UInt64(extents) * 4096,
                                pieces: (0..<extents).map { FilePiece(offset: UInt64($0) * 4096, extent: .mmapOffload(offset: UInt64($0) * 8192, size: 4096)) }))
        _ = fs.takeReferenceChanges()
        XCTAssertEqual(try fs.drop(4, budget: 1_000), 1_000)
        XCTAssertNil(try fs.inode(4), "the first chunk takes the attributes")
        XCTAssertEqual(try fs.orphan(4), OrphanItem(state: .dropping))
        var chunks = 1
        while try fs.orphan(4) != nil {
            XCTAssertLessThanOrEqual(try fs.continueDrops(budget: 1_000), 1_000)
            chunks += 1
        }
        XCTAssertEqual(chunks, 6, "5,001 items in chunks of 1,000")
        XCTAssertFalse(try fs.hasItems(4))
        let released = fs.takeReferenceChanges().released
        XCTAssertEqual(released.count, extents)
        XCTAssertEqual(Set(released), Set((0..<UInt64(extents)).map { $0 * 2..<$0 * 2 + 1 }))
    }

    func testACommitPlacesRamPiecesLongerThanAnInlineExtentInTheImage() throws {
        let fs = try makeTree()
        let delta = MetadataDelta(committedGeneration: 0)
        let ticket = delta.join()
        let long = Array(repeating: UInt8(7), count: 5_000), short = Array(repeating: UInt8(8), count: 100)
        try delta.record([.fileRange(inode: 3, size: 5_100, range: 0..<5_100, pieces: [
            FilePiece(offset: 0, extent: .inMemory(long)), FilePiece(offset: 5_000, extent: .inMemory(short)),
        ])], in: ticket)
        delta.leave(ticket)
        let generation = delta.close()
        delta.waitUntilQuiet(generation)
        XCTAssertThrowsError(try fs.apply(generation)) {
            guard case .invalidArgument? = $0 as? FSError else { return XCTFail("\($0)") }
        }
        fs.abandonChanges()
        var placed: [[UInt8]] = []
        // Placed in two runs of blocks, as an allocator short of contiguous space would.
        try fs.apply(generation) { (bytes) throws(FSError) -> [Extent] in
            placed.append(bytes)
            return [.mmapOffload(offset: 1 << 20, size: 4096), .mmapOffload(offset: 1 << 21, size: UInt64(bytes.count) - 4096)]
        }
        XCTAssertEqual(placed, [long])
        let extents = try fs.extents(3, overlapping: 0..<UInt64.max)
        XCTAssertEqual(extents.map(\.offset), [0, 4096, 5_000])
        XCTAssertEqual(extents.map(\.extent), [.image(offset: 1 << 20, length: 4096), .image(offset: 1 << 21, length: 904), .inline(short)])
        XCTAssertEqual(fs.takeReferenceChanges().retained, [256..<257, 512..<513])
    }

    /// Found by review: a damaged orphan item naming the orphan list itself made a drop
    /// remove every orphan item. It is damage, and the other orphans stay.
    func testAnOrphanItemNamingTheOrphanListItselfIsDamageNotTheLossOfEveryOrphan() throws {
        let fs = try makeTree()
        try fs.apply(.orphan(inode: 5, OrphanItem(state: .unlinkedWhileOpen)))
        try fs.tree.upsert(TreeKey(object: ReservedObject.orphans, kind: ItemKind.orphan.rawValue, offset: ReservedObject.orphans),
                           OrphanItem(state: .dropping).encoded())
        XCTAssertThrowsError(try fs.continueDrops(budget: 100)) { Self.assertDamage($0) }
        XCTAssertThrowsError(try fs.drop(ReservedObject.orphans, budget: 100)) { Self.assertDamage($0) }
        _ = try fs.tree.remove(TreeKey(object: ReservedObject.orphans, kind: ItemKind.orphan.rawValue, offset: ReservedObject.orphans))
        XCTAssertEqual(try fs.orphan(5), OrphanItem(state: .unlinkedWhileOpen))
    }

    /// An unlink whose index item names another entry (a damaged image) is damage, and
    /// the other entry stays listed.
    func testAnUnlinkWhoseIndexItemNamesAnotherEntryIsDamage() throws {
        let fs = try makeTree()
        let a = NamedEntry(name: Array("a".utf8), child: 5, type: 8, index: 3)
        try fs.apply(.link(directory: 1, a))
        try fs.tree.upsert(TreeKey(object: 1, kind: ItemKind.index.rawValue, offset: 3),
                           IndexItem(name: Array("b".utf8), child: 6, type: 8).encoded())
        XCTAssertThrowsError(try fs.apply(.unlink(directory: 1, a))) { Self.assertDamage($0) }
        XCTAssertEqual(try fs.entries(directory: 1).map(\.name), [Array("b".utf8)])
        XCTAssertEqual(try fs.lookup(directory: 1, name: a.name), a)
    }
}
