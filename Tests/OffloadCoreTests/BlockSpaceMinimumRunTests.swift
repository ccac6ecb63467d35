import XCTest
@testable import OffloadCore
import OffloadSimulation

/// A run of at least a minimum (`BlockSpace.take(_:minimum:)`): what a journal segment
/// asks for when it needs room for a frame larger than one block. Before the minimum was
/// passed down, the fallback took the longest run of the first group with any free block,
/// and the log refused it as too short while another group, or the reserve past its first
/// run, had a run long enough: a spurious ENOSPC on a nearly full, fragmented image.
final class BlockSpaceMinimumRunTests: XCTestCase {
    /// Three groups of 64 blocks (the first from block 2), every block taken, then given
    /// back: every other block of group 0, 100..<108 in group 1, 130..<134 in group 2.
    func fragmentedSpace() throws -> BlockSpace {
        let space = try BlockSpace(io: MemoryPageIO(), imageID: 5, blockTreeID: 2, root: nil, firstBlock: 2, endBlock: 194,
                                   blocksPerGroup: 64, maximumLoadedGroups: 4)
        var taken: UInt64 = 0
        while let blocks = try? space.takeData(upTo: 64) { taken += UInt64(blocks.count) }
        XCTAssertEqual(taken, 192)
        for block in stride(from: UInt64(2), to: 64, by: 2) { space.giveBack(block..<block + 1) }
        space.giveBack(100..<108)
        space.giveBack(130..<134)
        return space
    }

    func testARunOfTheMinimumIsTakenFromTheFirstGroupThatHasOne() throws {
        let space = try fragmentedSpace()
        XCTAssertEqual(try space.allocateData(upTo: 16, minimum: 8, use: .journal), 100..<108,
                       "group 0 has only one-block runs; group 1 has eight")
        XCTAssertEqual(try space.take(16, minimum: 3), 130..<134)
        let free = try space.freeBlockCount()
        XCTAssertThrowsError(try space.take(16, minimum: 2)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertEqual(try space.freeBlockCount(), free, "a refused take changes nothing")
        // Without a minimum, any run serves: one block of the first group.
        let one = try space.take(16)
        XCTAssertEqual(one.count, 1)
        XCTAssertLessThan(one.lowerBound, 64)
    }

    func testTheReserveServesFromItsFirstRunThatHoldsTheMinimum() throws {
        let space = try fragmentedSpace()
        // The free space emptied; the reserve holds a one-block run before a ten-block one.
        while (try? space.takeData(upTo: 64)) != nil {}
        space.reserve.insert(contentsOf: 150..<151)
        space.reserve.insert(contentsOf: 160..<170)
        XCTAssertEqual(try space.take(8, minimum: 4, reserve: .commit), 160..<168)
        XCTAssertThrowsError(try space.take(8, minimum: 3, reserve: .commit)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertEqual(try space.take(8, reserve: .commit), 150..<151)
    }
}
