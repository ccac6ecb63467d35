import XCTest
@testable import OffloadCore
import SplitMix

/// `BlockRanges` against the standard library's `RangeSet` as the model: random inserts,
/// removals, unions and subtractions, and every query after each, with the ranges kept
/// sorted, disjoint and not touching (so equal sets have equal arrays).
final class BlockRangesTests: XCTestCase {
    func testRandomChangesAndQueriesAgreeWithRangeSet() {
        var rng = SplitMix64(seed: 5)
        func randomRange(_ span: UInt64 = 400) -> Range<UInt64> {
            let start = rng.next() % span
            return start..<start + rng.next() % 40
        }
        for round in 0..<300 {
            var set = BlockRanges(), model = RangeSet<UInt64>()
            for step in 0..<60 {
                let range = randomRange()
                switch rng.next() % 4 {
                case 0, 1:
                    set.insert(contentsOf: range); model.insert(contentsOf: range)
                case 2:
                    set.remove(contentsOf: range); model.remove(contentsOf: range)
                default:
                    var other = RangeSet<UInt64>()
                    for _ in 0..<Int(rng.next() % 4) { other.insert(contentsOf: randomRange()) }
                    if rng.next() % 2 == 0 {
                        set.formUnion(BlockRanges(other)); model.formUnion(other)
                    } else {
                        set.subtract(BlockRanges(other)); model.subtract(other)
                    }
                }
                let context = "round \(round) step \(step)"
                XCTAssertEqual(set.rangeSet, model, context)
                XCTAssertEqual(set.ranges, Array(model.ranges), "not kept coalesced: \(context)")
                let probe = randomRange(440)
                XCTAssertEqual(set.overlaps(probe), !model.intersection(RangeSet(probe)).isEmpty, context)
                XCTAssertEqual(set.containsAll(probe), RangeSet(probe).isSubset(of: model), context)
                XCTAssertEqual(set.restricted(to: probe).ranges, Array(model.intersection(RangeSet(probe)).ranges), context)
                XCTAssertEqual(set.complement(within: probe).ranges, Array(RangeSet(probe).subtracting(model).ranges), context)
                let block = rng.next() % 440
                XCTAssertEqual(set.contains(block), model.contains(block), context)
                var other = RangeSet<UInt64>()
                for _ in 0..<Int(rng.next() % 5) { other.insert(contentsOf: randomRange(440)) }
                XCTAssertEqual(set.intersection(BlockRanges(other)).ranges, Array(model.intersection(other).ranges), context)
                if set.rangeSet != model { return }
            }
        }
    }
}
