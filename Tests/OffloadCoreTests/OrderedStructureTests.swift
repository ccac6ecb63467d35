import XCTest
@testable import OffloadCore
import SplitMix

/// The ordered maps under the extent list and the allocator, against plain models.
final class OrderedStructureTests: XCTestCase {
    func testChunkedSortedMapMatchesASortedDictionary() {
        var rng = SplitMix64(seed: 7)
        let map = ChunkedSortedMap<UInt64>()
        var model: [UInt64: UInt64] = [:]
        for step in 0..<60_000 {
            let key = rng.next() % 5_000
            if rng.next() % 3 == 0, let i = map.find(key) {
                map.remove(at: i)
                model[key] = nil
            } else if map.find(key) == nil {
                map.insert(key, UInt64(step))
                model[key] = UInt64(step)
            }
            if step % 997 == 0 {
                var listed: [(UInt64, UInt64)] = []
                map.forEach { listed.append(($0, $1)) }
                XCTAssertEqual(listed.map(\.0), model.keys.sorted())
                XCTAssertEqual(listed.map(\.1), model.keys.sorted().map { model[$0]! })
            }
            guard step % 25 == 0 else { continue }
            let probe = rng.next() % 5_100
            let expectedFloor = model.keys.filter { $0 <= probe }.max()
            XCTAssertEqual(map.floor(probe).map(map.key(at:)), expectedFloor)
            let expectedCeiling = model.keys.filter { $0 >= probe }.min()
            XCTAssertEqual(map.ceiling(probe).map(map.key(at:)), expectedCeiling)
            if step % 5_000 == 0 { XCTAssertEqual(map.count, model.count) }
        }
    }

    func testBlockReferenceCountsMatchAPerBlockArray() {
        var rng = SplitMix64(seed: 11)
        let counts = BlockReferenceCounts()
        var model = [UInt32](repeating: 0, count: 600)
        for _ in 0..<40_000 {
            let start = UInt64(rng.next() % 590)
            let end = start + 1 + rng.next() % 10
            let range = start..<end
            let slice = model[Int(start)..<Int(end)]
            switch rng.next() % 3 {
            case 0 where slice.allSatisfy({ $0 == 0 }):
                counts.insertAllocated(range)
                for b in range { model[Int(b)] = 1 }
            case 1 where slice.allSatisfy({ $0 > 0 }):
                counts.retain(range)
                for b in range { model[Int(b)] += 1 }
            case 2 where slice.allSatisfy({ $0 > 0 }):
                let freed = counts.release(range)
                var expectedFreed: [UInt64] = []
                for b in range {
                    model[Int(b)] -= 1
                    if model[Int(b)] == 0 { expectedFreed.append(b) }
                }
                XCTAssertEqual(freed.flatMap { Array($0) }, expectedFreed)
            default:
                XCTAssertEqual(counts.isAllocated(range), slice.allSatisfy { $0 > 0 })
                XCTAssertEqual(counts.isExclusive(range), slice.allSatisfy { $0 == 1 })
            }
        }
        for b in 0..<600 { XCTAssertEqual(counts.count(of: UInt64(b)), model[b]) }
        XCTAssertEqual(counts.allocatedBlocks, UInt64(model.filter { $0 > 0 }.count))
        var previous: (Range<UInt64>, UInt32)?
        counts.forEachRun { range, count in
            if let (r, c) = previous, r.upperBound == range.lowerBound {
                XCTAssertNotEqual(c, count, "adjacent runs with equal counts must be coalesced")
            }
            previous = (range, count)
        }
    }

    func testFreeSpaceMapCoalescesAndFits() {
        let free = FreeSpaceMap()
        free.insert(10..<20)
        free.insert(30..<40)
        free.insert(20..<30)
        XCTAssertEqual(free.rangeCount, 1)
        XCTAssertEqual(free.freeBlocks, 30)
        XCTAssertEqual(free.take(count: 5), 10..<15)
        XCTAssertEqual(free.take(at: 20, upTo: 100), 20..<40)
        XCTAssertNil(free.take(count: 6))
        XCTAssertEqual(free.takeLargest(upTo: 6), 15..<20)
        XCTAssertEqual(free.freeBlocks, 0)
    }
}
