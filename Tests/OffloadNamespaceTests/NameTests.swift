import XCTest
import OffloadCore
@testable import OffloadNamespace

/// lookup, mkdir, mknod, symlink, readlink, unlink, rmdir and their errors.
final class NameTests: XCTestCase {
    func testRootIsAnEmptyDirectory() throws {
        let f = try Fixture()
        let root = try f.fs.getattr(inode: .root)
        XCTAssertEqual(root.inode, .root)
        XCTAssertEqual(root.kind, .directory)
        XCTAssertEqual(root.linkCount, 2)
        XCTAssertEqual(root.permissions, 0o755)
        XCTAssertEqual(try f.names(), [])
    }

    func testMkdirThenLookupReturnsSameInode() throws {
        let f = try Fixture()
        let made = try f.mkdir("docs", mode: 0o750)
        XCTAssertEqual(made.kind, .directory)
        XCTAssertEqual(made.permissions, 0o750)
        XCTAssertEqual(made.linkCount, 2)
        XCTAssertEqual(made.uid, 1000)
        XCTAssertEqual(made.gid, 1000)
        XCTAssertNotEqual(made.inode, .root)
        let found = try f.lookup("docs")
        XCTAssertEqual(found.inode, made.inode)
        XCTAssertEqual(found.generation, made.generation)
        XCTAssertEqual(try f.names(), ["docs"])
    }

    func testLookupErrors() throws {
        let f = try Fixture()
        let file = try f.makeFile("file")
        assertThrows(.notFound) { try f.lookup("missing") }
        assertThrows(.notDirectory) { try f.lookup("x", in: file) }
        assertThrows(.staleInode) { try f.lookup("x", in: InodeNumber(999_999)) }
    }

    func testCreatingAnExistingNameIsEEXIST() throws {
        let f = try Fixture()
        try f.mkdir("a")
        try f.makeFile("b")
        assertThrows(.exists) { try f.mkdir("a") }
        assertThrows(.exists) { try f.mkdir("b") }
        assertThrows(.exists) {
            try f.fs.mknod(parent: .root, name: FileName("a"), mode: 0o010644, rdev: 0, context: .user)
        }
        assertThrows(.exists) {
            try f.fs.symlink(parent: .root, name: FileName("b"), target: Array("t".utf8), context: .user)
        }
        assertThrows(.exists) { try f.create("a", flags: O_RDWR | O_CREAT | O_EXCL) }
    }

    func testNamesOver255BytesAreENAMETOOLONG() throws {
        let f = try Fixture()
        let longest = String(repeating: "n", count: 255)
        try f.mkdir(longest)
        XCTAssertEqual(try f.lookup(longest).kind, .directory)
        assertThrows(.nameTooLong) { try FileName(String(repeating: "n", count: 256)) }
        assertInvalidArgument { try FileName("a/b") }
        assertInvalidArgument { try FileName("..") }
        assertInvalidArgument { try FileName([]) }
    }

    func testDirectoryLinkCountIsTwoPlusSubdirectories() throws {
        let f = try Fixture()
        let top = try f.mkdir("top").inode
        try f.mkdir("one", in: top)
        try f.mkdir("two", in: top)
        try f.makeFile("file", in: top)
        XCTAssertEqual(try f.fs.getattr(inode: top).linkCount, 4)
        XCTAssertEqual(try f.fs.getattr(inode: .root).linkCount, 3)
        try f.fs.rmdir(parent: top, name: FileName("one"))
        XCTAssertEqual(try f.fs.getattr(inode: top).linkCount, 3)
    }

    func testMknodMakesSpecialFilesWithMetadataOnly() throws {
        let f = try Fixture()
        let fifo = try f.fs.mknod(parent: .root, name: FileName("fifo"), mode: 0o010640, rdev: 7, context: .user)
        XCTAssertEqual(fifo.kind, .fifo)
        XCTAssertEqual(fifo.permissions, 0o640)
        XCTAssertEqual(fifo.rdev, 0, "rdev belongs to devices only")
        let socket = try f.fs.mknod(parent: .root, name: FileName("sock"), mode: 0o140600, rdev: 0, context: .user)
        XCTAssertEqual(socket.kind, .socket)
        let device = try f.fs.mknod(parent: .root, name: FileName("null"), mode: 0o020666,
                                    rdev: 0x0103, context: .root)
        XCTAssertEqual(device.kind, .characterDevice)
        XCTAssertEqual(device.rdev, 0x0103)
        XCTAssertEqual(device.mode, 0o020666)
        let block = try f.fs.mknod(parent: .root, name: FileName("blk"), mode: 0o060600, rdev: 0x0800, context: .root)
        XCTAssertEqual(block.kind, .blockDevice)
        let regular = try f.fs.mknod(parent: .root, name: FileName("plain"), mode: 0o100600, rdev: 0, context: .user)
        XCTAssertEqual(regular.kind, .regular)
        XCTAssertEqual(regular.size, 0)
        assertThrows(.notSupported) { try f.fs.open(inode: fifo.inode, flags: O_RDONLY) }
        assertInvalidArgument {
            try f.fs.mknod(parent: .root, name: FileName("d"), mode: 0o040755, rdev: 0, context: .user)
        }
        assertInvalidArgument {
            try f.fs.mknod(parent: .root, name: FileName("bad"), mode: 0o170644, rdev: 0, context: .user)
        }
        assertInvalidArgument {
            try f.fs.mknod(parent: .root, name: FileName("ln"), mode: 0o120777, rdev: 0, context: .user)
        }
        let untyped = try f.fs.mknod(parent: .root, name: FileName("untyped"), mode: 0o644, rdev: 0, context: .user)
        XCTAssertEqual(untyped.kind, .regular, "file type 0 is a regular file")
        XCTAssertEqual(try f.list(.root).filter { $0.name == Array("sock".utf8) }.first?.kind, .socket)
    }

    func testSymlinkAndReadlink() throws {
        let f = try Fixture()
        let target = Array("../some/where".utf8)
        let link = try f.fs.symlink(parent: .root, name: FileName("ln"), target: target, context: .user)
        XCTAssertEqual(link.kind, .symlink)
        XCTAssertEqual(link.permissions, 0o777)
        XCTAssertEqual(link.size, UInt64(target.count))
        XCTAssertEqual(try f.fs.readlink(inode: link.inode), target)
        let file = try f.makeFile("file")
        assertInvalidArgument { try f.fs.readlink(inode: file) }
        assertThrows(.symlinkLoop) { try f.fs.open(inode: link.inode, flags: O_RDONLY) }
    }

    func testSymlinkTargetLimits() throws {
        let f = try Fixture()
        let longest = [UInt8](repeating: 0x61, count: 4095)
        let link = try f.fs.symlink(parent: .root, name: FileName("max"), target: longest, context: .user)
        XCTAssertEqual(try f.fs.readlink(inode: link.inode), longest)
        assertThrows(.nameTooLong) {
            try f.fs.symlink(parent: .root, name: FileName("over"), target: longest + [0x61], context: .user)
        }
        assertThrows(.notFound) {
            try f.fs.symlink(parent: .root, name: FileName("empty"), target: [], context: .user)
        }
    }

    func testUnlinkAndRmdirErrors() throws {
        let f = try Fixture()
        let dir = try f.mkdir("dir").inode
        try f.makeFile("inner", in: dir)
        try f.makeFile("file")
        assertThrows(.notFound) { try f.fs.unlink(parent: .root, name: FileName("missing")) }
        assertThrows(.notFound) { try f.fs.rmdir(parent: .root, name: FileName("missing")) }
        assertThrows(.isDirectory) { try f.fs.unlink(parent: .root, name: FileName("dir")) }
        assertThrows(.notDirectory) { try f.fs.rmdir(parent: .root, name: FileName("file")) }
        assertThrows(.notEmpty) { try f.fs.rmdir(parent: .root, name: FileName("dir")) }
        let file = try f.lookup("file").inode
        assertThrows(.notDirectory) { try f.fs.unlink(parent: file, name: FileName("x")) }
        try f.fs.unlink(parent: dir, name: FileName("inner"))
        try f.fs.rmdir(parent: .root, name: FileName("dir"))
        try f.fs.unlink(parent: .root, name: FileName("file"))
        XCTAssertEqual(try f.names(), [])
        assertThrows(.notFound) { try f.lookup("dir") }
    }

    func testRemovedDirectoryRefusesNewEntriesAndShowsNoLinks() throws {
        let f = try Fixture()
        let dir = try f.mkdir("gone").inode
        try f.fs.rmdir(parent: .root, name: FileName("gone"))
        // The kernel still holds the mkdir reference, so the inode is still there.
        XCTAssertEqual(try f.fs.getattr(inode: dir).linkCount, 0)
        assertThrows(.notFound) { try f.mkdir("child", in: dir) }
        assertThrows(.notFound) { try f.create("child", in: dir) }
        f.fs.forget(inode: dir, lookups: 1)
        assertThrows(.staleInode) { try f.fs.getattr(inode: dir) }
    }

    func testInodeNumbersAreNeverReused() throws {
        let f = try Fixture()
        var seen = Set<InodeNumber>([.root])
        for round in 0..<50 {
            let inode = try f.makeFile("f\(round)")
            XCTAssertTrue(seen.insert(inode).inserted, "inode \(inode) handed out twice")
            try f.fs.unlink(parent: .root, name: FileName("f\(round)"))
            f.fs.forget(inode: inode, lookups: 1)
            assertThrows(.staleInode) { try f.fs.getattr(inode: inode) }
        }
    }

    func testForgetKeepsLinkedInodes() throws {
        let f = try Fixture()
        let inode = try f.makeFile("kept", contents: pattern(10))
        _ = try f.lookup("kept")
        f.fs.forget(inode: inode, lookups: 2)
        f.fs.forget(inode: inode, lookups: 5)  // more than it holds: clamped, no crash
        let again = try f.lookup("kept")
        XCTAssertEqual(again.inode, inode)
        XCTAssertEqual(again.size, 10)
    }
}
