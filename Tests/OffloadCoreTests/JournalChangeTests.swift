import XCTest
@testable import OffloadCore
import SplitMix

/// Format 2's journal changes (`JournalChange`): random frames of changes round-trip, and
/// damaged or random payloads are refused without trapping.
final class JournalChangeTests: XCTestCase {
    func testRandomFramesOfChangesRoundTrip() throws {
        var random = SplitMix64(seed: 21)
        for _ in 0..<3000 {
            let changes = (0..<Int.random(in: 1...6, using: &random)).map { _ in randomChange(&random) }
            var w = ByteWriter()
            for change in changes { change.encode(into: &w) }
            let decoded = try w.bytes.withUnsafeBytes { try JournalChange.decodeAll($0) }
            XCTAssertEqual(decoded, changes)
        }
    }

    /// A payload cut anywhere inside a change is refused (a torn frame never decodes as a
    /// shorter valid one, except where the cut falls between two changes), and random
    /// bytes either are refused or re-encode to themselves.
    func testCutAndRandomPayloadsAreRefusedWithoutTrapping() {
        var random = SplitMix64(seed: 22)
        for _ in 0..<300 {
            let change = randomChange(&random)
            var w = ByteWriter()
            change.encode(into: &w)
            for length in 1..<w.bytes.count {
                let prefix = Array(w.bytes[..<length])
                XCTAssertThrowsError(try prefix.withUnsafeBytes { try JournalChange.decodeAll($0) },
                                     "\(change) cut at \(length) of \(w.bytes.count) bytes")
            }
        }
        for _ in 0..<20000 {
            let bytes = [UInt8(Int.random(in: 1...9, using: &random))]
                + (0..<Int.random(in: 0...120, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            if let changes = try? bytes.withUnsafeBytes({ try JournalChange.decodeAll($0) }) {
                var w = ByteWriter()
                for change in changes { change.encode(into: &w) }
                XCTAssertEqual(w.bytes, bytes)
            }
        }
    }

    /// The smallest file range there is, a RAM piece of a few bytes alone in its frame,
    /// decodes (the piece-count bound once assumed 10 bytes a piece and refused it).
    func testATinyRamPieceAloneInAFrameDecodes() throws {
        for length in 1...8 {
            let change = JournalChange.fileRange(inode: 5, size: UInt64(length), range: 0..<UInt64(length),
                                                 pieces: [FilePiece(offset: 0, extent: .inMemory([UInt8](repeating: 7, count: length)))])
            var w = ByteWriter()
            change.encode(into: &w)
            XCTAssertEqual(try w.bytes.withUnsafeBytes { try JournalChange.decodeAll($0) }, [change], "\(length) bytes")
        }
    }

    func testChangesReplayCouldNotTrustAreRefused() {
        func refused(_ change: JournalChange, _ what: String) {
            var w = ByteWriter()
            change.encodeUnchecked(into: &w)
            XCTAssertThrowsError(try w.bytes.withUnsafeBytes { try JournalChange.decodeAll($0) }, what)
        }
        refused(.fileRange(inode: 5, size: 100, range: 0..<100, pieces: [FilePiece(offset: 0, extent: .repeatingBytes(value: 0, count: 60))]),
                "pieces that stop short of the range's end")
        refused(.fileRange(inode: 5, size: 100, range: 0..<100, pieces: [
            FilePiece(offset: 0, extent: .repeatingBytes(value: 0, count: 60)),
            FilePiece(offset: 60, extent: .mmapOffload(offset: 4096, size: 50)),
        ]), "pieces that run past the range")
        var backwards = ByteWriter()   // a range 20..<10: the end field (bytes 25..<33) lowered by hand
        JournalChange.fileRange(inode: 5, size: 10, range: 20..<20, pieces: []).encode(into: &backwards)
        var bytes = backwards.bytes
        bytes[25] = 10
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try JournalChange.decodeAll($0) }, "a range that ends before it starts")
        refused(.link(directory: 1, NamedEntry(name: Array("a".utf8), child: 2, type: 8, index: 2)), "index 2 (\"..\")")
        refused(.link(directory: 1, NamedEntry(name: Array("..".utf8), child: 2, type: 4, index: 3)), "the name \"..\"")
        refused(.unlink(directory: 0, NamedEntry(name: Array("a".utf8), child: 2, type: 8, index: 3)), "directory 0")
        refused(.drop(inode: ReservedObject.orphans), "a reserved object as an inode")
        refused(.setXattr(inode: 3, name: [], value: [1]), "an empty xattr name")
        refused(.symlinkTarget(inode: 3, [0x61, 0, 0x62]), "a target with a NUL")
    }

    // MARK: - Random changes

    private func randomChange(_ random: inout SplitMix64) -> JournalChange {
        let inode = UInt64.random(in: 1...1_000_000_000, using: &random)
        func name() -> [UInt8] { (0..<Int.random(in: 1...40, using: &random)).map { _ in UInt8.random(in: 0x61...0x7a, using: &random) } }
        func bytes(_ limit: Int) -> [UInt8] { (0..<Int.random(in: 1...limit, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) } }
        func entry() -> NamedEntry {
            NamedEntry(name: name(), child: UInt64.random(in: 1...1_000_000, using: &random), type: 8,
                       index: UInt64.random(in: 3...UInt64.max, using: &random))
        }
        switch Int.random(in: 0..<10, using: &random) {
        case 0:
            let time = RecordTime(seconds: Int64.random(in: -1_000_000...2_000_000_000, using: &random), nanoseconds: 5)
            return .attributes(inode: inode, InodeItem(type: 8, permissions: 0o644, uid: 1, gid: 2, linkCount: 1,
                                                       size: random.next() >> 1, rdev: 0, accessTime: time, modificationTime: time,
                                                       changeTime: time, birthTime: time, parent: 0, nextIndex: 0))
        case 1: return .link(directory: inode, entry())
        case 2: return .unlink(directory: inode, entry())
        case 3: return .setXattr(inode: inode, name: Array("user.".utf8) + name(), value: Bool.random(using: &random) ? [] : bytes(3000))
        case 4: return .removeXattr(inode: inode, name: Array("trusted.".utf8) + name())
        case 5: return .symlinkTarget(inode: inode, (0..<Int.random(in: 1...4095, using: &random)).map { _ in UInt8.random(in: 1...255, using: &random) })
        case 6:
            let start = UInt64.random(in: 0...(1 << 40), using: &random)
            var cursor = start
            var pieces: [FilePiece] = []
            for _ in 0..<Int.random(in: 0...8, using: &random) {
                let extent: Extent
                switch Int.random(in: 0..<3, using: &random) {
                case 0: extent = .mmapOffload(offset: UInt64.random(in: 0...(1 << 40), using: &random), size: UInt64.random(in: 1...(1 << 30), using: &random))
                case 1: extent = .repeatingBytes(value: UInt8.random(in: 0...255, using: &random), count: UInt64.random(in: 1...(1 << 30), using: &random))
                default: extent = .inMemory(bytes(4096))
                }
                pieces.append(FilePiece(offset: cursor, extent: extent))
                cursor += extent.size
            }
            return .fileRange(inode: inode, size: cursor + UInt64.random(in: 0...100, using: &random), range: start..<cursor, pieces: pieces)
        case 7: return .orphan(inode: inode, OrphanItem(state: .truncating, resumeOffset: random.next(), targetSize: random.next()))
        case 8: return .orphan(inode: inode, nil)
        default: return .drop(inode: inode)
        }
    }
}
