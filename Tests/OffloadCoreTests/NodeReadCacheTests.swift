import XCTest
@testable import OffloadCore
import OffloadSimulation

/// A reader's node cache (`NodeReadCache`): repeated lookups through one reader are served
/// from validated copies and answer exactly what a reader without the cache answers; a
/// slot holds a node only as its parent recorded it, and the cache's slots are replaced in
/// turn when more nodes are read than it holds.
final class NodeReadCacheTests: XCTestCase {
    func testAReadersRepeatedLookupsComeFromItsCacheAndReadTheSame() throws {
        let storage = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 64 << 20, imageID: 11, nameHashKey: SipHash24(key0: 1, key1: 2))
        let now = RecordTime(seconds: 0, nanoseconds: 0)
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
        let cached = try volume.reader()
        let plain = try FileSystemTree(tree: CopyOnWriteTree(pages: volume.filesystemPages, imageID: 11, treeID: TreeVolume.filesystemTreeID,
                                                              root: volume.current.filesystemTree), hashes: volume.filesystem.hashes)
        for round in 0..<2 {
            for i in stride(from: 0, to: 5000, by: 7) {
                let name = Array("f\(i)".utf8)
                XCTAssertEqual(try cached.lookup(directory: 1, name: name), try plain.lookup(directory: 1, name: name), "round \(round), f\(i)")
                XCTAssertEqual(try cached.inode(UInt64(2 + i)), try plain.inode(UInt64(2 + i)))
            }
        }
        let counts = cached.view.tree.tree.nodeCacheCounts
        XCTAssertGreaterThan(counts.hits, counts.misses, "the second round and the upper levels come from the cache: \(counts)")
        print("node cache: \(counts.hits) hits, \(counts.misses) misses over two rounds of lookups")
    }

    func testSlotsAreReplacedInTurnAndAMismatchIsAMiss() {
        let cache = NodeReadCache(capacity: 2)
        let page = UnsafeMutableRawPointer.allocate(byteCount: TreeNode.size, alignment: 16)
        defer { page.deallocate() }
        page.initializeMemory(as: UInt8.self, repeating: 7, count: TreeNode.size)
        cache.insert(10, level: 0, generation: 3, checksum: 99, from: page)
        cache.insert(11, level: 0, generation: 3, checksum: 98, from: page)
        XCTAssertTrue(cache.copy(10, level: 0, generation: 3, checksum: 99, into: page))
        XCTAssertFalse(cache.copy(10, level: 0, generation: 3, checksum: 1, into: page), "another checksum than the parent's")
        XCTAssertFalse(cache.copy(10, level: 1, generation: 3, checksum: 99, into: page), "another level")
        cache.insert(12, level: 0, generation: 3, checksum: 97, from: page)
        XCTAssertFalse(cache.copy(10, level: 0, generation: 3, checksum: 99, into: page), "the oldest slot went to block 12")
        XCTAssertTrue(cache.copy(11, level: 0, generation: 3, checksum: 98, into: page))
        XCTAssertTrue(cache.copy(12, level: 0, generation: 3, checksum: 97, into: page))
    }
}
