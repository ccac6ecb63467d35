import XCTest
import Foundation
import OffloadCore
import OffloadImageGenerator
import OffloadNamespace

/// `ImageGenerator` (offloadfs-genimage, for scripts/bench-scale): the image it makes,
/// reopened as a mount opens it, holds every file of the layout with its size and bytes,
/// and nothing else.
final class ImageGeneratorTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-genimage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testLayoutNamesFilesAsBenchScaleExpects() {
        let layout = GeneratedLayout(files: 2500, filesPerDirectory: 1000, singleDirectoryFiles: 7)
        XCTAssertEqual(layout.spreadDirectories, 3)
        XCTAssertEqual(layout.totalDirectories, 4)
        XCTAssertEqual(layout.path(ofFile: 0), "d000000/f00000000")
        XCTAssertEqual(layout.path(ofFile: 1234), "d000001/f00001234")
        XCTAssertEqual(layout.path(ofFile: 2499), "d000002/f00002499")
        XCTAssertEqual(layout.path(ofFile: 2500), "single/f00002500")
        XCTAssertEqual(GeneratedLayout.contents(ofFile: 1), [])
        XCTAssertEqual(GeneratedLayout.contents(ofFile: 0), [])
        XCTAssertEqual(GeneratedLayout.contents(ofFile: 30), Array(0..<30))
        XCTAssertEqual(GeneratedLayout.contents(ofFile: 100), Array(0..<100))
        XCTAssertEqual(GeneratedLayout.contents(ofFile: 110), Array(0..<9))
    }

    /// 2,000 files: 1,000 over four directories of 250 (the last one full), 1,000 in one
    /// directory; the maintenance runs every 10 ms meanwhile, so commits land among the
    /// creates. Reopened, the image must hold exactly these files with these bytes.
    func testGeneratedImageHoldsEveryFileWithItsBytes() throws {
        let path = directory.appendingPathComponent("image.bin").path
        let layout = GeneratedLayout(files: 1000, filesPerDirectory: 250, singleDirectoryFiles: 1000)
        var reported: [Int] = []
        let timing = try ImageGenerator.generate(path: path, layout: layout, capacity: .set(256 << 20),
                                                 maintenanceInterval: 0.01, progressEvery: 300) { reported.append($0) }
        XCTAssertEqual(reported, [300, 600, 900, 1200, 1500, 1800, 2000])
        XCTAssertGreaterThan(timing.totalSeconds, 0)

        let fileSystem = try ImageFileSystem.open(path: path, capacity: .kept(default: 256 << 20),
                                                  memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        defer { try? fileSystem.close() }
        XCTAssertFalse(fileSystem.report.created)
        // The root, the directories and the files; nothing else.
        XCTAssertEqual(fileSystem.report.inodes, 1 + layout.totalDirectories + layout.totalFiles)
        let fs = fileSystem.operations
        XCTAssertEqual(try names(in: .root, fs), ["d000000", "d000001", "d000002", "d000003", "single"])

        var expected: [String: [String]] = [:]
        for index in 0..<layout.totalFiles {
            let (directoryName, name) = layout.location(ofFile: index)
            expected[directoryName, default: []].append(name)
        }
        var checked = 0
        for (directoryName, fileNames) in expected {
            let parent = try fs.lookup(parent: .root, name: FileName(directoryName))
            XCTAssertEqual(parent.kind, .directory)
            XCTAssertEqual(try names(in: parent.inode, fs), fileNames.sorted(), directoryName)
            for name in fileNames {
                let index = Int(name.dropFirst())!
                let attributes = try fs.lookup(parent: parent.inode, name: FileName(name))
                let contents = GeneratedLayout.contents(ofFile: index)
                XCTAssertEqual(attributes.kind, .regular, name)
                XCTAssertEqual(attributes.permissions, 0o644, name)
                XCTAssertEqual(attributes.uid, 0, name)
                XCTAssertEqual(attributes.size, UInt64(contents.count), name)
                let handle = try fs.open(inode: attributes.inode, flags: O_RDONLY)
                XCTAssertEqual(try fs.read(inode: attributes.inode, handle: handle, offset: 0, count: 4096), contents, name)
                fs.release(inode: attributes.inode, handle: handle)
                fs.forget(inode: attributes.inode, lookups: 1)
                checked += 1
            }
            fs.forget(inode: parent.inode, lookups: 1)
        }
        XCTAssertEqual(checked, 2000)
    }

    /// An existing file is never overwritten, even an image.
    func testRefusesAnExistingImage() throws {
        let path = directory.appendingPathComponent("image.bin").path
        let layout = GeneratedLayout(files: 3)
        _ = try ImageGenerator.generate(path: path, layout: layout, capacity: .set(64 << 20), maintenanceInterval: 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ImageGenerator.generate(path: path, layout: layout, capacity: .set(64 << 20))) { error in
            guard case FSError.invalidArgument(let why) = error else { return XCTFail("got \(error)") }
            XCTAssertTrue(why.contains("exists"), why)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
    }

    private func names(in directory: InodeNumber, _ fs: any FileSystemOperations) throws -> [String] {
        let handle = try fs.opendir(inode: directory)
        defer { fs.releasedir(inode: directory, handle: handle) }
        var names: [String] = []
        var offset: UInt64 = 0
        while true {
            let page = try fs.readdir(inode: directory, handle: handle, offset: offset, limit: 500)
            guard let last = page.last else { break }
            names += page.map { String(decoding: $0.name, as: UTF8.self) }.filter { $0 != "." && $0 != ".." }
            offset = last.nextOffset
        }
        return names.sorted()
    }
}
