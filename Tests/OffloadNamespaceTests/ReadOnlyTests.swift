import Foundation
import XCTest
import OffloadCore
@testable import OffloadNamespace

/// A read-only open, in-process: it replays a journal tail in memory (RAM pieces
/// included, past the memory budget), serves the tree, refuses every change with
/// `.readOnly` (EROFS), and leaves the image byte for byte as it was.
final class ReadOnlyTests: XCTestCase {
    private var directory: URL!
    private var image: String { directory.appendingPathComponent("image.bin").path }
    private let context = RequestContext(uid: 0, gid: 0)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-ro-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    func testAJournalTailIsReplayedInMemoryAndNothingIsWritten() throws {
        let expected: TreeSnapshot
        do {
            let fileSystem = try ImageFileSystem.open(path: image, capacityBytes: 64 << 20,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
            let fs = fileSystem.namespace
            let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: context).inode
            for (name, count) in [("small", 100), ("large", 70_000)] {
                let (attributes, handle) = try fs.create(parent: directory, name: FileName(name), mode: 0o100644,
                                                         flags: O_RDWR, context: context)
                let data = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7) }
                _ = try data.withUnsafeBytes { try fs.write(inode: attributes.inode, handle: handle, offset: 0, data: $0) }
                fs.release(inode: attributes.inode, handle: handle)
            }
            try fs.setxattr(inode: directory, name: Array("user.k".utf8), value: [1, 2], mode: .createOrReplace)
            expected = try TreeSnapshot(fs)
            // Dropped without close: the changes are only in the journal (what kill -9 leaves).
        }
        let before = try Data(contentsOf: URL(fileURLWithPath: image))

        let readOnly = try ImageFileSystem.open(path: image, capacity: .kept(default: 64 << 20), readOnly: true,
                                                memoryLimiter: MemoryLimiter(limitBytes: 0))
        XCTAssertTrue(readOnly.isReadOnly)
        XCTAssertNil(readOnly.journal)
        XCTAssertEqual(try TreeSnapshot(readOnly.namespace), expected, "the journal tail is replayed in memory")

        let ops = readOnly.operations
        let d = try ops.lookup(parent: .root, name: FileName("d")).inode
        let small = try ops.lookup(parent: d, name: FileName("small")).inode
        let refusals: [(String, () throws -> Void)] = [
            ("mkdir", { _ = try ops.mkdir(parent: .root, name: FileName("x"), mode: 0o755, context: self.context) }),
            ("create", { _ = try ops.create(parent: .root, name: FileName("x"), mode: 0o100644, flags: O_RDWR, context: self.context) }),
            ("unlink", { try ops.unlink(parent: d, name: FileName("small")) }),
            ("rename", { try ops.rename(parent: d, name: FileName("small"), newParent: .root, newName: FileName("y"), flags: []) }),
            ("setattr", { _ = try ops.setattr(inode: small, changes: AttributeChanges(size: 0), context: self.context) }),
            ("setxattr", { try ops.setxattr(inode: small, name: Array("user.x".utf8), value: [1], mode: .createOrReplace) }),
            ("removexattr", { try ops.removexattr(inode: d, name: Array("user.k".utf8)) }),
            ("open for writing", { _ = try ops.open(inode: small, flags: O_WRONLY) }),
            ("open with O_TRUNC", { _ = try ops.open(inode: small, flags: O_RDONLY | O_TRUNC) }),
        ]
        for (name, attempt) in refusals {
            XCTAssertThrowsError(try attempt(), "\(name) was allowed on a read-only filesystem") {
                XCTAssertEqual($0 as? FSError, .readOnly, name)
            }
        }
        let handle = try ops.open(inode: small, flags: O_RDONLY)
        XCTAssertEqual(try ops.read(inode: small, handle: handle, offset: 0, count: 10).count, 10)
        try ops.fsync(inode: small, handle: handle, dataOnly: false)
        ops.release(inode: small, handle: handle)
        try readOnly.close()
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image)), before, "not one byte written")
    }

    func testWhatAReadOnlyOpenCannotDo() throws {
        XCTAssertThrowsError(try ImageFileSystem.open(path: image, capacity: .kept(default: 1 << 20), readOnly: true,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 0))) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        XCTAssertTrue(FileManager.default.createFile(atPath: image, contents: Data()))
        XCTAssertThrowsError(try ImageFileSystem.open(path: image, capacity: .kept(default: 1 << 20), readOnly: true,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 0))) {
            XCTAssertTrue("\($0)".contains("cannot create one"), "\($0)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image)), Data(), "an empty file stays empty")
        XCTAssertThrowsError(try ImageFileSystem.open(path: image, capacity: .kept(default: 1 << 20), readOnly: true,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 0), repair: true))
    }
}
