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
                let at = map.insert(key, UInt64(step))
                XCTAssertEqual(map.key(at: at), key)
                XCTAssertEqual(map.value(at: at), UInt64(step))
                model[key] = UInt64(step)
            }
            if step % 997 == 0 {
                map.checkInvariants()
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

    /// Keys that arrive in order (a file written front to back, one extent per write; a
    /// gap filled front to back or back to front) leave full leaves, and no leaf's buffer
    /// grows past the leaf's limit. Before, a full
    /// leaf grew to 65 entries (its buffer doubled to 128) and was cut in two, so every
    /// leaf of such a file held 32 entries in a buffer of 66 to 128: about 130 bytes of
    /// the daemon's memory for each extent of an open file, against 32.
    func testKeysInOrderLeaveFullLeavesWithinTheirBuffers() {
        let limit = ChunkedSortedMap<UInt64>.maximumChunkCount
        for pattern in ["ascending", "ascending into a gap", "descending into a gap", "descending after a full leaf",
                        "random"] {
            let map = ChunkedSortedMap<UInt64>()
            var rng = SplitMix64(seed: 11)
            let n = limit * 1_000
            switch pattern {
            case "ascending":
                for key in 0..<UInt64(n) { map.insert(key * 8192, key) }
            case "ascending into a gap":
                map.insert(0, 0)
                map.insert(UInt64.max, 0)
                for key in 1...UInt64(n - 2) { map.insert(key, key) }
            case "descending into a gap":
                // A full first leaf, then keys in descending order just below its last.
                for key in 0..<UInt64(limit) { map.insert(key << 32, key) }
                var key = UInt64(limit - 1) << 32
                while map.count < n {
                    key -= 1
                    map.insert(key, key)
                }
            case "descending after a full leaf":
                // A full first leaf and a key far after it, then keys in descending order
                // between the two (each past the full leaf's last).
                for key in 0..<UInt64(limit) { map.insert(key, key) }
                map.insert(UInt64.max, 0)
                var key = UInt64.max
                while map.count < n {
                    key -= 1
                    map.insert(key, key)
                }
            default:
                while map.count < n {
                    let key = rng.next() >> 8
                    if map.find(key) == nil { map.insert(key, key) }
                }
            }
            map.checkInvariants()
            XCTAssertEqual(map.count, n, pattern)
            let shapes = map.leafShapes
            let fullest = shapes.map(\.capacity).max() ?? 0
            XCTAssertLessThan(fullest, 2 * limit, "\(pattern): a leaf's buffer doubled past the limit")
            if pattern == "random" {
                XCTAssertLessThan(shapes.count, n / (limit / 2) + 2, "random keys keep leaves at least half full")
            } else {
                XCTAssertLessThanOrEqual(shapes.count, n / limit + 2, "\(pattern): keys in order fill their leaves")
            }
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
        XCTAssertEqual(free.takeFront(ofRunOfAtLeast: 1, upTo: 6), 15..<20)
        XCTAssertEqual(free.freeBlocks, 0)
    }

    /// The block tree's coverage of pending frees and touched blocks against a per-block
    /// count array: adds (reporting what was uncovered), removes (refusing what is not
    /// covered), and the queries the group summaries ask.
    func testBlockCoverageMatchesAPerBlockCount() {
        var rng = SplitMix64(seed: 11)
        let coverage = BlockCoverage()
        var counts = [Int](repeating: 0, count: 300)
        var refused = 0, newlyCoveredSeen = 0
        func ranges(where predicate: (Int) -> Bool, in range: Range<Int>) -> [Range<UInt64>] {
            var found: [Range<UInt64>] = []
            for i in range where predicate(i) {
                if let last = found.last, last.upperBound == UInt64(i) { found[found.count - 1] = last.lowerBound..<UInt64(i + 1) } else { found.append(UInt64(i)..<UInt64(i + 1)) }
            }
            return found
        }
        for step in 0..<20_000 {
            let start = Int(rng.next() % 290), length = 1 + Int(rng.next() % 10)
            let range = start..<start + length, blocks = UInt64(start)..<UInt64(start + length)
            if rng.next() % 2 == 0 {
                let expected = ranges(where: { counts[$0] == 0 }, in: range)
                XCTAssertEqual(coverage.add(blocks), expected, "step \(step): add \(blocks)")
                newlyCoveredSeen += expected.count
                for i in range { counts[i] += 1 }
            } else {
                let allCovered = range.allSatisfy { counts[$0] > 0 }
                XCTAssertEqual(coverage.remove(blocks), allCovered, "step \(step): remove \(blocks)")
                if allCovered { for i in range { counts[i] -= 1 } } else { refused += 1 }
            }
            let probe = Int(rng.next() % 300), end = probe + Int(rng.next() % UInt64(300 - probe))
            XCTAssertEqual(coverage.covered(in: UInt64(probe)..<UInt64(end)), ranges(where: { counts[$0] > 0 }, in: probe..<end))
            let below = (0..<probe).last { counts[$0] > 0 }.map { UInt64($0 + 1) }
            XCTAssertEqual(coverage.coveredEnd(below: UInt64(probe)), below, "step \(step): covered end below \(probe)")
            XCTAssertEqual(coverage.coveredStart(atOrAbove: UInt64(probe)), (probe..<300).first { counts[$0] > 0 }.map { UInt64($0) })
        }
        XCTAssertGreaterThan(refused, 500)
        XCTAssertGreaterThan(newlyCoveredSeen, 1000)
        XCTAssertEqual(coverage.isEmpty, counts.allSatisfy { $0 == 0 })
    }
}
