import XCTest
@testable import OffloadCore

/// Metadata chains nobody wrote: what the reader must refuse, below the namespace. The
/// whole open path on hostile images is in OffloadNamespaceTests.HostileImageTests.
final class HostileMetadataTests: XCTestCase {
    static let block = UInt64(BackingStore.blockSize)

    /// A link to a segment that overlaps one already read (another start, shared blocks)
    /// ends the chain: otherwise the shared blocks count twice as metadata, and a hostile
    /// chain could make the reader read the same bytes over and over.
    func testALinkToASegmentOverlappingOneAlreadyReadEndsTheChain() {
        // Segment A: blocks 2 and 3. Frame 0 (records), then a link to segment B = block 3
        // alone, inside A, where frame 2 waits with a good checksum.
        var image = [UInt8](repeating: 0, count: Int(4 * Self.block))
        var frames = ByteWriter()
        ([1, 2, 3] as [UInt8]).withUnsafeBytes {
            FrameHeader.encode(imageID: 9, stream: 0, sequence: 0, kind: .records, payload: $0, into: &frames)
        }
        var link = ByteWriter()
        LogSegment(start: 3 * Self.block, length: Self.block).encodeLink(into: &link)
        link.bytes.withUnsafeBytes {
            FrameHeader.encode(imageID: 9, stream: 0, sequence: 1, kind: .link, payload: $0, into: &frames)
        }
        image.replaceSubrange(Int(2 * Self.block)..<Int(2 * Self.block) + frames.count, with: frames.bytes)
        var inside = ByteWriter()
        ([4, 5] as [UInt8]).withUnsafeBytes {
            FrameHeader.encode(imageID: 9, stream: 0, sequence: 2, kind: .records, payload: $0, into: &inside)
        }
        image.replaceSubrange(Int(3 * Self.block)..<Int(3 * Self.block) + inside.count, with: inside.bytes)

        var reader = MetadataLogReader(imageID: 9, stream: 0, firstSequence: 0,
                                       head: LogSegment(start: 2 * Self.block, length: 2 * Self.block),
                                       fileBytes: UInt64(image.count)) { offset, count in
            Array(image[Int(offset)..<min(Int(offset) + count, image.count)])
        }
        guard case .records(let first) = reader.next() else { return XCTFail("frame 0 was not read") }
        XCTAssertEqual(first, [1, 2, 3])
        guard case .end(let reason) = reader.next() else { return XCTFail("the chain went on into blocks already read") }
        XCTAssertTrue(reason.contains("overlaps"), reason)
        XCTAssertEqual(reader.segments.count, 1)
    }

    /// Frames numbered at the end of UInt64 (checksums good) made the reader's expected
    /// sequence number overflow. No writer gets there: such a frame is not a frame.
    func testAFrameNumberedPastInt64MaxIsNotAFrame() {
        var frames = ByteWriter()
        for sequence in [UInt64.max - 1, .max] {
            ([7] as [UInt8]).withUnsafeBytes {
                FrameHeader.encode(imageID: 9, stream: 0, sequence: sequence, kind: .records, payload: $0, into: &frames)
            }
        }
        var image = [UInt8](repeating: 0, count: Int(3 * Self.block))
        image.replaceSubrange(Int(2 * Self.block)..<Int(2 * Self.block) + frames.count, with: frames.bytes)
        var reader = MetadataLogReader(imageID: 9, stream: 0, firstSequence: .max - 1,
                                       head: LogSegment(start: 2 * Self.block, length: Self.block),
                                       fileBytes: UInt64(image.count)) { offset, count in
            Array(image[Int(offset)..<min(Int(offset) + count, image.count)])
        }
        for _ in 0..<3 {
            if case .end = reader.next() { return }
        }
        XCTFail("frames numbered past 2^63 - 1 were read")
    }
}
