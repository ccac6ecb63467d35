import XCTest
@testable import OffloadCore
import SplitMix

/// Format 2's item values (Sources/OffloadCore/TreeItems; docs/FORMAT.md "Version 2 (in
/// progress): items"): the keyed hash against reference values, every item round-tripped
/// with random contents, and every decoder refusing damaged or hostile bytes without
/// trapping.
final class TreeItemTests: XCTestCase {
    /// SipHash-2-4 with key 00 01 .. 0f over messages 00 01 .. (n-1): the reference
    /// implementation's vectors (the paper's appendix; also the `siphash24` Python package).
    func testSipHashMatchesTheReferenceVectors() {
        let siphash = SipHash24(key0: 0x0706050403020100, key1: 0x0f0e0d0c0b0a0908)
        let expected: [Int: UInt64] = [
            0: 0x726fdb47dd0e0e31, 1: 0x74f839c593dc67fd, 2: 0x0d6c8009d9a94f5a, 3: 0x85676696d7fb7e2d,
            7: 0xab0200f58b01d137, 8: 0x93f5f5799a932462, 15: 0xa129ca6149be45e5, 63: 0x958a324ceb064572,
        ]
        for (length, value) in expected {
            XCTAssertEqual(siphash.hash((0..<length).map { UInt8($0) }), value, "message of \(length) bytes")
        }
        // The prefixed form is the plain hash of the prefix's 8 little-endian bytes first.
        XCTAssertEqual(siphash.hash(prefix: 0x0706050403020100, (8..<15).map { UInt8($0) }), expected[15])
    }

    func testHashesDependOnTheImageKeyAndKeepTheXattrChunkBitsFree() {
        let one = ItemHashes(siphash: SipHash24(key0: 1, key1: 2))
        let other = ItemHashes(siphash: SipHash24(key0: 1, key1: 3))
        let name = Array("report.txt".utf8)
        XCTAssertNotEqual(one.name(name), other.name(name))
        XCTAssertNotEqual(one.backReference(directory: 5, name: name), one.backReference(directory: 6, name: name))
        XCTAssertEqual(one.xattr(Array("user.x".utf8)) & 0xffff, 0)
    }

    func testEveryItemRoundTripsWithRandomContents() throws {
        var random = SplitMix64(seed: 11)
        for _ in 0..<2000 {
            let inode = randomInode(&random)
            XCTAssertEqual(try InodeItem.decode(bytes: inode.encoded()), inode)
            let names = NameItem(entries: (0..<Int.random(in: 1...3, using: &random)).map { i in
                NamedEntry(name: randomName(&random, suffix: i), child: UInt64.random(in: 1..<ReservedObject.firstReserved, using: &random),
                           type: [1, 2, 4, 6, 8, 10, 12].randomElement(using: &random)!, index: UInt64.random(in: 3...UInt64.max, using: &random))
            })
            XCTAssertEqual(try NameItem.decode(bytes: names.encoded()), names)
            let index = IndexItem(name: randomName(&random, suffix: 0), child: UInt64.random(in: 1..<ReservedObject.firstReserved, using: &random), type: 8)
            XCTAssertEqual(try IndexItem.decode(bytes: index.encoded()), index)
            let links = BackReferenceItem(links: (0..<Int.random(in: 1...3, using: &random)).map { i in
                Link(directory: UInt64.random(in: 1..<ReservedObject.firstReserved, using: &random),
                     index: UInt64.random(in: 3...UInt64.max, using: &random), name: randomName(&random, suffix: i))
            })
            XCTAssertEqual(try BackReferenceItem.decode(bytes: links.encoded()), links)
            let extent = randomExtent(&random)
            XCTAssertEqual(try ExtentItem.decode(bytes: extent.encoded()), extent)
            let orphan = OrphanItem(state: [.unlinkedWhileOpen, .dropping, .truncating].randomElement(using: &random)!,
                                    resumeOffset: random.next(), targetSize: random.next())
            XCTAssertEqual(try OrphanItem.decode(bytes: orphan.encoded()), orphan)
            let xattrs = randomXattrs(&random)
            XCTAssertEqual(try XattrItem.decode(bytes: xattrs.encoded()), xattrs)
        }
    }

    /// Every proper prefix of a valid encoding (none of them an inline extent, whose length
    /// is the item's), and the encoding with a byte added, is refused; random bytes never trap (whatever decodes re-encodes to the same bytes).
    func testDamagedAndRandomBytesAreRefusedWithoutTrapping() throws {
        var random = SplitMix64(seed: 12)
        let decoders: [([UInt8]) throws -> [UInt8]] = [
            { try InodeItem.decode(bytes: $0).encoded() }, { try NameItem.decode(bytes: $0).encoded() },
            { try IndexItem.decode(bytes: $0).encoded() }, { try BackReferenceItem.decode(bytes: $0).encoded() },
            { try ExtentItem.decode(bytes: $0).encoded() }, { try OrphanItem.decode(bytes: $0).encoded() },
            { try XattrItem.decode(bytes: $0).encoded() },
        ]
        let samples: [[UInt8]] = [
            randomInode(&random).encoded(),
            NameItem(entries: [NamedEntry(name: Array("a".utf8), child: 2, type: 8, index: 3)]).encoded(),
            IndexItem(name: Array("b".utf8), child: 4, type: 4).encoded(),
            BackReferenceItem(links: [Link(directory: 1, index: 3, name: Array("c".utf8))]).encoded(),
            ExtentItem.image(offset: 8192, length: 5000).encoded(),
            OrphanItem(state: .dropping, resumeOffset: 4096).encoded(),
            randomXattrs(&random).encoded(),
        ]
        for (decoder, sample) in zip(decoders, samples) {
            XCTAssertEqual(try decoder(sample), sample)
            for length in 0..<sample.count {
                XCTAssertThrowsError(try decoder(Array(sample[..<length])), "a prefix of \(length) of \(sample.count) bytes")
            }
            XCTAssertThrowsError(try decoder(sample + [0]), "one byte too many")
        }
        for _ in 0..<20000 {
            let bytes = (0..<Int.random(in: 0...200, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            for decoder in decoders {
                if let reencoded = try? decoder(bytes) { XCTAssertEqual(reencoded, bytes) }
            }
        }
    }

    func testTheDecodersRefuseWhatTheNamespaceNeverWrites() {
        func refuses<T: TreeItemValue>(_ bytes: [UInt8], _ type: T.Type, _ what: String) {
            XCTAssertThrowsError(try T.decode(bytes: bytes), what)
        }
        var bytes = IndexItem(name: Array("x".utf8), child: 1, type: 8).encoded()
        for bad in [Array("..".utf8), Array(".".utf8), Array("a/b".utf8), [0x61, 0]] {
            var damaged = Array(bytes[..<9]); damaged.append(UInt8(bad.count)); damaged += bad
            refuses(damaged, IndexItem.self, "the name \(bad)")
        }
        bytes = NameItem(entries: [NamedEntry(name: [0x61], child: 1, type: 8, index: 3),
                                   NamedEntry(name: [0x62], child: 1, type: 8, index: 4)]).encoded()
        bytes[bytes.count - 1] = 0x61
        refuses(bytes, NameItem.self, "one name twice")
        var inode = InodeItem(type: 8, permissions: 0o644, uid: 0, gid: 0, linkCount: 1, size: 0, rdev: 0,
                              accessTime: .init(seconds: 0, nanoseconds: 0), modificationTime: .init(seconds: 0, nanoseconds: 0),
                              changeTime: .init(seconds: 0, nanoseconds: 0), birthTime: .init(seconds: 0, nanoseconds: 999_999_999),
                              parent: 0, nextIndex: 0).encoded()
        for i in 84..<88 { inode[i] = 0xff }   // the birth time's nanoseconds
        refuses(inode, InodeItem.self, "nanoseconds past a second")
        refuses([1] + withUnsafeBytes(of: UInt64(10).littleEndian, Array.init) + withUnsafeBytes(of: UInt64.max - 5, Array.init),
                ExtentItem.self, "an image extent past 2^64")
        refuses([2, 0, 0, 0, 0, 0, 0, 0, 0, 7], ExtentItem.self, "an empty fill")
        refuses([0] + [UInt8](repeating: 0, count: 16), OrphanItem.self, "orphan state 0")
        var flagged = InodeItem(type: 8, permissions: 0o644, uid: 0, gid: 0, linkCount: 1, size: 0, rdev: 0,
                                accessTime: .init(seconds: 0, nanoseconds: 0), modificationTime: .init(seconds: 0, nanoseconds: 0),
                                changeTime: .init(seconds: 0, nanoseconds: 0), birthTime: .init(seconds: 0, nanoseconds: 0),
                                parent: 0, nextIndex: 0).encoded()
        flagged[20] = 1
        refuses(flagged, InodeItem.self, "inode flags not yet defined")
        refuses([1] + withUnsafeBytes(of: UInt64(1) << 63, Array.init) + withUnsafeBytes(of: UInt64(0), Array.init),
                ExtentItem.self, "an image extent of 2^63 bytes")
        var zeroChild = IndexItem(name: Array("x".utf8), child: 1, type: 8).encoded()
        zeroChild[0] = 0
        refuses(zeroChild, IndexItem.self, "an entry naming inode 0")
        var lowIndex = NameItem(entries: [NamedEntry(name: [0x61], child: 1, type: 8, index: 3)]).encoded()
        lowIndex[9] = 2
        refuses(lowIndex, NameItem.self, "entry index 2")
        // The last index is none (a directory's next entry number past its last entry):
        // readdir's cookie after an entry there overflowed, and so did repair's count.
        var lastIndex = NameItem(entries: [NamedEntry(name: [0x61], child: 1, type: 8, index: 3)]).encoded()
        for i in 9..<17 { lastIndex[i] = 0xff }
        refuses(lastIndex, NameItem.self, "entry index 2^64 - 1")
        let overlapping = XattrItem.unchecked([
            .init(name: Array("user.a".utf8), valueLength: 4000, firstChunk: 1, inlineValue: []),
            .init(name: Array("user.b".utf8), valueLength: 2000, firstChunk: 3, inlineValue: []),
        ])
        refuses(overlapping, XattrItem.self, "chunks 1..<4 and 3..<5 overlap")
        let shortInline = XattrItem.unchecked([.init(name: Array("user.a".utf8), valueLength: 5, firstChunk: 0,
                                                     inlineValue: [1, 2, 3])])
        refuses(shortInline, XattrItem.self, "an inline value shorter than its length")
        // Names no request could have set (the namespace answers EOPNOTSUPP for them):
        // damage, in an item and in a journal change alike.
        for bad in ["user&more", "user.", "system.posix_acl_other", "os2.name", "x"] {
            let name = Array(bad.utf8)
            XCTAssertFalse(XattrItem.isStoredName(name), bad)
            refuses(XattrItem.unchecked([.init(name: name, valueLength: 1, firstChunk: 0, inlineValue: [7])]),
                    XattrItem.self, "the name \(bad)")
            var journal = ByteWriter(capacity: 64)
            JournalChange.setXattr(inode: 5, name: Array("user.ok".utf8), value: [7]).encode(into: &journal)
            let good = journal.bytes
            XCTAssertNoThrow(try good.withUnsafeBytes { try JournalChange.decodeAll($0) })
            var changed = ByteWriter(capacity: 64)
            changed.u8(good[0]); changed.u64(5); changed.blob(name); changed.blob([7])
            XCTAssertThrowsError(try changed.bytes.withUnsafeBytes { try JournalChange.decodeAll($0) }, bad)
        }
        // File types no request makes (readdir's d_type and stat's mode have none for
        // them): the fuzzer found a repaired image whose entry of type 0 failed readdir.
        for type: UInt8 in [0, 3, 5, 7, 9, 11, 13, 14, 15] {
            var index = IndexItem(name: Array("x".utf8), child: 5, type: 8).encoded()
            index[8] = type
            refuses(index, IndexItem.self, "an index entry of type \(type)")
            var named = NameItem(entries: [NamedEntry(name: [0x61], child: 5, type: 8, index: 3)]).encoded()
            named[17] = type
            refuses(named, NameItem.self, "a name of type \(type)")
            var typed = InodeItem(type: 8, permissions: 0o644, uid: 0, gid: 0, linkCount: 1, size: 0, rdev: 0,
                                  accessTime: .init(seconds: 0, nanoseconds: 0), modificationTime: .init(seconds: 0, nanoseconds: 0),
                                  changeTime: .init(seconds: 0, nanoseconds: 0), birthTime: .init(seconds: 0, nanoseconds: 0),
                                  parent: 0, nextIndex: 0).encoded()
            typed[1] = type
            refuses(typed, InodeItem.self, "an inode of type \(type)")
        }
        for good in ["user.a", "trusted.t", "security.capability", "system.posix_acl_access", "system.posix_acl_default"] {
            XCTAssertTrue(XattrItem.isStoredName(Array(good.utf8)), good)
        }
    }

    /// Colliding names share one item up to its limit: three names of 255 bytes fit, a
    /// fourth is refused, so hostile names cannot grow an item past a quarter of a node.
    func testCollidingNamesFillAnItemOnlyUpToItsLimit() {
        var item = NameItem(entries: [])
        for i in 0..<3 {
            let entry = NamedEntry(name: [UInt8](repeating: UInt8(0x61 + i), count: 255), child: UInt64(i + 1), type: 8, index: UInt64(i + 3))
            XCTAssertTrue(item.fits(adding: entry))
            item.entries.append(entry)
        }
        XCTAssertFalse(item.fits(adding: NamedEntry(name: [UInt8](repeating: 0x7a, count: 255), child: 9, type: 8, index: 9)))
        XCTAssertLessThanOrEqual(item.encoded().count, NameItem.maximumBytes)
        var links = BackReferenceItem(links: [])
        while links.fits(adding: Link(directory: 1, index: UInt64(links.links.count), name: [UInt8](repeating: 0x61, count: 255))) {
            links.links.append(Link(directory: UInt64(links.links.count), index: 0, name: [UInt8](repeating: 0x61, count: 255)))
        }
        XCTAssertEqual(links.links.count, 3)
    }

    // MARK: - Helpers

    /// What repair keeps of an xattr item that does not decode (`XattrItem.salvage`):
    /// a valid item whole; of one with a damaged name, every other attribute; of random
    /// bytes and of every item with a byte changed, only attributes that decode again as
    /// an item, without trapping.
    func testSalvageKeepsOnlyAttributesThatDecode() throws {
        var random = SplitMix64(seed: 13)
        XCTAssertNil([UInt8](repeating: 1, count: XattrItem.maximumBytes + 1).withUnsafeBytes { XattrItem.salvage($0) },
                     "longer than an item may be")
        for _ in 0..<300 {
            let item = randomXattrs(&random)
            let bytes = item.encoded()
            let whole = try XCTUnwrap(bytes.withUnsafeBytes { XattrItem.salvage($0) })
            XCTAssertEqual(whole.kept, item.attributes)
            XCTAssertEqual(whole.dropped, 0)
            XCTAssertTrue(whole.readAll)
            let trailing = try XCTUnwrap((bytes + [0]).withUnsafeBytes { XattrItem.salvage($0) })
            XCTAssertEqual(trailing.kept, item.attributes, "a byte after the last entry")
            XCTAssertTrue(trailing.readAll)
            // A name no namespace stores: that attribute alone goes.
            var damaged = item.attributes
            let victim = Int.random(in: 0..<damaged.count, using: &random)
            damaged[victim].name[0] = UInt8(ascii: "x")
            let salvaged = try XCTUnwrap(XattrItem.unchecked(damaged).withUnsafeBytes { XattrItem.salvage($0) })
            var expected = item.attributes
            expected.remove(at: victim)
            XCTAssertEqual(salvaged.kept, expected)
            XCTAssertEqual(salvaged.dropped, 1)
            // Any byte changed: what is kept decodes.
            var flipped = bytes
            flipped[Int.random(in: 0..<flipped.count, using: &random)] ^= UInt8.random(in: 1...255, using: &random)
            if let kept = flipped.withUnsafeBytes({ XattrItem.salvage($0) })?.kept, !kept.isEmpty {
                XCTAssertEqual(try XattrItem.decode(bytes: XattrItem(attributes: kept).encoded()).attributes, kept)
            }
            let noise = (0..<Int.random(in: 0...300, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            if let kept = noise.withUnsafeBytes({ XattrItem.salvage($0) })?.kept, !kept.isEmpty {
                XCTAssertEqual(try XattrItem.decode(bytes: XattrItem(attributes: kept).encoded()).attributes, kept)
            }
        }
    }

    private func randomName(_ random: inout SplitMix64, suffix: Int) -> [UInt8] {
        let length = Int.random(in: 1...250, using: &random)
        return (0..<length).map { _ in UInt8.random(in: 0x21...0x7e, using: &random) }.map { $0 == 0x2f ? 0x2e : $0 }
            + Array("-\(suffix)".utf8)
    }

    private func randomInode(_ random: inout SplitMix64) -> InodeItem {
        func time() -> RecordTime {
            RecordTime(seconds: Int64(bitPattern: random.next()), nanoseconds: UInt32.random(in: 0..<1_000_000_000, using: &random))
        }
        return InodeItem(type: [1, 2, 4, 6, 8, 10, 12].randomElement(using: &random)!, permissions: UInt32.random(in: 0...0o7777, using: &random),
                         uid: UInt32.random(in: 0...UInt32.max, using: &random), gid: UInt32.random(in: 0...UInt32.max, using: &random),
                         linkCount: UInt32.random(in: 0...65000, using: &random), flags: 0,
                         size: UInt64.random(in: 0...UInt64(Int64.max), using: &random), rdev: random.next(),
                         accessTime: time(), modificationTime: time(), changeTime: time(), birthTime: time(),
                         parent: random.next(), nextIndex: random.next())
    }

    private func randomExtent(_ random: inout SplitMix64) -> ExtentItem {
        switch Int.random(in: 0..<3, using: &random) {
        case 0:
            let length = UInt64.random(in: 1...(1 << 40), using: &random)
            return .image(offset: UInt64.random(in: 0...(UInt64(Int64.max) - length), using: &random), length: length)
        case 1: return .fill(byte: UInt8.random(in: 0...255, using: &random), length: UInt64.random(in: 1...UInt64(Int64.max), using: &random))
        default:
            return .inline((0..<Int.random(in: 1...ExtentItem.inlineLimit, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) })
        }
    }

    private func randomXattrs(_ random: inout SplitMix64) -> XattrItem {
        var attributes: [XattrItem.Attribute] = []
        var nextChunk: UInt16 = 1
        for i in 0..<Int.random(in: 1...3, using: &random) {
            let name = Array("user.attribute-\(i)-\(random.next() % 1000)".utf8)
            if Bool.random(using: &random) {
                let value = (0..<Int.random(in: 0...200, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                attributes.append(.init(name: name, valueLength: UInt32(value.count), firstChunk: 0, inlineValue: value))
            } else {
                let length = UInt32.random(in: 1...UInt32(XattrItem.valueLimit), using: &random)
                let attribute = XattrItem.Attribute(name: name, valueLength: length, firstChunk: nextChunk, inlineValue: [])
                nextChunk += UInt16(attribute.chunkCount)
                attributes.append(attribute)
            }
        }
        return XattrItem(attributes: attributes)
    }
}
