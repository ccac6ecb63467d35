import Foundation
import Glibc
import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// The commit's placed bytes written in runs (`PlacedBytesWriter`) and the write into
/// fresh blocks that does not fault the mapping (`ImageStorage.writeFresh`;
/// docs/ARCHITECTURE.md, "Placed bytes written in runs").
final class PlacedBytesWriterTests: XCTestCase {
    /// Random pieces in consecutive blocks, with gaps now and then: the image ends up with
    /// each piece at its offset and zeros elsewhere, and the writes are one per run of
    /// consecutive blocks (split where a run would pass the limit), not one per piece.
    func testPiecesInConsecutiveBlocksAreWrittenAsOneRunEach() throws {
        let block = BackingStore.blockSize
        for seed in 0..<8 {
            var generator = SplitMix64(seed: UInt64(seed))
            let storage = MemoryImageStorage(maximumBytes: 8 << 20)
            try storage.setLength(8 << 20)
            var expected = [UInt8](repeating: 0, count: 8 << 20)
            var writer = PlacedBytesWriter(storage: storage)
            var offset = 0
            var runs = 0
            var run: Range<Int>?
            for index in 0..<200 {
                let count = Int.random(in: 1...(3 * block), using: &generator)
                if Int.random(in: 0..<16, using: &generator) == 0 {
                    offset += block * Int.random(in: 1...4, using: &generator)  // a gap
                }
                let end = offset + (count + block - 1) / block * block
                let piece = (0..<count).map { UInt8(truncatingIfNeeded: $0 &+ index &* 31 &+ seed &+ 1) }
                // A run goes on at its end while it stays within the limit; else a new one.
                if let current = run, current.upperBound == offset, current.count + count <= PlacedBytesWriter.runLimit {
                    run = current.lowerBound..<end
                } else {
                    runs += 1
                    run = offset..<end
                }
                try piece.withUnsafeBytes { raw in
                    try Result { () throws(FSError) in try writer.add(raw, at: UInt64(offset)) }.get()
                }
                expected.replaceSubrange(offset..<offset + count, with: piece)
                offset = end
            }
            try Result { () throws(FSError) in try writer.flush() }.get()
            XCTAssertEqual(storage.bytes, expected, "seed \(seed)")
            XCTAssertEqual(writer.writes, runs, "seed \(seed): one write a run")
            try Result { () throws(FSError) in try writer.flush() }.get()
            XCTAssertEqual(writer.writes, runs, "a second flush writes nothing")
        }
    }

    /// `writeFresh` on the image file: the bytes are there for the mapping at once (the
    /// same page cache), the rest of the page stays zero, and a read-only image refuses it.
    func testAFreshWriteIsSeenThroughTheMapping() throws {
        let image = TemporaryImage()
        let bytes = (0..<100).map { UInt8($0 + 1) }
        do {
            let storage = try FileImageStorage(path: image.path)
            try storage.reserve(0..<(1 << 20))
            let mapping = try storage.map(byteCount: 1 << 20)
            try bytes.withUnsafeBytes { raw in
                try Result { () throws(FSError) in try storage.writeFresh(raw, at: 8192) }.get()
            }
            let seen = UnsafeRawBufferPointer(start: mapping + 8192, count: 4096)
            XCTAssertEqual(Array(seen.prefix(100)), bytes)
            XCTAssertTrue(seen.dropFirst(100).allSatisfy { $0 == 0 })
        }

        let readOnly = try FileImageStorage(path: image.path, readOnly: true)
        XCTAssertThrowsError(try bytes.withUnsafeBytes { raw in
            try Result { () throws(FSError) in try readOnly.writeFresh(raw, at: 0) }.get()
        }) { XCTAssertEqual($0 as? FSError, .readOnly) }
    }
}
