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
    /// Nothing committed: the summaries say every group is free, and the runs in memory
    /// decide.
    func fragmentedSpace() throws -> BlockSpace {
        let space = try BlockSpace(io: MemoryPageIO(), imageID: 5, blockTreeID: 2, root: nil, firstBlock: 2, endBlock: 192,
                                   blocksPerGroup: 64, maximumLoadedGroups: 4)
        var taken: UInt64 = 0
        while let blocks = try? space.takeData(upTo: 64) { taken += UInt64(blocks.count) }
        XCTAssertEqual(taken, 190)
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

    /// Blocks whose preparation (their disk space) fails with an error other than ENOSPC
    /// (an I/O error) are free again, as those refused for space are: before, they stayed
    /// out of the group's runs in memory until it was loaded again, while the free
    /// estimate still counted them.
    func testBlocksWhosePreparationFailsAreFreeAgain() throws {
        let space = try fragmentedSpace()
        let free = try space.freeBlockCount()
        space.prepareBlocks = { _ throws(FSError) in throw .io("the disk failed") }
        XCTAssertThrowsError(try space.take(16, minimum: 8)) { XCTAssertEqual($0 as? FSError, .io("the disk failed")) }
        XCTAssertEqual(try space.freeBlockCount(), free)  // (the summaries: true before too)
        space.prepareBlocks = nil
        XCTAssertEqual(try space.take(16, minimum: 8), 100..<108, "the blocks the failed take found are free")
    }

    /// Within a size class the lowest start comes first: runs of 18 and 24 blocks are
    /// both in the class of 16 to 31, and a minimum of 20 takes the second.
    func testARunOfTheMinimumIsFoundAmongShorterRunsOfItsSizeClass() {
        let free = FreeSpaceMap()
        free.insert(10..<28)
        free.insert(30..<54)
        free.insert(60..<62)
        XCTAssertEqual(free.takeFront(ofRunOfAtLeast: 20, upTo: 40), 30..<54)
        XCTAssertNil(free.takeFront(ofRunOfAtLeast: 19, upTo: 40))
        XCTAssertEqual(free.takeFront(ofRunOfAtLeast: 3, upTo: 8), 10..<18, "a larger class's first run")
        XCTAssertEqual(free.takeFront(ofRunOfAtLeast: 1, upTo: 40), 18..<28)
        XCTAssertEqual(free.freeBlocks, 2)
    }

    /// The same through the block tree's stored summaries, after commits: group 0's
    /// summary promises a run of 50 (its free runs are 40 and 50 blocks long, both in the
    /// class of 32 to 63), the group of the tree's nodes has 40 blocks in all, and a
    /// minimum of 45 is served from group 0's longer run.
    func testARunOfTheMinimumIsFoundThroughTheStoredSummaries() throws {
        let space = try BlockSpace(io: MemoryPageIO(), imageID: 5, blockTreeID: 2, root: nil, firstBlock: 2, endBlock: 424,
                                   blocksPerGroup: 128, maximumLoadedGroups: 4)
        // Data in groups 0 to 2; the tree's nodes go to group 3 (40 blocks).
        var data = [try space.allocateData(upTo: 126)]
        XCTAssertEqual(data, [2..<128])
        while (data.last?.upperBound ?? 0) < 384 { data.append(try space.allocateData(upTo: 128)) }
        XCTAssertEqual(data.last?.upperBound, 384, "setup: the data fills groups 0 to 2")
        var generation: UInt64 = 1
        func commit() throws {
            _ = try space.commit(generation: generation)
            space.commitIsDurable(generation: generation)
            generation += 1
        }
        try commit()
        space.release(10..<50)
        space.release(60..<110)
        // Released blocks are pending until the commits of the reuse rule.
        for _ in 0..<4 { try commit() }
        let summaries = try space.blockTree.storedGroupSummaries()
        XCTAssertEqual(summaries[0].map { UInt64($0.largestFreeRun) }, 50, "setup: group 0's summary")
        XCTAssertEqual(try space.take(100, minimum: 45), 60..<110)
        XCTAssertThrowsError(try space.take(100, minimum: 41)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertEqual(try space.take(100, minimum: 40), 10..<50)
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
