import CLinuxShims
import XCTest
@testable import OffloadCore
@testable import OffloadNamespace

/// When the maintenance gives the heap's free memory back (`HeapTrim`): always at rest;
/// under load only over the budget, and not again after a trim that found the memory in
/// use until it grows. And the trim gives back memory freed among chunks still in use,
/// which glibc keeps otherwise.
final class HeapTrimTests: XCTestCase {
    static let MiB: UInt64 = 1 << 20

    func testUnderLoadOnlyOverTheBudgetAndNotAgainAfterAFutileTrimUntilTheMemoryGrows() {
        let MiB = Self.MiB
        XCTAssertEqual(HeapTrim.budget(inodes: 4096, heldBytes: 3 << 20), 64 * MiB + 1 * MiB + 3 * MiB)
        XCTAssertTrue(HeapTrim.isDue(atRest: true, anonymous: 10 * MiB, budget: 100 * MiB, lastAfter: 50 * MiB, lastReleased: 0),
                      "at rest, whatever the figures")
        XCTAssertFalse(HeapTrim.isDue(atRest: false, anonymous: 99 * MiB, budget: 100 * MiB, lastAfter: 0, lastReleased: 90 * MiB),
                       "under the budget")
        XCTAssertTrue(HeapTrim.isDue(atRest: false, anonymous: 101 * MiB, budget: 100 * MiB, lastAfter: 100 * MiB,
                                     lastReleased: 8 * MiB), "over it, after a trim that gave back 8 MiB")
        XCTAssertFalse(HeapTrim.isDue(atRest: false, anonymous: 107 * MiB, budget: 100 * MiB, lastAfter: 100 * MiB,
                                      lastReleased: 1 * MiB), "after a futile trim, grown less than 8 MiB")
        XCTAssertTrue(HeapTrim.isDue(atRest: false, anonymous: 108 * MiB, budget: 100 * MiB, lastAfter: 100 * MiB,
                                     lastReleased: 1 * MiB), "grown 8 MiB since")
        // A tick with no commit: when 8 MiB more is free in the heap than at its lowest
        // since the last trim, at rest or over the budget.
        XCTAssertTrue(HeapTrim.isDueWithoutCommit(atRest: true, anonymous: 10 * MiB, budget: 100 * MiB, freeInHeap: 10 * MiB,
                                                  lowestFree: 2 * MiB, lastAfter: 10 * MiB))
        XCTAssertFalse(HeapTrim.isDueWithoutCommit(atRest: true, anonymous: 10 * MiB, budget: 100 * MiB, freeInHeap: 40 * MiB,
                                                   lowestFree: 33 * MiB, lastAfter: 10 * MiB), "freed little since")
        XCTAssertTrue(HeapTrim.isDueWithoutCommit(atRest: true, anonymous: 50 * MiB, budget: 100 * MiB, freeInHeap: 40 * MiB,
                                                  lowestFree: 40 * MiB, lastAfter: 10 * MiB), "used and freed again between looks")
        XCTAssertFalse(HeapTrim.isDueWithoutCommit(atRest: true, anonymous: 50 * MiB, budget: 100 * MiB, freeInHeap: 1 * MiB,
                                                   lowestFree: 1 * MiB, lastAfter: 10 * MiB), "grown, but in use")
        XCTAssertFalse(HeapTrim.isDueWithoutCommit(atRest: false, anonymous: 99 * MiB, budget: 100 * MiB, freeInHeap: 50 * MiB,
                                                   lowestFree: 0, lastAfter: 0), "under load, within the budget")
        XCTAssertTrue(HeapTrim.isDueWithoutCommit(atRest: false, anonymous: 101 * MiB, budget: 100 * MiB, freeInHeap: 50 * MiB,
                                                  lowestFree: 0, lastAfter: 101 * MiB))
    }

    /// Memory freed with no change to commit (closed files, forgotten inodes): the trim of
    /// a tick that commits nothing finds it free in the heap and gives it back; with
    /// nothing freed since, it is not due.
    func testATickWithoutACommitGivesBackWhatWasFreedSince() throws {
        _ = offloadfs_release_free_memory()
        guard ProcessMemory.anonymousResidentBytes() != nil else { throw XCTSkip("no /proc/self/statm") }
        let kept = Self.freedChunksAmongKeptOnes()
        defer { for pointer in kept { pointer.deallocate() } }
        XCTAssertGreaterThan(UInt64(offloadfs_heap_free_bytes()), 60 * Self.MiB, "the freed chunks are free in the heap")
        let trim = HeapTrim()
        XCTAssertNil(trim.withoutCommit(atRest: false, budget: .max, holdings: (5, 1)), "under load, within the budget: no look")
        let first = try XCTUnwrap(trim.withoutCommit(atRest: true, budget: .max, holdings: (5, 0)),
                                  "at rest, with 76 MiB free in the heap")
        XCTAssertGreaterThan(first.releasedBytes, 40 * Self.MiB, "the trim gave back \(first.releasedBytes) bytes")
        XCTAssertNil(trim.withoutCommit(atRest: true, budget: .max, holdings: (4, 0)),
                     "nothing freed since (the pages given back stay counted free)")
        XCTAssertNil(trim.withoutCommit(atRest: true, budget: .max, holdings: (4, 0)),
                     "the look on the tick after a change finds nothing freed either")
        let kept2 = Self.freedChunksAmongKeptOnes()
        defer { for pointer in kept2 { pointer.deallocate() } }
        XCTAssertNil(trim.withoutCommit(atRest: true, budget: .max, holdings: (4, 0)), "the holdings did not change: no look")
        XCTAssertNotNil(trim.withoutCommit(atRest: true, budget: .max, holdings: (3, 0)),
                        "they did: the chunks were used (the memory grew) and freed again")
        // Memory a change frees after the tick that saw it (a file unloaded after its
        // handle went) goes back on the next tick, which looks again.
        let kept3 = Self.freedChunksAmongKeptOnes()
        defer { for pointer in kept3 { pointer.deallocate() } }
        XCTAssertNotNil(trim.withoutCommit(atRest: true, budget: .max, holdings: (3, 0)),
                        "the tick after a change looks again and gives back what was freed since")
        let kept4 = Self.freedChunksAmongKeptOnes()
        defer { for pointer in kept4 { pointer.deallocate() } }
        XCTAssertNil(trim.withoutCommit(atRest: true, budget: .max, holdings: (3, 0)), "and only that one tick")
    }

    /// `largeChunksAmongSmallOnes` with the large chunks freed at once; returns the small
    /// ones, for the caller to free.
    private static func freedChunksAmongKeptOnes() -> [UnsafeMutableRawPointer] {
        let (kept, freed) = largeChunksAmongSmallOnes()
        for pointer in freed { pointer.deallocate() }
        return kept
    }

    /// 20,000 chunks of 4,000 bytes freed among 5,000 small ones kept (one after every
    /// four), as a commit frees the RAM bytes it placed and the changes it wrote among the
    /// inodes' objects: `free` keeps them (no heap top is free), the trim gives back the
    /// whole pages among them, and the next one, finding none, is not due again.
    func testATrimGivesBackChunksFreedAmongChunksInUse() throws {
        // What earlier tests freed goes first: the chunks below would reuse it, resident,
        // and not grow the figure.
        _ = offloadfs_release_free_memory()
        guard let start = ProcessMemory.anonymousResidentBytes() else { throw XCTSkip("no /proc/self/statm") }
        var (kept, freed) = Self.largeChunksAmongSmallOnes()
        defer { for pointer in kept { pointer.deallocate() } }
        let grown = try XCTUnwrap(ProcessMemory.anonymousResidentBytes())
        XCTAssertGreaterThan(grown, start + 60 * Self.MiB, "setup: 76 MiB allocated")
        for pointer in freed { pointer.deallocate() }
        freed = []
        let heldAfterFree = try XCTUnwrap(ProcessMemory.anonymousResidentBytes())
        XCTAssertGreaterThan(heldAfterFree, start + 60 * Self.MiB, "setup: free() alone gave most of it back")

        let trim = HeapTrim()
        let first = try XCTUnwrap(trim.afterCommit(atRest: false, budget: 0, nodeCache: nil), "over a budget of 0, not due")
        XCTAssertGreaterThan(first.releasedBytes, 40 * Self.MiB, "the trim gave back \(first.releasedBytes) bytes")
        let second = try XCTUnwrap(trim.afterCommit(atRest: false, budget: 0, nodeCache: nil), "the first gave back much")
        XCTAssertLessThan(second.releasedBytes, HeapTrim.growthBytes)
        XCTAssertNil(trim.afterCommit(atRest: false, budget: 0, nodeCache: nil), "a futile trim, no growth since")
        print("heap trim: \(first.releasedBytes >> 20) MiB given back in \(Int(first.seconds * 1e6)) us")
    }

    /// 20,000 chunks of 4,000 bytes (to be freed) among 5,000 of 64 bytes (kept), one
    /// after every four: freeing the large ones leaves no free heap top for `free` to give
    /// back by itself.
    private static func largeChunksAmongSmallOnes() -> (kept: [UnsafeMutableRawPointer], freed: [UnsafeMutableRawPointer]) {
        var kept: [UnsafeMutableRawPointer] = []
        var freed: [UnsafeMutableRawPointer] = []
        for index in 0..<20_000 {
            let large = UnsafeMutableRawPointer.allocate(byteCount: 4000, alignment: 8)
            large.initializeMemory(as: UInt8.self, repeating: 1, count: 4000)
            freed.append(large)
            guard index % 4 == 3 else { continue }
            let small = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
            small.initializeMemory(as: UInt8.self, repeating: 2, count: 64)
            kept.append(small)
        }
        return (kept, freed)
    }
}
