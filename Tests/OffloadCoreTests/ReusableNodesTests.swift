import XCTest
@testable import OffloadCore
import OffloadSimulation

/// `ReusableNodes` (freed nodes kept for later commits' nodes) on its own, and the block
/// tree's removal of parts of pending frees that it needs.
final class ReusableNodesTests: XCTestCase {
    func testKeptNodesAreTakenOldestFirstOnlyOnceOldEnoughAndComeBackWhenGivenBack() {
        var nodes = ReusableNodes()
        nodes.add(generation: 3, [40, 10, 30])
        nodes.add(generation: 5, [20])
        XCTAssertNil(nodes.take(through: 2), "a generation newer than allowed was handed out")
        XCTAssertEqual(nodes.take(through: 3), 10)
        XCTAssertEqual(nodes.take(through: 3), 30)
        XCTAssertTrue(nodes.giveBack(10))
        XCTAssertFalse(nodes.giveBack(99), "a block that was not handed out came back")
        XCTAssertEqual(nodes.take(through: 4), 10)
        XCTAssertEqual(nodes.take(through: 4), 40)
        XCTAssertNil(nodes.take(through: 4))
        XCTAssertEqual(nodes.take(through: 5), 20)
        XCTAssertEqual(nodes.count, 4, "handed out blocks count until committed")
        XCTAssertEqual(nodes.kept.ranges, [10..<11, 20..<21, 30..<31, 40..<41])
        nodes.committed([(3, 10), (3, 30), (3, 40), (5, 20)])
        XCTAssertEqual(nodes.count, 0)
        XCTAssertTrue(nodes.kept.isEmpty)
    }

    func testLettingGoPunchesOnlyWhatItsGenerationsPunchLeftOut() {
        var nodes = ReusableNodes()
        nodes.add(generation: 2, [7, 8])
        nodes.add(generation: 4, [9])
        nodes.add(generation: 6, [11, 12])
        // At most 2 kept; generations through 4 were punched (without them).
        XCTAssertEqual(nodes.evict(keeping: 2, punchedThrough: 4), 3)
        XCTAssertEqual(nodes.unpunched.ranges, [11..<13])
        XCTAssertEqual(Set(nodes.toPunch.map(\.block)), [7, 8, 9])
        XCTAssertEqual(nodes.kept.ranges, [7..<10, 11..<13], "blocks to punch stay pending until punched")
        XCTAssertEqual(Set(nodes.startPunch()), [7..<8, 8..<9, 9..<10])
        nodes.finishPunch(succeeded: false)
        XCTAssertEqual(nodes.toPunch.count, 3, "a failed punch keeps them to punch")
        _ = nodes.startPunch()
        nodes.evict(keeping: 0, punchedThrough: 5)
        XCTAssertEqual(nodes.toPunch.count, 3, "generation 6 is punched with its generation")
        nodes.finishPunch(succeeded: true)
        XCTAssertEqual(nodes.toPunch.count, 0)
        XCTAssertTrue(nodes.kept.isEmpty)
    }

    func testTheBlockTreeRemovesPartsOfPendingFreesAndKeepsTheRest() throws {
        let pages = MemoryTreePages()
        let tree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: pages, imageID: 1, treeID: 2, root: nil), blocksPerGroup: 64)
        try tree.addPendingFrees(generation: 3, [10..<15, 20..<22])
        try tree.addPendingFrees(generation: 4, [30..<31])
        try tree.removePendingBlocks([(3, 12), (4, 30)])
        XCTAssertEqual(try tree.pendingFrees(through: .max).map(\.blocks), [10..<12, 13..<15, 20..<22])
        XCTAssertEqual(try tree.pendingBlocks(in: 0..<100), [10..<12, 13..<15, 20..<22])
        XCTAssertThrowsError(try tree.removePendingBlocks([(4, 12)]), "a block pending in another generation")
        XCTAssertEqual(try tree.pendingFrees(through: .max).count, 3, "a refused removal changed something")
        var kept = BlockRanges(11..<12)
        kept.insert(contentsOf: 14..<15)
        let removed = try tree.removePendingFrees(through: 3, keeping: kept)
        XCTAssertEqual(removed.map(\.blocks), [10..<11, 13..<14, 20..<22])
        XCTAssertEqual(try tree.pendingFrees(through: .max).map(\.blocks), [11..<12, 14..<15])
        XCTAssertEqual(try tree.pendingFrees(through: .max).map(\.generation), [3, 3])
        XCTAssertEqual(try tree.removePendingFrees(through: 3, keeping: kept).count, 0, "kept frees were removed")
    }
}
