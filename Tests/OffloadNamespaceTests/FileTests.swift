import XCTest
import OffloadCore
@testable import OffloadNamespace

/// open, create, read, write, truncation, fallocate, lseek, copy_file_range, handles.
final class FileTests: XCTestCase {
    func testCreateWriteReadBack() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("data", mode: 0o640)
        XCTAssertEqual(attributes.kind, .regular)
        XCTAssertEqual(attributes.permissions, 0o640)
        XCTAssertEqual(attributes.linkCount, 1)
        XCTAssertEqual(attributes.size, 0)
        let bytes = pattern(10_000)
        XCTAssertEqual(try f.write(attributes.inode, handle, at: 0, bytes), 10_000)
        XCTAssertEqual(try f.fs.read(inode: attributes.inode, handle: handle, offset: 0, count: 20_000), bytes)
        XCTAssertEqual(try f.fs.read(inode: attributes.inode, handle: handle, offset: 9_990, count: 100),
                       Array(bytes[9_990...]))
        XCTAssertEqual(try f.fs.read(inode: attributes.inode, handle: handle, offset: 50_000, count: 10), [])
        XCTAssertEqual(try f.fs.getattr(inode: attributes.inode).size, 10_000)
        try f.fs.flush(inode: attributes.inode, handle: handle)
        try f.fs.fsync(inode: attributes.inode, handle: handle, dataOnly: true)
        f.fs.release(inode: attributes.inode, handle: handle)
    }

    func testCreateWithoutExclOpensAnExistingFile() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f", contents: pattern(50))
        let (attributes, handle) = try f.create("f", flags: O_RDWR | O_CREAT)
        XCTAssertEqual(attributes.inode, inode)
        XCTAssertEqual(attributes.size, 50)
        f.fs.release(inode: inode, handle: handle)
        let (truncated, second) = try f.create("f", flags: O_RDWR | O_CREAT | O_TRUNC)
        XCTAssertEqual(truncated.size, 0)
        f.fs.release(inode: inode, handle: second)
        assertThrows(.exists) { try f.create("f", flags: O_RDWR | O_CREAT | O_EXCL) }
        try f.mkdir("d")
        assertThrows(.isDirectory) { try f.create("d", flags: O_RDWR | O_CREAT) }
    }

    func testOpenWithTruncEmptiesTheFileAndMarksTimes() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f", contents: pattern(3 * 4096))
        XCTAssertEqual(f.liveBytes, 3 * 4096)
        let t = f.clock.advance()
        let handle = try f.fs.open(inode: inode, flags: O_WRONLY | O_TRUNC)
        let attributes = try f.fs.getattr(inode: inode)
        XCTAssertEqual(attributes.size, 0)
        XCTAssertEqual(attributes.blocks, 0)
        XCTAssertEqual(attributes.modificationTime, t)
        XCTAssertEqual(attributes.changeTime, t)
        XCTAssertEqual(f.liveBytes, 0)
        f.fs.release(inode: inode, handle: handle)
    }

    func testOpenWithoutTruncKeepsData() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f", contents: pattern(10))
        let handle = try f.fs.open(inode: inode, flags: O_RDWR)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 0, count: 10), pattern(10))
        f.fs.release(inode: inode, handle: handle)
        let dir = try f.mkdir("d").inode
        assertThrows(.isDirectory) { try f.fs.open(inode: dir, flags: O_RDONLY) }
    }

    func testAppendHandleWritesAtEndOfFile() throws {
        let f = try Fixture()
        let inode = try f.makeFile("log", contents: Array("hello".utf8))
        let handle = try f.fs.open(inode: inode, flags: O_WRONLY | O_APPEND)
        _ = try f.write(inode, handle, at: 0, Array(" world".utf8))
        _ = try f.write(inode, handle, at: 2, Array("!".utf8))
        let reader = try f.fs.open(inode: inode, flags: O_RDONLY)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: reader, offset: 0, count: 100),
                       Array("hello world!".utf8))
        f.fs.release(inode: inode, handle: handle)
        f.fs.release(inode: inode, handle: reader)
    }

    func testHandleModesAndOwnership() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f", contents: pattern(10))
        let other = try f.makeFile("g")
        let readOnly = try f.fs.open(inode: inode, flags: O_RDONLY)
        assertThrows(.badHandle) { try f.write(inode, readOnly, at: 0, [1]) }
        assertThrows(.badHandle) { try f.fs.read(inode: other, handle: readOnly, offset: 0, count: 1) }
        assertThrows(.badHandle) { try f.fs.read(inode: inode, handle: FileHandle(424_242), offset: 0, count: 1) }
        // With the writeback cache the kernel reads through write-only handles.
        let writeOnly = try f.fs.open(inode: inode, flags: O_WRONLY)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: writeOnly, offset: 0, count: 10), pattern(10))
        f.fs.release(inode: inode, handle: readOnly)
        f.fs.release(inode: inode, handle: writeOnly)
        assertThrows(.badHandle) { try f.fs.read(inode: inode, handle: readOnly, offset: 0, count: 1) }
        assertThrows(.badHandle) { try f.fs.flush(inode: inode, handle: readOnly) }
        let dirHandle = try f.fs.opendir(inode: .root)
        assertThrows(.badHandle) { try f.fs.read(inode: .root, handle: dirHandle, offset: 0, count: 1) }
        f.fs.releasedir(inode: .root, handle: dirHandle)
    }

    func testZeroLengthWriteChangesNothing() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        let t = f.clock.advance()
        XCTAssertEqual(try f.write(attributes.inode, handle, at: 1 << 20, []), 0)
        let after = try f.fs.getattr(inode: attributes.inode)
        XCTAssertEqual(after.size, 0)
        XCTAssertNotEqual(after.modificationTime, t)
        f.fs.release(inode: attributes.inode, handle: handle)
    }

    func testWritesPastTheLargestSizeAreEFBIG() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        assertThrows(.fileTooLarge) { try f.write(attributes.inode, handle, at: OffloadedFile.maximumSize, [1]) }
        assertThrows(.fileTooLarge) { try f.write(attributes.inode, handle, at: UInt64.max - 1, [1, 2, 3]) }
        // 4 GiB and beyond is fine: the file is sparse.
        let far: UInt64 = (4 << 30) + 123
        XCTAssertEqual(try f.write(attributes.inode, handle, at: far, [7, 8, 9]), 3)
        XCTAssertEqual(try f.fs.read(inode: attributes.inode, handle: handle, offset: far - 1, count: 10), [0, 7, 8, 9])
        XCTAssertEqual(try f.fs.getattr(inode: attributes.inode).size, far + 3)
        f.fs.release(inode: attributes.inode, handle: handle)
    }

    func testSetattrSizeWithAndWithoutHandle() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        let inode = attributes.inode
        _ = try f.write(inode, handle, at: 0, pattern(8192))
        let t = f.clock.advance()
        let shrunk = try f.fs.setattr(inode: inode, changes: AttributeChanges(size: 100, handle: handle), context: .user)
        XCTAssertEqual(shrunk.size, 100)
        XCTAssertEqual(shrunk.modificationTime, t)
        XCTAssertEqual(shrunk.changeTime, t)
        let grown = try f.fs.setattr(inode: inode, changes: AttributeChanges(size: 1 << 20), context: .user)
        XCTAssertEqual(grown.size, 1 << 20)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 90, count: 20),
                       Array(pattern(100)[90...]) + [UInt8](repeating: 0, count: 10))
        assertThrows(.fileTooLarge) {
            try f.fs.setattr(inode: inode, changes: AttributeChanges(size: UInt64.max), context: .user)
        }
        let dir = try f.mkdir("d").inode
        assertThrows(.isDirectory) { try f.fs.setattr(inode: dir, changes: AttributeChanges(size: 0), context: .user) }
        let link = try f.fs.symlink(parent: .root, name: FileName("l"), target: [0x61], context: .user).inode
        assertInvalidArgument { try f.fs.setattr(inode: link, changes: AttributeChanges(size: 0), context: .user) }
        assertThrows(.badHandle) {
            try f.fs.setattr(inode: inode, changes: AttributeChanges(size: 0, handle: FileHandle(999)), context: .user)
        }
        f.fs.release(inode: inode, handle: handle)
    }

    func testBlocksCountOnlyWhatIsStored() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("sparse")
        let inode = attributes.inode
        _ = try f.write(inode, handle, at: 10 << 20, pattern(4096))
        var stat = try f.fs.getattr(inode: inode)
        XCTAssertEqual(stat.size, (10 << 20) + 4096)
        XCTAssertEqual(stat.blocks, 8, "one 4 KiB block = 8 units of 512 bytes; the hole is free")
        _ = try f.fs.setattr(inode: inode, changes: AttributeChanges(size: 20 << 20), context: .user)
        XCTAssertEqual(try f.fs.getattr(inode: inode).blocks, 8, "growing by truncate adds a hole")
        _ = try f.write(inode, handle, at: 0, pattern(100))
        stat = try f.fs.getattr(inode: inode)
        XCTAssertEqual(stat.blocks, 9, "stored bytes (4096 + 100), rounded up to 512-byte units")
        XCTAssertEqual(f.liveBytes, 2 * 4096)
        f.fs.release(inode: inode, handle: handle)
    }

    func testFallocateModes() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        let inode = attributes.inode
        _ = try f.write(inode, handle, at: 0, pattern(4 * 4096))
        XCTAssertEqual(try f.fs.getattr(inode: inode).blocks, 32)
        let t = f.clock.advance()
        try f.fs.fallocate(inode: inode, handle: handle, offset: 4096, length: 8192, mode: .punchHole)
        var stat = try f.fs.getattr(inode: inode)
        XCTAssertEqual(stat.size, 4 * 4096)
        XCTAssertEqual(stat.blocks, 16)
        XCTAssertEqual(stat.modificationTime, t)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 4096, count: 4),
                       [0, 0, 0, 0])
        try f.fs.fallocate(inode: inode, handle: handle, offset: 0, length: 10, mode: .zeroRange(keepSize: true))
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 8, count: 4),
                       [0, 0] + Array(pattern(12)[10...]))
        try f.fs.fallocate(inode: inode, handle: handle, offset: 0, length: 1 << 20,
                           mode: .allocate(keepSize: true))
        stat = try f.fs.getattr(inode: inode)
        XCTAssertEqual(stat.size, 4 * 4096, "KEEP_SIZE does not grow the file")
        try f.fs.fallocate(inode: inode, handle: handle, offset: 0, length: 1 << 20,
                           mode: .allocate(keepSize: false))
        XCTAssertEqual(try f.fs.getattr(inode: inode).size, 1 << 20)
        assertInvalidArgument {
            try f.fs.fallocate(inode: inode, handle: handle, offset: 0, length: 0, mode: .punchHole)
        }
        assertThrows(.fileTooLarge) {
            try f.fs.fallocate(inode: inode, handle: handle, offset: UInt64.max - 5, length: 10,
                               mode: .allocate(keepSize: false))
        }
        let readOnly = try f.fs.open(inode: inode, flags: O_RDONLY)
        assertThrows(.badHandle) {
            try f.fs.fallocate(inode: inode, handle: readOnly, offset: 0, length: 1, mode: .punchHole)
        }
        f.fs.release(inode: inode, handle: readOnly)
        f.fs.release(inode: inode, handle: handle)
    }

    func testSeekDataAndHole() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("f")
        let inode = attributes.inode
        _ = try f.write(inode, handle, at: 1 << 20, pattern(4096))
        _ = try f.fs.setattr(inode: inode, changes: AttributeChanges(size: 2 << 20), context: .user)
        XCTAssertEqual(try f.fs.lseek(inode: inode, handle: handle, offset: 0, target: .data), 1 << 20)
        XCTAssertEqual(try f.fs.lseek(inode: inode, handle: handle, offset: 0, target: .hole), 0)
        XCTAssertEqual(try f.fs.lseek(inode: inode, handle: handle, offset: 1 << 20, target: .hole),
                       (1 << 20) + 4096)
        assertThrows(.noSuchOffset) {
            try f.fs.lseek(inode: inode, handle: handle, offset: (1 << 20) + 4096, target: .data)
        }
        assertThrows(.noSuchOffset) { try f.fs.lseek(inode: inode, handle: handle, offset: 3 << 20, target: .hole) }
        f.fs.release(inode: inode, handle: handle)
    }

    func testCopyFileRangeSharesBlocks() throws {
        let f = try Fixture()
        let (source, input) = try f.create("src")
        _ = try f.write(source.inode, input, at: 0, pattern(16 * 4096))
        XCTAssertEqual(f.liveBytes, 16 * 4096)
        let (destination, output) = try f.create("dst")
        let t = f.clock.advance()
        let copied = try f.fs.copyFileRange(from: source.inode, sourceHandle: input, sourceOffset: 0,
                                            to: destination.inode, destinationHandle: output,
                                            destinationOffset: 0, length: 1 << 20)
        XCTAssertEqual(copied, 16 * 4096, "short at the source's end of file")
        XCTAssertEqual(f.liveBytes, 16 * 4096, "the range is shared, not copied")
        XCTAssertEqual(try f.fs.read(inode: destination.inode, handle: output, offset: 0, count: 1 << 20),
                       pattern(16 * 4096))
        XCTAssertEqual(try f.fs.getattr(inode: destination.inode).modificationTime, t)
        assertInvalidArgument {
            try f.fs.copyFileRange(from: source.inode, sourceHandle: input, sourceOffset: 0,
                                   to: source.inode, destinationHandle: input,
                                   destinationOffset: 4096, length: 8192)
        }
        let appender = try f.fs.open(inode: destination.inode, flags: O_WRONLY | O_APPEND)
        assertThrows(.badHandle) {
            try f.fs.copyFileRange(from: source.inode, sourceHandle: input, sourceOffset: 0,
                                   to: destination.inode, destinationHandle: appender,
                                   destinationOffset: 0, length: 10)
        }
        f.fs.release(inode: destination.inode, handle: appender)
        f.fs.release(inode: source.inode, handle: input)
        f.fs.release(inode: destination.inode, handle: output)
    }
}
