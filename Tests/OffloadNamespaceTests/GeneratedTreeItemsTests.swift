import XCTest
import OffloadCore
import OffloadImageGenerator
import OffloadSimulation

/// `GeneratedTreeItems` bulk-loaded into a `TreeVolume` (the scale benchmark's format 2
/// images): every file of the layout is found by name in its directory, with its size,
/// bytes and back reference, readdir lists each directory in order, the block tree holds
/// every node, and the image reopens and takes further commits.
final class GeneratedTreeItemsTests: XCTestCase {
    func testABulkLoadedLayoutReadsBackFileByFileAndTakesCommits() throws {
        let layout = GeneratedLayout(files: 2_500, filesPerDirectory: 1_000, singleDirectoryFiles: 1_700)
        let storage = CrashSimulatingStorage(maximumBytes: 16 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 3, nameHashKey: SipHash24(key0: 8, key1: 9))
        let items = GeneratedTreeItems(layout: layout, hashes: volume.filesystem.hashes)
        try volume.bulkLoad(items)
        let report = try volume.filesystem.tree.check()
        let files = layout.totalFiles, directories = layout.totalDirectories
        let withBytes = (0..<files).filter { !GeneratedLayout.contents(ofFile: $0).isEmpty }.count
        let inodes = 1 + directories + files, links = directories + files
        let names = links - Self.sharedNameItems(volume, layout), indexes = links
        XCTAssertEqual(report.items, inodes + links + withBytes + names + indexes,
                       "items: inodes, back references, extents, names, indexes")
        var nodeBlocks = 0
        for run in try volume.space.blockTree.allRuns() where run.use == .node(tree: TreeVolume.filesystemTreeID) {
            nodeBlocks += run.blocks.count
        }
        XCTAssertEqual(nodeBlocks, report.nodes, "the block tree records every node of the bulk-loaded tree")

        let reopened = try TreeVolume.open(storage)
        for volume in [volume, reopened] {
            let reader = try volume.reader()
            XCTAssertEqual(try reader.entries(directory: 1).map { String(decoding: $0.name, as: UTF8.self) },
                           ["d000000", "d000001", "d000002", "single"])
            for index in stride(from: 0, to: layout.totalFiles, by: 37) {
                let (directoryName, name) = layout.location(ofFile: index)
                let directory = try XCTUnwrap(reader.lookup(directory: 1, name: Array(directoryName.utf8)))
                let entry = try XCTUnwrap(reader.lookup(directory: directory.child, name: Array(name.utf8)), "\(directoryName)/\(name)")
                XCTAssertEqual(entry.child, items.fileInode(index))
                let contents = GeneratedLayout.contents(ofFile: index)
                XCTAssertEqual(try reader.inode(entry.child)?.size, UInt64(contents.count))
                let extents = try volume.filesystem.extents(entry.child, overlapping: 0..<UInt64.max)
                XCTAssertEqual(extents.map(\.extent), contents.isEmpty ? [] : [.inline(contents)])
                XCTAssertEqual(try volume.filesystem.links(of: entry.child),
                               [Link(directory: directory.child, index: entry.index, name: Array(name.utf8))])
            }
            let single = try XCTUnwrap(reader.lookup(directory: 1, name: Array("single".utf8)))
            let listed = try reader.entries(directory: single.child)
            XCTAssertEqual(listed.count, 1_700)
            XCTAssertEqual(listed.map(\.index), (3..<3 + 1_700).map { UInt64($0) })
        }
        // And it takes changes.
        var root = try XCTUnwrap(reopened.reader().inode(1))
        root.permissions = 0o700
        try reopened.perform([.attributes(inode: 1, root)])
        try reopened.commit()
        XCTAssertEqual(try TreeVolume.open(storage).reader().inode(1)?.permissions, 0o700)
    }

    /// Names of one directory whose hashes collide share a name item.
    static func sharedNameItems(_ volume: TreeVolume, _ layout: GeneratedLayout) -> Int {
        let items = GeneratedTreeItems(layout: layout, hashes: volume.filesystem.hashes)
        var shared = 0
        for directory in 0..<layout.totalDirectories {
            let hashes = items.files(ofDirectory: directory).map { volume.filesystem.hashes.name(Array(GeneratedLayout.fileName($0).utf8)) }
            shared += hashes.count - Set(hashes).count
        }
        return shared
    }
}
