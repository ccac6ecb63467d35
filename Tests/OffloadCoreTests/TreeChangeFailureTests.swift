import XCTest
@testable import OffloadCore
import OffloadSimulation

/// A page store that misbehaves on cue, for the tree's failure handling: reads of
/// `unreadable` blocks fail with `.io`, allocation number n (counted from 1) hands out
/// `handOut[n]`, which may be a block still in use (a damaged allocator or image), and
/// once `writesBeforeFailure` writes have gone through, writes fail with `.io`.
final class ScriptedTreePages: TreePageStore {
    let inner = MemoryTreePages()
    var unreadable = Set<UInt64>()
    var handOut: [Int: UInt64] = [:]
    var writesBeforeFailure: Int?
    private(set) var allocationCount = 0

    func allocatePage() throws(FSError) -> UInt64 {
        allocationCount += 1
        if let block = handOut[allocationCount] { return block }
        return try inner.allocatePage()
    }

    func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        guard !unreadable.contains(block) else { throw .io("scripted: block \(block) cannot be read") }
        try inner.readPage(block, into: page)
    }

    func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        if let left = writesBeforeFailure {
            guard left > 0 else { throw .io("scripted: the write of block \(block) fails") }
            writesBeforeFailure = left - 1
        }
        try inner.writePage(block, from: page)
    }
    func releasePages(_ blocks: [UInt64]) { inner.releasePages(blocks) }
}

/// Nodes written by hand, sealed, as a damaged or crafted image could hold them.
enum CraftedNodes {
    static func leaf(_ pages: TreePageStore, imageID: UInt64, treeID: UInt32, generation: UInt64,
                     _ items: [(TreeKey, [UInt8])]) throws -> (block: UInt64, checksum: UInt32) {
        let block = try pages.allocatePage()
        let page = TreePage()
        TreeNode.writeHeader(page.bytes, imageID: imageID, treeID: treeID, level: 0, count: 0, generation: generation, block: block)
        var builder = LeafBuilder(page.bytes)
        for (key, value) in items { value.withUnsafeBytes { builder.append(key, $0) } }
        builder.finish()
        return try seal(page, at: block, pages)
    }

    static func internalNode(_ pages: TreePageStore, imageID: UInt64, treeID: UInt32, level: UInt8, generation: UInt64,
                             _ entries: [(key: TreeKey, child: UInt64, generation: UInt64, checksum: UInt32)])
        throws -> (block: UInt64, checksum: UInt32) {
        let block = try pages.allocatePage()
        let page = TreePage()
        TreeNode.writeHeader(page.bytes, imageID: imageID, treeID: treeID, level: level, count: 0, generation: generation, block: block)
        for (i, entry) in entries.enumerated() {
            InternalEntries.write(page.bytes, at: i, key: entry.key, child: entry.child, generation: entry.generation,
                                  checksum: entry.checksum)
        }
        TreeNode.setCount(page.bytes, entries.count)
        return try seal(page, at: block, pages)
    }

    private static func seal(_ page: TreePage, at block: UInt64, _ pages: TreePageStore) throws -> (block: UInt64, checksum: UInt32) {
        TreeNode.seal(page.bytes)
        try pages.writePage(block, from: page.buffer)
        return (block, page.view.checksum)
    }
}

/// Changes that fail half-way, damaged and crafted trees met by changes, and the
/// generation rules: the tree either changes or stays as it was, never frees a block
/// twice, never traps, and says what is wrong.
final class TreeChangeFailureTests: XCTestCase {
    static let imageID: UInt64 = 0xFA11
    static let treeID: UInt32 = 4

    func key(_ object: UInt64, _ offset: UInt64 = 0) -> TreeKey { TreeKey(object: object, kind: 0, offset: offset) }

    /// Eight values of 1,000 bytes at fill 1.0: a root over three leaves ([0, 1, 2],
    /// [3, 4, 5], [6, 7]). Returns the tree, its committed root and its blocks in visit
    /// order (root, then leaves).
    func threeLeaves(_ pages: TreePageStore) throws -> (CopyOnWriteTree, CopyOnWriteTree.Root, [UInt64]) {
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        let items = (0..<8).map { (key(UInt64($0)), [UInt8](repeating: UInt8($0), count: 1000)) }
        let root = try XCTUnwrap(try tree.bulkLoad(items, fill: 1.0, generation: 1).root)
        var blocks: [UInt64] = []
        try tree.forEachNodeBlock { blocks.append($0) }
        XCTAssertEqual(root.level, 1)
        XCTAssertEqual(blocks.count, 4)
        return (tree, root, blocks)
    }

    func testAnUpsertMeetingADamagedOrUnreadableNodeLeavesTheTreeAsItWas() throws {
        for unreadable in [false, true] {
            let pages = ScriptedTreePages()
            let (tree, root, blocks) = try threeLeaves(pages)
            let original = try XCTUnwrap(pages.inner.bytes(of: blocks[2]))
            if unreadable {
                pages.unreadable = [blocks[2]]
            } else {
                var bytes = original
                bytes[100] ^= 0xFF
                pages.inner.overwrite(blocks[2], with: bytes)
            }
            XCTAssertThrowsError(try tree.upsert(key(4, 1), [1])) {
                switch $0 {
                case FSError.damagedImage where !unreadable, FSError.io where unreadable: break
                default: XCTFail("\($0)")
                }
            }
            XCTAssertEqual(tree.dirtyNodeCount, 0, "the root copied on the way down is dropped again")
            XCTAssertNil(tree.failure)
            // The tree goes on as if the failed change had not been tried.
            try tree.upsert(key(0, 1), [2])
            let commit = try tree.commit(generation: 2)
            XCTAssertEqual(commit.freedBlocks, [root.block, blocks[1]].sorted(), "each replaced block freed once")
            pages.releasePages(commit.freedBlocks)
            XCTAssertEqual(pages.inner.violations, [])
            XCTAssertEqual(try tree.lookup(key(0, 1)), [2])
            pages.unreadable = []
            pages.inner.overwrite(blocks[2], with: original)
            XCTAssertNil(try tree.lookup(key(4, 1)))
            XCTAssertEqual(try tree.check().nodes, pages.inner.liveBlocks, "no block leaked")
        }
    }

    /// Several changes that must happen together: a group failing at its first change
    /// leaves the tree as it was; one failing after a change took effect fails the tree,
    /// so that no commit keeps half of it, until `abandon()`.
    func testAGroupedChangeFailingHalfWayFailsTheTree() throws {
        let pages = ScriptedTreePages()
        let (tree, _, blocks) = try threeLeaves(pages)
        pages.unreadable = [blocks[2]]
        XCTAssertThrowsError(try tree.groupedChange { () throws(FSError) in
            try tree.upsert(key(4, 1), [1])
            try tree.upsert(key(0, 1), [1])
        })
        XCTAssertNil(tree.failure)
        XCTAssertNil(try tree.lookup(key(0, 1)))
        XCTAssertThrowsError(try tree.groupedChange { () throws(FSError) in
            try tree.upsert(key(0, 1), [1])
            try tree.upsert(key(4, 1), [1])
        })
        XCTAssertNotNil(tree.failure)
        XCTAssertThrowsError(try tree.commit(generation: 2))
        tree.abandon()
        XCTAssertNil(try tree.lookup(key(0, 1)))
        XCTAssertEqual(pages.inner.liveBlocks, 4, "the committed root and its leaves")
        XCTAssertEqual(pages.inner.violations, [])
    }

    /// A commit whose writes fail half-way fails the tree: retrying it would write its
    /// blocks a second time (the store's contract: once between allocation and release).
    /// `abandon()` gives every block back; the changes applied again commit cleanly.
    func testACommitWhoseWriteFailsFailsTheTreeUntilAbandoned() throws {
        let pages = ScriptedTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        let items = (0..<400).map { (key(2 * UInt64($0)), [UInt8](repeating: 1, count: 100)) }
        _ = try tree.bulkLoad(items, fill: 1.0, generation: 1)
        let committedBlocks = pages.inner.liveBlocks
        func change() throws {
            for i in stride(from: 1, to: 800, by: 80) { try tree.upsert(key(UInt64(i)), [UInt8](repeating: 2, count: 100)) }
        }
        try change()
        XCTAssertGreaterThan(tree.dirtyNodeCount, 2)
        pages.writesBeforeFailure = 1
        XCTAssertThrowsError(try tree.commit(generation: 2))
        pages.writesBeforeFailure = nil
        XCTAssertThrowsError(try tree.commit(generation: 2), "a retry in place would write a block twice")
        XCTAssertThrowsError(try tree.upsert(key(3), [1]), "the failed tree takes no change")
        tree.abandon()
        XCTAssertEqual(pages.inner.liveBlocks, committedBlocks, "every block of the failed commit given back")
        XCTAssertEqual(try tree.check().items, 400)
        try change()
        let commit = try tree.commit(generation: 2)
        pages.inner.releasePages(commit.freedBlocks)
        XCTAssertEqual(try tree.check().items, 410)
        XCTAssertEqual(pages.inner.violations, [])
    }

    /// A split's new right half is a node with no generation yet holding entries of
    /// committed children: `check()` must accept it before the commit.
    func testCheckAcceptsAHealthyTreeWithUncommittedSplits() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        // 182 full leaves under two internal nodes (109 and 73 children) and a root.
        let items = (0..<6000).map { (key(2 * UInt64($0)), [UInt8](repeating: 1, count: 100)) }
        let root = try XCTUnwrap(try tree.bulkLoad(items, fill: 1.0, generation: 1).root)
        XCTAssertEqual(root.level, 2)
        let before = try tree.check()
        // Into the first (full) leaf, whose parent is full too: both split.
        try tree.upsert(key(1), [UInt8](repeating: 2, count: 100))
        let report = try tree.check()
        XCTAssertEqual(report.items, 6001)
        XCTAssertEqual(report.nodesPerLevel[1], before.nodesPerLevel[1] + 1, "the leaves' parent split")
        _ = try tree.commit(generation: 2)
        XCTAssertEqual(try tree.check().items, 6001)
    }

    /// A crafted level-7 tree whose path to key 0 is full at every level: a change that
    /// would split the root (a level 8, past what readers index) is refused, the tree
    /// unchanged; one that splits nothing is stored.
    func testASplitOfARootAtTheDeepestLevelIsRefused() throws {
        let pages = MemoryTreePages()
        let (id, tree) = (Self.imageID, Self.treeID)
        let big = [UInt8](repeating: 7, count: TreeNode.maximumValueBytes)
        var child = try CraftedNodes.leaf(pages, imageID: id, treeID: tree, generation: 1, [(key(0, 1), big), (key(0, 2), big)])
        for level in UInt8(1)...TreeNode.maximumLevel {
            // Entry 0 is the path; the others point at blocks never read (their keys are above key(0, *)).
            let entries = [(TreeKey.minimum, child.block, UInt64(1), child.checksum)]
                + (1..<TreeNode.maximumChildren).map { (TreeKey(object: 0, kind: level, offset: UInt64($0)), UInt64(1_000_000 + $0), UInt64(1), UInt32(0)) }
            child = try CraftedNodes.internalNode(pages, imageID: id, treeID: tree, level: level, generation: 1,
                                                  entries.map { (key: $0.0, child: $0.1, generation: $0.2, checksum: $0.3) })
        }
        let root = CopyOnWriteTree.Root(block: child.block, generation: 1, level: TreeNode.maximumLevel, checksum: child.checksum)
        let deep = try CopyOnWriteTree(pages: pages, imageID: id, treeID: tree, root: root)
        XCTAssertThrowsError(try deep.upsert(key(0, 3), big)) {
            guard case FSError.damagedImage(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("level 7"), why)
        }
        XCTAssertEqual(deep.dirtyNodeCount, 0)
        try deep.upsert(key(0, 3), [3])
        let commit = try deep.commit(generation: 2)
        XCTAssertEqual(commit.root?.level, TreeNode.maximumLevel)
        XCTAssertEqual(try deep.lookup(key(0, 3)), [3])
        XCTAssertEqual(try deep.lookup(key(0, 2)), big)
        let reopened = try CopyOnWriteTree(pages: pages, imageID: id, treeID: tree, root: commit.root)
        XCTAssertEqual(try reopened.lookup(key(0, 3)), [3])
        XCTAssertEqual(pages.violations, [])
    }

    /// A block still referenced by the committed tree handed out again (a damaged
    /// allocator) becomes the root's copy, an internal node: a lookup that follows the
    /// old pointer to that block, expecting a leaf, must throw, not trap.
    func testAChangedNodeFoundWhereANodeOfAnotherLevelIsExpectedIsDamage() throws {
        let pages = ScriptedTreePages()
        let (tree, _, blocks) = try threeLeaves(pages)
        // An upsert into the first leaf reserves 5 spares and copies the root to the last.
        pages.handOut = [pages.allocationCount + 5: blocks[2]]
        try tree.upsert(key(0, 1), [1])
        func assertDamage(_ error: Error) {
            guard case FSError.damagedImage(let why) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("a block still referenced was allocated again"), why)
        }
        XCTAssertThrowsError(try tree.lookup(key(4)), "the old pointer to leaf 2 leads to the root's copy", assertDamage)
        XCTAssertThrowsError(try tree.upsert(key(4, 1), [1]), "the tree is failed", assertDamage)
        XCTAssertThrowsError(try tree.commit(generation: 2), "the tree is failed")
    }

    /// A crafted root whose two entries point at one leaf: changing through both would
    /// free the leaf twice. The second is refused as damage and the tree is failed;
    /// `check()` names the second reference.
    func testANodeWithTwoParentsIsRefusedNotFreedTwice() throws {
        let pages = MemoryTreePages()
        let (id, treeID) = (Self.imageID, Self.treeID)
        let leaf = try CraftedNodes.leaf(pages, imageID: id, treeID: treeID, generation: 1, [(key(1), [1])])
        let rootNode = try CraftedNodes.internalNode(pages, imageID: id, treeID: treeID, level: 1, generation: 1, [
            (key: .minimum, child: leaf.block, generation: 1, checksum: leaf.checksum),
            (key: key(3), child: leaf.block, generation: 1, checksum: leaf.checksum),
        ])
        let root = CopyOnWriteTree.Root(block: rootNode.block, generation: 1, level: 1, checksum: rootNode.checksum)
        let tree = try CopyOnWriteTree(pages: pages, imageID: id, treeID: treeID, root: root)
        XCTAssertThrowsError(try tree.check()) {
            guard case FSError.damagedImage(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("referenced twice"), why)
        }
        try tree.upsert(key(2), [2])
        XCTAssertThrowsError(try tree.upsert(key(4), [4])) {
            guard case FSError.damagedImage(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("two parents"), why)
        }
        var freed: [UInt64] = []
        XCTAssertThrowsError(freed = try tree.commit(generation: 2).freedBlocks, "the tree is failed")
        pages.releasePages(freed)
        XCTAssertEqual(pages.violations, [])
    }

    func testGenerationZeroIsRefused() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: Self.imageID, treeID: Self.treeID, root: nil)
        XCTAssertThrowsError(try tree.bulkLoad([(key(1), [1])], generation: 0)) {
            guard case FSError.invalidArgument(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("generation 0"), why)
        }
        XCTAssertEqual(pages.liveBlocks, 0)
        try tree.upsert(key(1), [1])
        XCTAssertThrowsError(try tree.commit(generation: 0)) {
            guard case FSError.invalidArgument(let why) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(why.contains("generation 0"), why)
        }
        XCTAssertEqual(try tree.commit(generation: 1).root?.generation, 1)
    }
}
