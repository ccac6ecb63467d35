import XCTest
@testable import OffloadCore
import OffloadSimulation

/// The block space's side of the free-space scrub (`BlockSpace.scrubFreeRuns`;
/// docs/ARCHITECTURE.md, "The free space scrubbed where allocations go"), on small groups:
/// a group's free runs go to the scrub once, when the group is first loaded, less what is
/// taken; what the scrub punched is handed out only once a commit after it is durable; a
/// scrub that fails leaves the group to scrub again.
final class BlockSpaceScrubTests: XCTestCase {
    /// Four groups of 64 blocks (the first starts at block 2), one loaded at a time.
    func openSpace() throws -> BlockSpace {
        try BlockSpace(io: MemoryPageIO(), imageID: 5, blockTreeID: 2, root: nil, firstBlock: 2, endBlock: 256,
                       blocksPerGroup: 64, maximumLoadedGroups: 1)
    }

    final class Calls: @unchecked Sendable {
        var runs: [[Range<UInt64>]] = []
    }

    func testEachGroupIsScrubbedOnceWithItsFreeRunsLessWhatIsTaken() throws {
        let space = try openSpace()
        try space.claimData(10..<20)
        let calls = Calls()
        space.scrubFreeRuns = { runs in
            calls.runs.append(runs)
            return []
        }
        XCTAssertEqual(try space.allocateData(upTo: 1), 2..<3)
        XCTAssertEqual(calls.runs, [[2..<10, 20..<64]], "group 0's free runs, the claim left out")
        XCTAssertEqual(try space.allocateData(upTo: 64), 64..<128)
        XCTAssertEqual(calls.runs.count, 2)
        XCTAssertEqual(calls.runs.last, [64..<128])
        // Group 0 was dropped to load group 1; loaded again, it is not scrubbed again.
        let loads = space.groupLoads
        _ = try space.freeRuns(of: 0)
        XCTAssertEqual(space.groupLoads, loads + 1, "group 0 was still loaded: the case is not the one tested")
        XCTAssertEqual(calls.runs.count, 2, "a group was scrubbed twice")
        XCTAssertEqual(space.scrubbedGroups, [0, 1])
    }

    func testWhatTheScrubPunchedIsHandedOutOnlyOnceACommitAfterItIsDurable() throws {
        let space = try openSpace()
        // The scrub punches the blocks below 40 of what it is given.
        space.scrubFreeRuns = { runs in runs.compactMap { $0.lowerBound < 40 ? $0.lowerBound..<min(40, $0.upperBound) : nil } }
        var taken: [Range<UInt64>] = []
        taken.append(try space.allocateData(upTo: 1))
        XCTAssertEqual(taken.last, 40..<41, "a punched block was handed out before any sync")
        _ = try space.commit(generation: 1)
        for _ in 0..<20 {
            let blocks = try space.allocateData(upTo: 1)
            XCTAssertFalse(blocks.overlaps(2..<40), "punched block \(blocks) handed out before the commit after it was durable")
            taken.append(blocks)
        }
        space.commitIsDurable(generation: 1)
        XCTAssertEqual(try space.allocateData(upTo: 38), 2..<40, "the punched blocks are free once the commit is durable")
        XCTAssertEqual(Set(taken.map(\.lowerBound)).count, taken.count)
    }

    func testAScrubThatFailsFailsTheAllocationAndIsTriedAgain() throws {
        let space = try openSpace()
        let calls = Calls()
        space.scrubFreeRuns = { (runs) throws(FSError) -> [Range<UInt64>] in
            calls.runs.append(runs)
            if calls.runs.count == 1 { throw .io("the punch failed") }
            return []
        }
        XCTAssertThrowsError(try space.allocateData(upTo: 1)) { XCTAssertEqual($0 as? FSError, .io("the punch failed")) }
        XCTAssertEqual(space.scrubbedGroups, [])
        XCTAssertEqual(try space.allocateData(upTo: 1), 2..<3)
        XCTAssertEqual(calls.runs, [[2..<64], [2..<64]])
    }
}
