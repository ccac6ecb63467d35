import XCTest
import OffloadCore
@testable import OffloadNamespace

/// `read(inode:handle:offset:count:_:)`: the pieces the FUSE bridge answers READ with.
final class ReadRegionsTests: XCTestCase {
    /// The kinds of the pieces, in order, and the bytes they add up to.
    private func read(_ f: Fixture, _ inode: InodeNumber, _ handle: FileHandle, offset: UInt64,
                      count: Int) throws -> (kinds: [String], bytes: [UInt8]) {
        var calls = 0
        let result = try f.fs.read(inode: inode, handle: handle, offset: offset, count: count) {
            regions -> (kinds: [String], bytes: [UInt8]) in
            calls += 1
            var kinds: [String] = []
            var bytes: [UInt8] = []
            for region in regions {
                switch region {
                case .image(let buffer):
                    kinds.append("image")
                    bytes += buffer
                case .fill(let value, let count):
                    kinds.append("fill")
                    bytes += repeatElement(value, count: count)
                case .memory(let slice):
                    kinds.append("memory")
                    bytes += slice
                }
            }
            return (kinds, bytes)
        }
        XCTAssertEqual(calls, 1, "the body runs exactly once")
        return result
    }

    func testPiecesOfImageHoleAndMemoryAddUpToTheCopyingRead() throws {
        // 16 KiB of budget: the 100-byte tail write stays in RAM, the 8 KiB goes to the image.
        let f = try Fixture(memoryLimitBytes: 16 << 10)
        let (attributes, handle) = try f.create("f")
        let inode = attributes.inode
        XCTAssertEqual(try f.write(inode, handle, at: 0, pattern(8192)), 8192)
        XCTAssertEqual(try f.write(inode, handle, at: 20_000, pattern(100, seed: 7)), 100)
        var expected = pattern(8192) + [UInt8](repeating: 0, count: 20_000 - 8192) + pattern(100, seed: 7)

        let whole = try read(f, inode, handle, offset: 0, count: 1 << 20)
        XCTAssertEqual(whole.kinds, ["image", "fill", "memory"])
        XCTAssertEqual(whole.bytes, expected)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 0, count: 1 << 20), expected)

        // A window starting inside the image piece and ending inside the RAM piece.
        let window = try read(f, inode, handle, offset: 8000, count: 12_050)
        XCTAssertEqual(window.kinds, ["image", "fill", "memory"])
        XCTAssertEqual(window.bytes, Array(expected[8000..<20_050]))

        // Only the hole.
        let hole = try read(f, inode, handle, offset: 10_000, count: 4096)
        XCTAssertEqual(hole.kinds, ["fill"])
        XCTAssertEqual(hole.bytes, [UInt8](repeating: 0, count: 4096))

        // An overwrite is seen by the next read.
        XCTAssertEqual(try f.write(inode, handle, at: 10, [9, 9, 9]), 3)
        expected.replaceSubrange(10..<13, with: [9, 9, 9])
        XCTAssertEqual(try read(f, inode, handle, offset: 0, count: 1 << 20).bytes, expected)
        f.fs.release(inode: inode, handle: handle)
    }

    func testAtAndPastEndOfFileTheBodyGetsNoPieces() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        XCTAssertEqual(try f.write(attributes.inode, handle, at: 0, pattern(100)), 100)
        for offset: UInt64 in [100, 101, 1 << 40, OffloadedFile.maximumSize] {
            let result = try read(f, attributes.inode, handle, offset: offset, count: 4096)
            XCTAssertEqual(result.kinds, [], "offset \(offset)")
        }
        XCTAssertEqual(try read(f, attributes.inode, handle, offset: 0, count: 0).kinds, [])
        XCTAssertEqual(try read(f, attributes.inode, handle, offset: 90, count: 4096).bytes, Array(pattern(100)[90...]))
        f.fs.release(inode: attributes.inode, handle: handle)
    }

    func testBadHandleOrNegativeCountThrowsWithoutCallingTheBody() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        let other = try f.makeFile("g", contents: pattern(10))
        var called = false
        assertThrows(.badHandle) {
            try f.fs.read(inode: attributes.inode, handle: FileHandle(424_242), offset: 0, count: 1) { _ in called = true }
        }
        assertThrows(.badHandle) {
            try f.fs.read(inode: other, handle: handle, offset: 0, count: 1) { _ in called = true }
        }
        assertInvalidArgument {
            try f.fs.read(inode: attributes.inode, handle: handle, offset: 0, count: -1) { _ in called = true }
        }
        XCTAssertFalse(called)
        f.fs.release(inode: attributes.inode, handle: handle)
    }
}
