import XCTest
@testable import OffloadCore
import OffloadSimulation

/// The readers' node cache (`NodeReadCache`), one per volume: repeated lookups are served
/// from validated copies and answer exactly what a reader without the cache answers; the
/// readers of a later commit find the nodes the earlier ones read and read the changed
/// ones afresh; readers on several threads share it; a slot holds a node only as its
/// parent recorded it, and a shard's slots are replaced in turn when more nodes are read
/// than it holds.
final class NodeReadCacheTests: XCTestCase {
    static let now = RecordTime(seconds: 0, nanoseconds: 0)

    /// A volume whose root directory names f0..f4999 (inodes 2...5001), committed.
    func volumeOfFiveThousandFiles() throws -> TreeVolume {
        let storage = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 64 << 20, imageID: 11, nameHashKey: SipHash24(key0: 1, key1: 2))
        let now = Self.now
        var changes: [JournalChange] = [.attributes(inode: 1, InodeItem(
            type: 4, permissions: 0o755, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0, accessTime: now, modificationTime: now,
            changeTime: now, birthTime: now, parent: 1, nextIndex: 3 + 5000))]
        for i in 0..<5000 {
            let number = UInt64(2 + i)
            changes.append(.attributes(inode: number, InodeItem(
                type: 8, permissions: 0o644, uid: 0, gid: 0, linkCount: 1, size: 0, rdev: 0, accessTime: now,
                modificationTime: now, changeTime: now, birthTime: now, parent: 0, nextIndex: 0)))
            changes.append(.link(directory: 1, NamedEntry(name: Array("f\(i)".utf8), child: number, type: 8, index: UInt64(3 + i))))
            if changes.count > 400 {
                try volume.perform(changes)
                changes = []
            }
        }
        try volume.perform(changes)
        try volume.commit()
        return volume
    }

    /// A tree object at the volume's current root that caches nothing.
    func plainTree(_ volume: TreeVolume) throws -> FileSystemTree {
        try FileSystemTree(tree: CopyOnWriteTree(pages: volume.filesystemPages, imageID: 11, treeID: TreeVolume.filesystemTreeID,
                                                 root: volume.current.filesystemTree), hashes: volume.filesystem.hashes)
    }

    func testAReadersRepeatedLookupsComeFromItsCacheAndReadTheSame() throws {
        let volume = try volumeOfFiveThousandFiles()
        let cached = try volume.reader()
        let plain = try plainTree(volume)
        for round in 0..<2 {
            for i in stride(from: 0, to: 5000, by: 7) {
                let name = Array("f\(i)".utf8)
                XCTAssertEqual(try cached.lookup(directory: 1, name: name), try plain.lookup(directory: 1, name: name), "round \(round), f\(i)")
                XCTAssertEqual(try cached.inode(UInt64(2 + i)), try plain.inode(UInt64(2 + i)))
            }
        }
        let counts = volume.nodeCache.counts
        XCTAssertGreaterThan(counts.hits, counts.misses, "the second round and the upper levels come from the cache: \(counts)")
        print("node cache: \(counts.hits) hits, \(counts.misses) misses over two rounds of lookups")
    }

    /// A reader's lookup that passes through the nodes its previous lookup left in the
    /// level buffers uses them as they are: neighbouring inodes (one leaf) take nothing
    /// from the cache after the first, and answer what a tree without the cache answers.
    /// A lookup elsewhere takes only the nodes that differ, and one back in the first
    /// leaf takes that leaf again (its buffer was overwritten).
    func testALookupThroughTheNodesTheLastOneReadTakesNothingFromTheCache() throws {
        let volume = try volumeOfFiveThousandFiles()
        let plain = try plainTree(volume)
        let reader = try volume.reader()
        let level = Int(try XCTUnwrap(volume.current.filesystemTree).level)
        XCTAssertGreaterThan(level, 0, "setup: a tree of one leaf")
        func taken() -> Int { let counts = volume.nodeCache.counts; return counts.hits + counts.misses }

        XCTAssertEqual(try reader.inode(2), try plain.inode(2))
        let first = taken()
        for number in UInt64(3)...5 {
            XCTAssertEqual(try reader.inode(number), try plain.inode(number))
        }
        XCTAssertEqual(taken(), first, "lookups in the leaf the buffers hold took nodes from the cache")

        XCTAssertEqual(try reader.inode(4_900), try plain.inode(4_900))
        let far = taken() - first
        XCTAssertGreaterThan(far, 0, "a lookup in another leaf found it in a buffer")
        XCTAssertLessThanOrEqual(far, level, "the root, held in its buffer, was taken again")
        XCTAssertEqual(try reader.inode(2), try plain.inode(2))
        XCTAssertGreaterThan(taken() - first - far, 0, "the first leaf was found in a buffer another leaf overwrote")
    }

    /// A node-sized page of `byte`s, freed when the test ends.
    func nodePage(filledWith byte: UInt8) -> UnsafeMutableRawPointer {
        let page = UnsafeMutableRawPointer.allocate(byteCount: TreeNode.size, alignment: 16)
        page.initializeMemory(as: UInt8.self, repeating: byte, count: TreeNode.size)
        addTeardownBlock { page.deallocate() }
        return page
    }

    func testSlotsAreReplacedInTurnWithASecondChanceForAHitAndAMismatchIsAMiss() {
        let cache = NodeReadCache(leafCapacity: 2, interiorCapacity: 2, shardCount: 1)
        let page = nodePage(filledWith: 7)
        cache.insert(10, level: 0, generation: 3, checksum: 99, from: page)
        cache.insert(11, level: 0, generation: 3, checksum: 98, from: page)
        XCTAssertFalse(cache.copy(10, level: 0, generation: 3, checksum: 1, into: page), "another checksum than the parent's")
        XCTAssertFalse(cache.copy(10, level: 1, generation: 3, checksum: 99, into: page), "another level (another pool)")
        cache.insert(20, level: 1, generation: 3, checksum: 90, from: page)
        XCTAssertFalse(cache.copy(20, level: 2, generation: 3, checksum: 90, into: page), "another level in the interior pool")
        XCTAssertTrue(cache.copy(20, level: 1, generation: 3, checksum: 90, into: page))
        cache.insert(12, level: 0, generation: 3, checksum: 97, from: page)
        XCTAssertFalse(cache.copy(10, level: 0, generation: 3, checksum: 99, into: page), "no hit: the oldest slot went to block 12")
        XCTAssertTrue(cache.copy(11, level: 0, generation: 3, checksum: 98, into: page))
        cache.insert(13, level: 0, generation: 3, checksum: 96, from: page)
        XCTAssertTrue(cache.copy(11, level: 0, generation: 3, checksum: 98, into: page), "hit since the hand passed: kept")
        XCTAssertFalse(cache.copy(12, level: 0, generation: 3, checksum: 97, into: page), "block 12 went to block 13")
        cache.insert(14, level: 0, generation: 3, checksum: 95, from: page)
        cache.insert(15, level: 0, generation: 3, checksum: 94, from: page)
        XCTAssertFalse(cache.copy(11, level: 0, generation: 3, checksum: 98, into: page), "not hit since the hand last passed it: replaced")
        XCTAssertTrue(cache.copy(14, level: 0, generation: 3, checksum: 95, into: page))
        XCTAssertTrue(cache.copy(15, level: 0, generation: 3, checksum: 94, into: page))
    }

    /// Every lookup passes the interior levels, a leaf serves only its keys: leaves read
    /// in any number do not replace interior nodes.
    func testLeavesDoNotReplaceInteriorNodes() {
        let cache = NodeReadCache(leafCapacity: 4, interiorCapacity: 2, shardCount: 1)
        let page = nodePage(filledWith: 5)
        cache.insert(1, level: 2, generation: 1, checksum: 1, from: page)
        cache.insert(2, level: 1, generation: 1, checksum: 2, from: page)
        for block in UInt64(100)..<200 { cache.insert(block, level: 0, generation: 1, checksum: 3, from: page) }
        XCTAssertTrue(cache.copy(1, level: 2, generation: 1, checksum: 1, into: page))
        XCTAssertTrue(cache.copy(2, level: 1, generation: 1, checksum: 2, into: page))
        XCTAssertFalse(cache.copy(195, level: 0, generation: 1, checksum: 3, into: page), "four leaves are kept")
        XCTAssertTrue(cache.copy(196, level: 0, generation: 1, checksum: 3, into: page))
        cache.insert(3, level: 1, generation: 1, checksum: 4, from: page)
        XCTAssertFalse(cache.copy(1, level: 2, generation: 1, checksum: 1, into: page), "interior nodes replace each other in turn")
        XCTAssertEqual(cache.capacity, 6)
    }

    /// A forgotten node's slot is free: no hit, and taken by the next insert before a
    /// slot never used; at rest the free slots' pages go back to the kernel, and the
    /// nodes left and those inserted after read back whole.
    func testForgottenSlotsAreTakenFirstAndTheirPagesGoBack() {
        let cache = NodeReadCache(leafCapacity: 8, interiorCapacity: 2, shardCount: 1)
        let into = nodePage(filledWith: 0)
        for block in UInt64(10)...12 { cache.insert(block, level: 0, generation: 1, checksum: 1, from: nodePage(filledWith: UInt8(block))) }
        XCTAssertEqual(cache.slots.holding, 3)
        XCTAssertEqual(cache.slots.resident, 3)
        cache.forget([11, 99])
        XCTAssertEqual(cache.slots.holding, 2)
        XCTAssertFalse(cache.copy(11, level: 0, generation: 1, checksum: 1, into: into), "forgotten")
        cache.insert(13, level: 0, generation: 1, checksum: 1, from: nodePage(filledWith: 13))
        XCTAssertEqual(cache.slots.resident, 3, "block 13 took block 11's free slot, not a new one")
        cache.insert(14, level: 0, generation: 1, checksum: 1, from: nodePage(filledWith: 14))
        XCTAssertEqual(cache.slots.resident, 4)
        cache.insert(20, level: 1, generation: 1, checksum: 1, from: nodePage(filledWith: 20))
        cache.forget([10, 12, 13, 20])
        XCTAssertEqual(cache.releaseFreeSlots(), 4, "three leaf slots and the interior one")
        XCTAssertEqual(cache.releaseFreeSlots(), 0, "given back once")
        XCTAssertEqual(cache.slots.holding, 1)
        XCTAssertEqual(cache.slots.resident, 1)
        XCTAssertTrue(cache.copy(14, level: 0, generation: 1, checksum: 1, into: into))
        XCTAssertEqual(into.load(fromByteOffset: 0, as: UInt8.self), 14)
        XCTAssertEqual(into.load(fromByteOffset: TreeNode.size - 1, as: UInt8.self), 14)
        cache.insert(15, level: 0, generation: 1, checksum: 1, from: nodePage(filledWith: 15))
        XCTAssertEqual(cache.slots.resident, 2, "a released slot taken is in memory again")
        XCTAssertTrue(cache.copy(15, level: 0, generation: 1, checksum: 1, into: into))
        XCTAssertEqual(into.load(fromByteOffset: TreeNode.size - 1, as: UInt8.self), 15)
        XCTAssertEqual(cache.counts.hits, 2)
    }

    /// Commits after commits, each changing a node in every leaf of inodes while readers
    /// read them all: the cache holds at most the tree's live nodes, not every copy the
    /// commits superseded (which it held until the hand passed them, filling its pools
    /// whatever the tree's size).
    func testCommitsLetGoOfTheNodesTheyReplaced() throws {
        let volume = try volumeOfFiveThousandFiles()
        for round in 0..<12 {
            let reader = try volume.reader()
            for i in stride(from: 0, to: 5000, by: 7) { _ = try reader.inode(UInt64(2 + i)) }
            var changes: [JournalChange] = []
            for i in stride(from: round % 10, to: 5000, by: 10) {
                guard var item = try reader.inode(UInt64(2 + i)) else { return XCTFail("f\(i) has no inode") }
                item.permissions = 0o600 | UInt32(round)
                changes.append(.attributes(inode: UInt64(2 + i), item))
            }
            try volume.perform(changes)
            try volume.commit()
        }
        let reader = try volume.reader()
        for i in stride(from: 0, to: 5000, by: 7) { _ = try reader.inode(UInt64(2 + i)) }
        var live = 0
        try plainTree(volume).tree.forEachNodeBlock { _ in live += 1 }
        let slots = volume.nodeCache.slots
        XCTAssertLessThanOrEqual(slots.holding, live, "the cache holds nodes no live tree has")
        XCTAssertLessThanOrEqual(slots.resident, live * 2, "pages of slots beyond two commits' nodes")
        print("node cache after 12 commits: \(slots.holding) slots holding, \(slots.resident) in memory, \(live) live nodes")
    }

    func testTheNextCommitsReadersFindTheNodesAndReadTheChangedOnesAfresh() throws {
        let volume = try volumeOfFiveThousandFiles()
        let first = try volume.reader()
        for i in stride(from: 0, to: 5000, by: 7) { _ = try first.inode(UInt64(2 + i)) }
        // Change every 50th inode's permissions: their leaves are copied by the commit.
        var changes: [JournalChange] = []
        for i in stride(from: 0, to: 5000, by: 50) {
            guard var item = try first.inode(UInt64(2 + i)) else { return XCTFail("f\(i) has no inode") }
            item.permissions = 0o600
            changes.append(.attributes(inode: UInt64(2 + i), item))
        }
        try volume.perform(changes)
        try volume.commit()
        let before = volume.nodeCache.counts
        let second = try volume.reader()
        XCTAssertNotEqual(second.generation, first.generation)
        let plain = try plainTree(volume)
        for i in stride(from: 0, to: 5000, by: 7) {
            let read = try second.inode(UInt64(2 + i))
            XCTAssertEqual(read, try plain.inode(UInt64(2 + i)), "f\(i)")
            XCTAssertEqual(read?.permissions, i % 50 == 0 ? 0o600 : 0o644, "f\(i): the new commit's node, not the cached old one")
        }
        let after = volume.nodeCache.counts
        let hits = after.hits - before.hits, misses = after.misses - before.misses
        XCTAssertGreaterThan(hits, 0, "the new reader found the unchanged nodes the first one read")
        XCTAssertGreaterThan(misses, 0, "the copied leaves and the new root were read afresh")
        print("node cache across a commit: \(hits) hits, \(misses) misses")
    }

    func testReadersOnSeveralThreadsShareTheCache() throws {
        let volume = try volumeOfFiveThousandFiles()
        let plain = try plainTree(volume)
        var expected: [NamedEntry?] = []
        for i in 0..<5000 { expected.append(try plain.lookup(directory: 1, name: Array("f\(i)".utf8))) }
        /// What the threads share: the volume is thread-safe, the answers are read only.
        final class Shared: @unchecked Sendable {
            let volume: TreeVolume
            let expected: [NamedEntry?]
            init(_ volume: TreeVolume, _ expected: [NamedEntry?]) { (self.volume, self.expected) = (volume, expected) }
        }
        let shared = Shared(volume, expected)
        let mismatches = PthreadMutex([String]())
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            do {
                let reader = try shared.volume.reader()
                for round in 0..<2 {
                    for i in stride(from: thread, to: 5000, by: 11) {
                        let found = try reader.lookup(directory: 1, name: Array("f\(i)".utf8))
                        if found != shared.expected[i] { mismatches.withLock { $0.append("thread \(thread), round \(round), f\(i)") } }
                    }
                }
            } catch {
                mismatches.withLock { $0.append("thread \(thread): \(error)") }
            }
        }
        XCTAssertEqual(mismatches.withLock { $0 }, [])
        let counts = volume.nodeCache.counts
        XCTAssertGreaterThan(counts.hits, counts.misses)
    }
}
