import XCTest
@testable import OffloadCore
import SplitMix

/// `ExtentCut` against the plain rule it replaces: the kept slices take a reference on
/// every block they touch, the whole extent drops one on every block it touches.
final class ExtentCutTests: XCTestCase {
    static let block = UInt64(BackingStore.blockSize)

    /// The net per-block change `ExtentCut` gives, and the plain rule's, over blocks 0..<16.
    static func counts(image: Range<UInt64>, dropped: Range<UInt64>) -> (cut: [Int], rule: [Int]) {
        var rule = [Int](repeating: 0, count: 16)
        func add(_ range: Range<UInt64>, _ delta: Int, to counts: inout [Int]) {
            guard !range.isEmpty else { return }
            for block in BackingStore.blocks(touchedBy: range) { counts[Int(block)] += delta }
        }
        add(image.lowerBound..<image.lowerBound + dropped.lowerBound, 1, to: &rule)
        add(image.lowerBound + dropped.upperBound..<image.upperBound, 1, to: &rule)
        add(image, -1, to: &rule)
        var cut = [Int](repeating: 0, count: 16)
        let change = ExtentCut(image: image, dropped: dropped)
        if let twice = change.heldTwice { add(twice, 1, to: &cut) }
        if let released = change.released { add(released, -1, to: &cut) }
        return (cut, rule)
    }

    func testNetReferencesMatchRetainingTheKeptSlicesAndReleasingTheWhole() {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<5_000 {
            let start = rng.next() % (8 * Self.block)
            let length = 1 + rng.next() % (6 * Self.block)
            let a = rng.next() % length, b = 1 + rng.next() % length
            let dropped = min(a, b - 1)..<max(a + 1, b)
            let (cut, rule) = Self.counts(image: start..<start + length, dropped: dropped)
            XCTAssertEqual(cut, rule, "image \(start..<start + length) dropped \(dropped)")
            if cut != rule { return }
        }
    }

    /// The edges random cuts rarely reach: block-aligned extents and cut points, cuts at
    /// the extent's start or end, the whole extent, one-byte extents, both cut points in
    /// one block.
    func testEdgesAgreeWithTheRule() {
        let b = Self.block
        let cases: [(image: Range<UInt64>, dropped: Range<UInt64>)] = [
            (0..<4 * b, 0..<4 * b),                 // the whole extent, aligned
            (100..<2 * b + 100, 0..<2 * b),         // the whole extent, unaligned
            (5..<6, 0..<1),                         // a one-byte extent
            (b..<5 * b, b..<2 * b),                 // one aligned block out of the middle
            (b..<5 * b, 0..<b),                     // the first block
            (b..<5 * b, 3 * b..<4 * b),             // the last block
            (b..<5 * b, 0..<3 * b),                 // a prefix, aligned
            (b..<5 * b, 100..<4 * b),               // a suffix from inside the first block
            (b..<5 * b, 100..<200),                 // inside one block: held twice
            (b..<5 * b, b..<b + 1),                 // one byte at a block's start
            (b..<5 * b, b - 1..<b),                 // one byte at a block's end
            (b..<5 * b, b - 1..<b + 1),             // two bytes across a boundary
            (b + 10..<3 * b + 10, b - 10..<b + 20), // unaligned extent, cut across its middle boundary
            (b + 10..<3 * b + 10, 0..<b - 10),      // up to the extent's first boundary
        ]
        for (image, dropped) in cases {
            let (cut, rule) = Self.counts(image: image, dropped: dropped)
            XCTAssertEqual(cut, rule, "image \(image) dropped \(dropped)")
        }
        XCTAssertNotNil(ExtentCut(image: b..<5 * b, dropped: 100..<200).heldTwice, "a cut inside one block")
        XCTAssertNil(ExtentCut(image: b..<5 * b, dropped: b..<2 * b).heldTwice)
    }
}
