import XCTest
@testable import OffloadCore
import SplitMix

/// `RangeSet.restricted(to:)` (the commit's way to find a set's values within one range
/// without walking the whole set) answers as the standard library's intersection does,
/// on random sets.
final class RangeSetRestrictedTests: XCTestCase {
    func testRestrictedAgreesWithTheStandardIntersectionOnRandomSets() {
        var rng = SplitMix64(seed: 77)
        for _ in 0..<2_000 {
            var set = RangeSet<UInt64>()
            for _ in 0..<Int(rng.next() % 40) {
                let start = rng.next() % 1_000
                set.insert(contentsOf: start..<start + 1 + rng.next() % 30)
            }
            let start = rng.next() % 1_100
            let range = start..<start + rng.next() % 200
            XCTAssertEqual(set.restricted(to: range), set.intersection(RangeSet(range)), "\(set) within \(range)")
            XCTAssertEqual(set.overlaps(range), !set.intersection(RangeSet(range)).isEmpty)
        }
    }
}
