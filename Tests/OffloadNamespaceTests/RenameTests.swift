import XCTest
import OffloadCore
@testable import OffloadNamespace

/// rename(2) and renameat2(2): moves, replacement, flags, kind rules, cycles.
final class RenameTests: XCTestCase {
    private func rename(_ f: Fixture, _ from: String, in parent: InodeNumber = .root,
                        to: String, under newParent: InodeNumber = .root,
                        flags: RenameFlags = []) throws {
        try f.fs.rename(parent: parent, name: FileName(from), newParent: newParent,
                        newName: FileName(to), flags: flags)
    }

    func testRenameWithinADirectory() throws {
        let f = try Fixture()
        let inode = try f.makeFile("old", contents: pattern(10))
        let t = f.clock.advance()
        try rename(f, "old", to: "new")
        XCTAssertEqual(try f.names(), ["new"])
        let moved = try f.lookup("new")
        XCTAssertEqual(moved.inode, inode)
        XCTAssertEqual(moved.changeTime, t)
        XCTAssertEqual(try f.fs.getattr(inode: .root).modificationTime, t)
        assertThrows(.notFound) { try f.lookup("old") }
    }

    func testMovingADirectoryUpdatesLinkCountsAndDotDot() throws {
        let f = try Fixture()
        let a = try f.mkdir("a").inode
        let b = try f.mkdir("b").inode
        let child = try f.mkdir("child", in: a).inode
        XCTAssertEqual(try f.fs.getattr(inode: a).linkCount, 3)
        try rename(f, "child", in: a, to: "moved", under: b)
        XCTAssertEqual(try f.fs.getattr(inode: a).linkCount, 2)
        XCTAssertEqual(try f.fs.getattr(inode: b).linkCount, 3)
        let dotDot = try f.list(child).first { $0.name == [0x2E, 0x2E] }
        XCTAssertEqual(dotDot?.inode, b)
        XCTAssertEqual(try f.names(b), ["moved"])
        XCTAssertEqual(try f.names(a), [])
    }

    func testReplacingAFileDropsTheOldOne() throws {
        let f = try Fixture()
        let source = try f.makeFile("src", contents: pattern(8192))
        let victim = try f.makeFile("dst", contents: pattern(3 * 4096, seed: 9))
        XCTAssertEqual(f.liveBytes, 5 * 4096)
        try rename(f, "src", to: "dst")
        XCTAssertEqual(try f.names(), ["dst"])
        XCTAssertEqual(try f.lookup("dst").inode, source)
        XCTAssertEqual(try f.fs.getattr(inode: victim).linkCount, 0)
        f.fs.forget(inode: victim, lookups: 1)
        XCTAssertEqual(f.liveBytes, 2 * 4096, "the replaced file's blocks are freed")
        assertThrows(.staleInode) { try f.fs.getattr(inode: victim) }
    }

    func testRenameOverAnOpenFileKeepsItReadable() throws {
        let f = try Fixture()
        try f.makeFile("new", contents: pattern(100, seed: 1))
        let (old, handle) = try f.create("current")
        _ = try f.write(old.inode, handle, at: 0, pattern(100, seed: 2))
        try rename(f, "new", to: "current")
        f.fs.forget(inode: old.inode, lookups: 1)
        XCTAssertEqual(try f.fs.read(inode: old.inode, handle: handle, offset: 0, count: 100), pattern(100, seed: 2))
        XCTAssertEqual(try f.fs.getattr(inode: old.inode).linkCount, 0)
        f.fs.release(inode: old.inode, handle: handle)
        assertThrows(.staleInode) { try f.fs.getattr(inode: old.inode) }
    }

    func testReplacingAnEmptyDirectory() throws {
        let f = try Fixture()
        let source = try f.mkdir("src").inode
        try f.makeFile("inside", in: source)
        let victim = try f.mkdir("dst").inode
        XCTAssertEqual(try f.fs.getattr(inode: .root).linkCount, 4)
        try rename(f, "src", to: "dst")
        XCTAssertEqual(try f.lookup("dst").inode, source)
        XCTAssertEqual(try f.names(source), ["inside"])
        XCTAssertEqual(try f.fs.getattr(inode: victim).linkCount, 0)
        XCTAssertEqual(try f.fs.getattr(inode: .root).linkCount, 3)
    }

    func testKindRules() throws {
        let f = try Fixture()
        let full = try f.mkdir("full").inode
        try f.makeFile("x", in: full)
        try f.mkdir("dir")
        try f.makeFile("file")
        assertThrows(.notEmpty) { try rename(f, "dir", to: "full") }
        assertThrows(.notDirectory) { try rename(f, "dir", to: "file") }
        assertThrows(.isDirectory) { try rename(f, "file", to: "dir") }
        assertThrows(.notFound) { try rename(f, "missing", to: "anything") }
        let file = try f.lookup("file").inode
        assertThrows(.notDirectory) { try rename(f, "x", in: full, to: "y", under: file) }
        XCTAssertEqual(try f.names(), ["dir", "file", "full"])
    }

    func testADirectoryCannotMoveIntoItselfOrADescendant() throws {
        let f = try Fixture()
        let a = try f.mkdir("a").inode
        let b = try f.mkdir("b", in: a).inode
        let c = try f.mkdir("c", in: b).inode
        assertInvalidArgument { try rename(f, "a", to: "a2", under: a) }
        assertInvalidArgument { try rename(f, "a", to: "a2", under: c) }
        assertInvalidArgument { try rename(f, "b", in: a, to: "deeper", under: c) }
        try f.mkdir("empty", in: c)
        assertInvalidArgument { try rename(f, "a", to: "empty", under: c) }
        // The other way round is fine: c moves up to the root.
        try rename(f, "c", in: b, to: "c", under: .root)
        XCTAssertEqual(try f.names(), ["a", "c"])
    }

    func testNoReplace() throws {
        let f = try Fixture()
        try f.makeFile("a")
        try f.makeFile("b")
        assertThrows(.exists) { try rename(f, "a", to: "b", flags: .noReplace) }
        try rename(f, "a", to: "c", flags: .noReplace)
        XCTAssertEqual(try f.names(), ["b", "c"])
    }

    func testExchangeSwapsTwoNames() throws {
        let f = try Fixture()
        let left = try f.mkdir("left").inode
        let right = try f.mkdir("right").inode
        let dir = try f.mkdir("dir", in: left).inode
        let file = try f.makeFile("file", in: right)
        try rename(f, "dir", in: left, to: "file", under: right, flags: .exchange)
        XCTAssertEqual(try f.lookup("dir", in: left).inode, file)
        XCTAssertEqual(try f.lookup("file", in: right).inode, dir)
        XCTAssertEqual(try f.fs.getattr(inode: left).linkCount, 2)
        XCTAssertEqual(try f.fs.getattr(inode: right).linkCount, 3)
        XCTAssertEqual(try f.list(dir).first { $0.name == [0x2E, 0x2E] }?.inode, right)
        XCTAssertEqual(try f.list(left).first { $0.name == Array("dir".utf8) }?.kind, .regular)
    }

    func testExchangeErrors() throws {
        let f = try Fixture()
        let a = try f.mkdir("a").inode
        try f.mkdir("b", in: a)
        try f.makeFile("f")
        assertThrows(.notFound) { try rename(f, "f", to: "missing", flags: .exchange) }
        assertInvalidArgument { try rename(f, "f", to: "a", flags: [.exchange, .noReplace]) }
        assertInvalidArgument {
            try f.fs.rename(parent: .root, name: FileName("f"), newParent: .root,
                            newName: FileName("a"), flags: RenameFlags(rawValue: 4))
        }
        // a would end up inside its own child b.
        assertInvalidArgument { try rename(f, "a", to: "b", under: a, flags: .exchange) }
    }

    func testRenamingOneHardLinkOntoAnotherDoesNothing() throws {
        let f = try Fixture()
        let inode = try f.makeFile("one")
        _ = try f.fs.link(inode: inode, newParent: .root, newName: FileName("two"))
        try rename(f, "one", to: "two")
        XCTAssertEqual(try f.names(), ["one", "two"])
        XCTAssertEqual(try f.fs.getattr(inode: inode).linkCount, 2)
        try rename(f, "one", to: "one")
        XCTAssertEqual(try f.names(), ["one", "two"])
    }

    func testReplacedNameKeepsItsPlaceInAListing() throws {
        let f = try Fixture()
        for name in ["a", "b", "c", "d"] { try f.makeFile(name) }
        let handle = try f.fs.opendir(inode: .root)
        let first = try f.fs.readdir(inode: .root, handle: handle, offset: 0, limit: 3)
        XCTAssertEqual(first.map(\.name), [[0x2E], [0x2E, 0x2E], Array("a".utf8)])
        try rename(f, "d", to: "c")  // "c" keeps its cookie, "d" goes away
        let rest = try f.fs.readdir(inode: .root, handle: handle, offset: first.last!.nextOffset, limit: 10)
        XCTAssertEqual(rest.map { String(decoding: $0.name, as: UTF8.self) }, ["b", "c"])
        f.fs.releasedir(inode: .root, handle: handle)
    }
}
