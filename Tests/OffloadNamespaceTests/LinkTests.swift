import XCTest
import OffloadCore
@testable import OffloadNamespace

/// Hard links: counts, errors, limits.
final class LinkTests: XCTestCase {
    func testLinkAddsANameAndCountsIt() throws {
        let f = try Fixture()
        let dir = try f.mkdir("dir").inode
        let inode = try f.makeFile("a", contents: pattern(100))
        let before = try f.fs.getattr(inode: inode)
        let t = f.clock.advance()
        let linked = try f.fs.link(inode: inode, newParent: dir, newName: FileName("b"))
        XCTAssertEqual(linked.inode, inode)
        XCTAssertEqual(linked.linkCount, 2)
        XCTAssertEqual(linked.changeTime, t)
        XCTAssertEqual(linked.modificationTime, before.modificationTime)
        XCTAssertEqual(try f.fs.getattr(inode: dir).modificationTime, t)
        XCTAssertEqual(try f.lookup("b", in: dir).inode, inode)

        try f.fs.unlink(parent: .root, name: FileName("a"))
        let after = try f.fs.getattr(inode: inode)
        XCTAssertEqual(after.linkCount, 1)
        XCTAssertEqual(try f.lookup("b", in: dir).linkCount, 1)
        let handle = try f.fs.open(inode: inode, flags: O_RDONLY)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 0, count: 100), pattern(100))
        f.fs.release(inode: inode, handle: handle)
    }

    func testLinkErrors() throws {
        let f = try Fixture()
        let dir = try f.mkdir("dir").inode
        let file = try f.makeFile("file")
        try f.makeFile("taken")
        assertThrows(.notPermitted) { try f.fs.link(inode: dir, newParent: .root, newName: FileName("d2")) }
        assertThrows(.exists) { try f.fs.link(inode: file, newParent: .root, newName: FileName("taken")) }
        assertThrows(.notDirectory) { try f.fs.link(inode: file, newParent: file, newName: FileName("x")) }
    }

    func testUnlinkedOpenFileCannotGetANewName() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("tmp")
        try f.fs.unlink(parent: .root, name: FileName("tmp"))
        assertThrows(.notFound) {
            try f.fs.link(inode: attributes.inode, newParent: .root, newName: FileName("back"))
        }
        f.fs.release(inode: attributes.inode, handle: handle)
    }

    func testLinkCountLimitIsEMLINK() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")
        for i in 1..<Int(Namespace.maximumLinkCount) {
            _ = try f.fs.link(inode: inode, newParent: .root, newName: FileName("l\(i)"))
        }
        XCTAssertEqual(try f.fs.getattr(inode: inode).linkCount, Namespace.maximumLinkCount)
        assertThrows(.tooManyLinks) {
            try f.fs.link(inode: inode, newParent: .root, newName: FileName("one-more"))
        }
    }
}
