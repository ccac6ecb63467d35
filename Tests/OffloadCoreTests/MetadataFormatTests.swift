import Foundation
import XCTest
@testable import OffloadCore
import SplitMix

/// The on-disk pieces of persistence, below the namespace: checksum, record encoding,
/// frame chains across segments, and the replay of file ranges.
final class MetadataFormatTests: XCTestCase {
    func testCrc32cMatchesTheCastagnoliCheckValue() {
        XCTAssertEqual(Checksum.crc32c(Array("123456789".utf8)), 0xE306_9283)
        // Continuing over two halves gives the checksum of the whole.
        let bytes = Array("hello, offloadfs".utf8)
        XCTAssertEqual(Checksum.crc32c(Array(bytes[5...]), continuing: Checksum.crc32c(Array(bytes[..<5]))),
                       Checksum.crc32c(bytes))
    }

    /// The superblock's fields round-trip, the previous-commit extension included; an
    /// extension of zeros, or one left from another main part, names no previous commit.
    /// `ByteWriter.fixed` stores what the field-by-field appends would, little-endian, at
    /// the writer's end (frame headers, inode items and entry headers use it).
    func testFixedBytesEqualTheFieldByFieldEncoding() {
        var byFields = ByteWriter(), byFixed = ByteWriter()
        for writer in [0, 1] {
            var w = ByteWriter()
            w.u8(0xEE)  // something before, so the fixed part starts past 0
            if writer == 0 {
                w.u8(0x01); w.u16(0x0203); w.u32(0x0405_0607); w.u64(0x0809_0A0B_0C0D_0E0F); w.i64(-2)
            } else {
                w.fixed(23) { f in
                    f.u8(0x01); f.u16(0x0203); f.u32(0x0405_0607); f.u64(0x0809_0A0B_0C0D_0E0F); f.i64(-2)
                }
            }
            if writer == 0 { byFields = w } else { byFixed = w }
        }
        XCTAssertEqual(byFixed.bytes, byFields.bytes)
        XCTAssertEqual(Array(byFixed.bytes[1..<8]), [0x01, 0x03, 0x02, 0x07, 0x06, 0x05, 0x04])
        let item = InodeItem(type: 8, permissions: 0o644, uid: 1, gid: 2, linkCount: 1, size: 4096, rdev: 0,
                             accessTime: RecordTime(seconds: -5, nanoseconds: 7), modificationTime: RecordTime(seconds: 9, nanoseconds: 0),
                             changeTime: RecordTime(seconds: 10, nanoseconds: 1), birthTime: RecordTime(seconds: 1, nanoseconds: 2),
                             parent: 0, nextIndex: 0)
        XCTAssertEqual(item.encoded().withUnsafeBytes { try? InodeItem.decode($0) }, item)
    }

    func testSuperblockExtensionRoundTripsAndIsTiedToItsMainPart() {
        let previous = Superblock.Commit(checkpoint: LogSegment(start: 8192, length: 131072), checkpointFrames: 3,
                                         checkpointStream: 4, journal: LogSegment(start: 139264, length: 65536),
                                         journalSequence: 77)
        let full = Superblock(imageID: 9, generation: 5, cleanlyUnmounted: false,
                              checkpoint: LogSegment(start: 204800, length: 131072), checkpointFrames: 2,
                              journal: LogSegment(start: 335872, length: 65536), journalSequence: 90,
                              capacityBytes: 8 << 20, unmountError: 28, previous: previous)
        XCTAssertEqual(Superblock.decode(full.encoded()), .valid(full))
        var bare = full
        bare.previous = nil
        XCTAssertEqual(Superblock.decode(bare.encoded()), .valid(bare))
        XCTAssertEqual(Array(bare.encoded()[128..<4096]), [UInt8](repeating: 0, count: 4096 - 128),
                       "no previous commit: the rest of the block is zero, as version 1 always wrote it")
        // The main part of generation 6 with the extension written for generation 5.
        var newer = full
        newer.generation = 6
        var mixed = newer.encoded()
        mixed.replaceSubrange(128..<192, with: full.encoded()[128..<192])
        guard case .valid(let decoded) = Superblock.decode(mixed) else { return XCTFail("the main part is valid") }
        XCTAssertNil(decoded.previous, "an extension from another main part is ignored")
    }

    static let samples: [MetadataRecord] = [
        .inode(InodeRecord(number: 7, type: 0o10, permissions: 0o4755, uid: 1000, gid: 100, linkCount: 2, rdev: 0,
                           accessTime: RecordTime(seconds: -5, nanoseconds: 1), modificationTime: RecordTime(seconds: 1, nanoseconds: 999_999_999),
                           changeTime: RecordTime(seconds: 2, nanoseconds: 0), birthTime: RecordTime(seconds: 3, nanoseconds: 4),
                           parent: 0, symlinkTarget: [], xattrs: [.init(name: Array("user.a".utf8), value: [0, 1, 2]),
                                                                 .init(name: Array("user.empty".utf8), value: [])])),
        .inode(InodeRecord(number: 9, type: 0o12, permissions: 0o777, uid: 0, gid: 0, linkCount: 1, rdev: 0,
                           accessTime: RecordTime(seconds: 0, nanoseconds: 0), modificationTime: RecordTime(seconds: 0, nanoseconds: 0),
                           changeTime: RecordTime(seconds: 0, nanoseconds: 0), birthTime: RecordTime(seconds: 0, nanoseconds: 0),
                           parent: 0, symlinkTarget: Array("../target".utf8), xattrs: [])),
        .entry(directory: 1, name: Array("name with spaces".utf8), child: 7),
        .removeEntry(directory: 1, name: Array("gone".utf8)),
        .fileRange(inode: 7, size: 100_000, range: 0..<100_000, pieces: [
            FilePiece(offset: 0, extent: .mmapOffload(offset: 8192, size: 5000)),
            FilePiece(offset: 5000, extent: .inMemory([1, 2, 3])),
            FilePiece(offset: 9000, extent: .repeatingBytes(value: 0xAA, count: 91_000)),
        ]),
        .drop(inode: 12),
        .nextInode(99),
    ]

    func testEveryRecordRoundTripsAndEveryTruncationIsRefused() throws {
        for record in Self.samples {
            var w = ByteWriter()
            record.encode(into: &w)
            let decoded = try w.bytes.withUnsafeBytes { try MetadataRecord.decodeAll($0) }
            XCTAssertEqual(decoded, [record])
            // Every proper prefix is malformed, never a crash or a different record.
            for cut in 0..<w.bytes.count {
                let prefix = Array(w.bytes[0..<cut])
                let result = prefix.withUnsafeBytes { raw in Result { () throws(ByteReader.Malformed) in try MetadataRecord.decodeAll(raw) } }
                if case .success(let records) = result { XCTAssertTrue(records.isEmpty && cut == 0, "prefix \(cut) of \(record) decoded") }
            }
        }
    }

    func testAPieceBeyondItsRangeIsMalformedNotATrap() {
        var w = ByteWriter()
        w.u8(4); w.u64(7); w.u64(100)            // fileRange, inode 7, size 100
        w.u64(10); w.u64(20)                     // range 10..<20
        w.u32(1)                                 // one piece
        w.u64(30); w.u8(1); w.u8(0xAA); w.u64(5) // at 30, past the range's end
        let result = w.bytes.withUnsafeBytes { raw in Result { () throws(ByteReader.Malformed) in try MetadataRecord.decodeAll(raw) } }
        guard case .failure = result else { return XCTFail("a piece outside its range decoded") }
    }

    func testRandomBytesNeverCrashTheDecoder() {
        var random = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            let bytes = (0..<Int(random.next() % 64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            _ = bytes.withUnsafeBytes { raw in Result { () throws(ByteReader.Malformed) in try MetadataRecord.decodeAll(raw) } }
        }
    }

    func testChainsCrossSegmentsAndEndAtTheFirstBadFrame() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let log = try MetadataLog(store: store, imageID: 5, stream: 0, firstSequence: 100, segmentBytes: 8192)
        var payloads: [[UInt8]] = []
        var random = SplitMix64(seed: 3)
        for i in 0..<400 {
            let payload = (0..<Int(random.next() % 300)).map { UInt8(truncatingIfNeeded: $0 &+ i) }
            payloads.append(payload)
            try log.append(payload: payload)
        }
        XCTAssertGreaterThan(log.segments.count, 5, "small segments: the chain links many")
        func read(_ head: LogSegment) -> (payloads: [[UInt8]], end: String) {
            var reader = MetadataLogReader(imageID: 5, stream: 0, firstSequence: 100, head: head,
                                           fileBytes: store.fileBytes, read: store.readBytes)
            var got: [[UInt8]] = []
            while true {
                switch reader.next() {
                case .records(let payload): got.append(payload)
                case .end(let reason): return (got, reason)
                }
            }
        }
        XCTAssertEqual(read(log.head).payloads, payloads)
        // A reader expecting another image or stream reads nothing.
        var foreign = MetadataLogReader(imageID: 6, stream: 0, firstSequence: 100, head: log.head,
                                        fileBytes: store.fileBytes, read: store.readBytes)
        if case .records = foreign.next() { XCTFail("a frame of another image was accepted") }

        // Flip one byte inside frame 200's payload: the chain ends right before it.
        var offset = log.head.start, segmentIndex = 0
        var walked = 0
        let segments = log.segments
        while walked < 200 {
            let size = FrameHeader.size + payloads[walked].count
            if offset + UInt64(size + LogSegment.linkFrameSize) > segments[segmentIndex].range.upperBound {
                segmentIndex += 1
                offset = segments[segmentIndex].start
                continue
            }
            offset += UInt64(size)
            walked += 1
        }
        if offset + UInt64(FrameHeader.size + LogSegment.linkFrameSize + payloads[200].count) > segments[segmentIndex].range.upperBound {
            offset = segments[segmentIndex + 1].start
        }
        let target = offset + 20  // inside the header's stream/sequence fields
        let flipped = store.readBytes(at: target, count: 1)[0] ^ 0x10
        try store.copyIn([flipped], to: target)
        let damaged = read(log.head)
        XCTAssertEqual(damaged.payloads, Array(payloads[0..<200]), damaged.end)
        XCTAssertFalse(damaged.end.isEmpty)
    }

    func testReplayedFileMatchesAByteModel() {
        var random = SplitMix64(seed: 11)
        for _ in 0..<20 {
            let file = ReplayedFile()
            var model: [UInt8] = []
            for _ in 0..<300 {
                // A random range replaced by fills (values stand for distinct bytes) and a size.
                let size = random.next() % 5000
                let start = random.next() % 6000, length = random.next() % 2000
                var pieces: [FilePiece] = []
                var cursor = start
                while cursor < start + length {
                    let n = 1 + random.next() % 300
                    let count = min(n, start + length - cursor)
                    if random.next() % 3 != 0 {
                        pieces.append(FilePiece(offset: cursor, extent: .repeatingBytes(value: UInt8(1 + random.next() % 200), count: count)))
                    }
                    cursor += count
                }
                file.apply(size: size, range: start..<start + length, pieces: pieces)
                // The model: range becomes holes then pieces; then the size cuts or extends.
                if model.count < Int(start + length) { model += [UInt8](repeating: 0, count: Int(start + length) - model.count) }
                for i in Int(start)..<Int(start + length) { model[i] = 0 }
                for p in pieces { if case .repeatingBytes(let v, let c) = p.extent { for i in 0..<Int(c) { model[Int(p.offset) + i] = v } } }
                if model.count > Int(size) { model.removeLast(model.count - Int(size)) } else {
                    model += [UInt8](repeating: 0, count: Int(size) - model.count)
                }
                var rebuilt = [UInt8](repeating: 0, count: Int(file.size))
                for p in file.pieceList {
                    guard case .repeatingBytes(let v, let c) = p.extent else { return XCTFail() }
                    XCTAssertLessThanOrEqual(p.offset + c, file.size)
                    for i in 0..<Int(c) { rebuilt[Int(p.offset) + i] = v }
                }
                XCTAssertEqual(file.size, size)
                XCTAssertEqual(rebuilt, model)
                if rebuilt != model { return }
            }
        }
    }
}
