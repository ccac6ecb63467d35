import Foundation
import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// `CopyOnWriteTree.bulkLoad`, and the tree's behaviour at its limits: space running out
/// in the middle of a change, a damaged node met half-way through a removal.
final class TreeBulkLoadTests: XCTestCase {
    static let imageID: UInt64 = 0xB01C

    func sortedItems(_ count: Int, seed: UInt64, maximumValue: Int) -> [(TreeKey, [UInt8])] {
        var rng = SplitMix64(seed: seed)
        var keys = Set<TreeKey>()
        while keys.count < count {
            keys.insert(TreeKey(object: rng.next() % UInt64(max(1, count / 4)), kind: UInt8(rng.next() % 4), offset: rng.next() % 1000))
        }
        return keys.sorted().map { ($0, randomBytes(Int(rng.next() % UInt64(maximumValue + 1)), using: &rng)) }
    }

    func allItems(_ tree: CopyOnWriteTree) throws -> [(TreeKey, [UInt8])] {
        var items: [(TreeKey, [UInt8])] = []
        try tree.scan(from: .minimum, through: .maximum) { key, value in
            items.append((key, Array(value)))
            return true
        }
        return items
    }

    func testBulkLoadHoldsWhatTheSameInsertsOneByOneHold() throws {
        for (count, maximumValue, fill) in [(0, 10, 0.9), (1, 10, 0.9), (2, 1900, 1.0), (137, 300, 0.5), (3000, 40, 0.9),
                                             (5000, 60, 1.0), (900, 1900, 0.75), (20_000, 8, 0.9)] {
            let items = sortedItems(count, seed: UInt64(count), maximumValue: maximumValue)
            let loadedPages = MemoryTreePages()
            let loaded = try CopyOnWriteTree(pages: loadedPages, imageID: Self.imageID, treeID: 2, root: nil)
            let commit = try loaded.bulkLoad(items, fill: fill, generation: 4)
            let insertedPages = MemoryTreePages()
            let inserted = try CopyOnWriteTree(pages: insertedPages, imageID: Self.imageID, treeID: 2, root: nil)
            var order = SplitMix64(seed: UInt64(count) + 1)
            for (key, value) in items.shuffled(using: &order) { try inserted.upsert(key, value) }
            _ = try inserted.commit(generation: 4)

            let report = try loaded.check()
            XCTAssertEqual(report.items, count)
            XCTAssertEqual(report.nodes, loadedPages.liveBlocks, "no block leaked")
            XCTAssertEqual(commit.writtenBlocks, report.nodes)
            XCTAssertEqual(loadedPages.violations, [])
            let loadedItems = try allItems(loaded), insertedItems = try allItems(inserted)
            XCTAssertEqual(loadedItems.map { $0.0 }, insertedItems.map { $0.0 })
            XCTAssertEqual(loadedItems.map { $0.1 }, insertedItems.map { $0.1 })
            // Reopened at the root the load returned; fuller than one by one at fill 0.9+.
            let reopened = try CopyOnWriteTree(pages: loadedPages, imageID: Self.imageID, treeID: 2, root: commit.root)
            XCTAssertEqual(try reopened.check(), report)
            if fill >= 0.9 && count >= 3000 { XCTAssertLessThan(report.nodes, try inserted.check().nodes) }
            // And it takes changes like any tree.
            if let (key, _) = items.first {
                XCTAssertTrue(try loaded.remove(key))
                try loaded.upsert(TreeKey(object: .max, kind: 0, offset: 0), [1, 2, 3])
                XCTAssertEqual(try loaded.commit(generation: 5).root?.generation, 5)
                XCTAssertEqual(try loaded.check().items, count)
            }
        }
    }

    func testBulkLoadRefusesUnsortedOrOversizedInputAndReleasesWhatItWrote() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: 2, root: nil)
        var items = sortedItems(2000, seed: 5, maximumValue: 100)
        items.append((items[10].0, [1]))
        XCTAssertThrowsError(try tree.bulkLoad(items, generation: 1)) {
            guard case FSError.invalidArgument(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("not strictly increasing"), why)
        }
        XCTAssertEqual(pages.liveBlocks, 0)
        items.removeLast()
        items.append((TreeKey.maximum, [UInt8](repeating: 0, count: TreeNode.maximumValueBytes + 1)))
        XCTAssertThrowsError(try tree.bulkLoad(items, generation: 1))
        XCTAssertEqual(pages.liveBlocks, 0)
        XCTAssertTrue(tree.isEmpty)
        XCTAssertEqual(pages.violations, [])
    }

    /// A million items loaded and looked up (a scale check, not a timing).
    func testAMillionItemsLoadAndAreFound() throws {
        let count = 1_000_000
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: 2, root: nil)
        // Inode-like keys: 3 items per object, values of 8 bytes derived from the key.
        func key(_ i: Int) -> TreeKey { TreeKey(object: UInt64(i / 3) * 7, kind: UInt8(i % 3), offset: 0) }
        func value(_ i: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(i).littleEndian) { Array($0) } }
        let commit = try tree.bulkLoad((0..<count).lazy.map { (key($0), value($0)) }, fill: 0.9, generation: 1)
        let report = try tree.check()
        XCTAssertEqual(report.items, count)
        XCTAssertEqual(commit.root?.level, 2)
        XCTAssertEqual(pages.liveBlocks, report.nodes)
        var rng = SplitMix64(seed: 1)
        for _ in 0..<5_000 {
            let i = Int(rng.next() % UInt64(count))
            XCTAssertEqual(try tree.lookup(key(i)), value(i))
            XCTAssertNil(try tree.lookup(TreeKey(object: UInt64(i / 3) * 7 + 1, kind: 0, offset: 0)))
        }
    }

    func testRunningOutOfSpaceForAChangeLeavesTheTreeAsItWas() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: 2, root: nil)
        let items = sortedItems(3000, seed: 9, maximumValue: 120)
        _ = try tree.bulkLoad(items, fill: 1.0, generation: 1)
        let before = try allItems(tree)
        // Full leaves: every insert splits one. Room for a few changes, then none: the
        // blocks a change may need are taken before it starts, so a refused one changes nothing.
        pages.blockLimit = pages.liveBlocks + 12
        var refused = 0, generation: UInt64 = 1
        var rng = SplitMix64(seed: 3)
        var added: [(TreeKey, [UInt8])] = []
        for _ in 0..<200 {
            let key = TreeKey(object: rng.next() % 750, kind: 9, offset: rng.next())
            let value = randomBytes(100, using: &rng)
            let refusal: FSError?
            do {
                try tree.upsert(key, value)
                refusal = nil
            } catch {
                refusal = error
            }
            if refusal == nil {
                added.append((key, value))
            } else {
                XCTAssertEqual(refusal, .noSpace)
                refused += 1
                // Nothing changed: a commit now holds exactly what was added so far.
                generation += 1
                let commit = try tree.commit(generation: generation)
                pages.releasePages(commit.freedBlocks)
                XCTAssertEqual(try tree.check().items, items.count + added.count)
            }
        }
        XCTAssertGreaterThan(refused, 0)
        let after = try allItems(tree)
        let expected = (before + added).sorted { $0.0 < $1.0 }
        XCTAssertEqual(after.map { $0.0 }, expected.map { $0.0 })
        XCTAssertEqual(after.map { $0.1 }, expected.map { $0.1 })
        XCTAssertEqual(pages.violations, [])
    }

    func testADamagedNeighbourMetHalfWayThroughARemovalStopsTheTreeFromCommitting() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: 2, root: nil)
        let items = (0..<8).map { (TreeKey(object: UInt64($0), kind: 0, offset: 0), [UInt8](repeating: UInt8($0), count: 1000)) }
        let root = try XCTUnwrap(try tree.bulkLoad(items, fill: 1.0, generation: 1).root)
        XCTAssertEqual(root.level, 1)
        // Damage the second leaf, then empty the first: rebalancing must read the second.
        var second: UInt64 = 0, index = 0
        try tree.forEachNodeBlock { block in
            if index == 2 { second = block }
            index += 1
        }
        var bytes = try XCTUnwrap(pages.bytes(of: second))
        bytes[100] ^= 0xFF
        pages.overwrite(second, with: bytes)
        var failure: FSError?
        for (key, _) in items.prefix(4) {
            do {
                try tree.remove(key)
            } catch {
                failure = error
                break
            }
        }
        guard case .damagedImage(let why)? = failure else { return XCTFail("no damage found: \(String(describing: failure))") }
        XCTAssertTrue(why.contains("block \(second)"), why)
        XCTAssertThrowsError(try tree.commit(generation: 2)) {
            guard case FSError.damagedImage(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("abandon()"), why)
        }
        XCTAssertThrowsError(try tree.upsert(TreeKey.maximum, [1]))
        // The committed root is untouched: reopened, it finds the damage where it is.
        let reopened = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: 2, root: root)
        XCTAssertEqual(try reopened.lookup(items[0].0), items[0].1)
        XCTAssertThrowsError(try reopened.check())
        // The failed tree holds copies and spares the store counts as live; abandoning
        // gives them back and makes it the committed tree again, usable.
        XCTAssertGreaterThan(pages.liveBlocks, 4)
        tree.abandon()
        XCTAssertNil(tree.failure)
        XCTAssertEqual(tree.dirtyNodeCount, 0)
        XCTAssertEqual(tree.spareBlockCount, 0)
        XCTAssertEqual(pages.liveBlocks, 4, "the committed root and its three leaves")
        XCTAssertEqual(try tree.lookup(items[0].0), items[0].1, "the removals are gone")
        try tree.upsert(items[0].0, [9])
        let commit = try tree.commit(generation: 2)
        pages.releasePages(commit.freedBlocks)
        XCTAssertEqual(try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: 2, root: commit.root).lookup(items[0].0), [9])
        XCTAssertEqual(pages.liveBlocks, 4)
        XCTAssertEqual(pages.violations, [])
    }
}
