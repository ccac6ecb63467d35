import XCTest
import OffloadCore
@testable import OffloadNamespace

/// readdir and readdirplus: cookies, paging, stability under removal, lookup counts.
final class ReaddirTests: XCTestCase {
    func testListingStartsWithDotAndDotDot() throws {
        let f = try Fixture()
        let dir = try f.mkdir("d").inode
        let file = try f.makeFile("file", in: dir)
        let sub = try f.mkdir("sub", in: dir).inode
        let entries = try f.list(dir)
        XCTAssertEqual(entries.map(\.name), [[0x2E], [0x2E, 0x2E], Array("file".utf8), Array("sub".utf8)])
        XCTAssertEqual(entries.map(\.inode), [dir, .root, file, sub])
        XCTAssertEqual(entries.map(\.kind), [.directory, .directory, .regular, .directory])
        XCTAssertEqual(entries.map(\.nextOffset), [1, 2, 3, 4])
        XCTAssertEqual(try f.list(.root).first { $0.name == [0x2E, 0x2E] }?.inode, .root)
    }

    func testPagingResumesAfterTheCookie() throws {
        let f = try Fixture()
        for i in 0..<10 { try f.makeFile("f\(i)") }
        let all = try f.list(.root)
        let paged = try f.list(.root, batch: 3)
        XCTAssertEqual(paged, all)
        XCTAssertEqual(all.count, 12)
        let handle = try f.fs.opendir(inode: .root)
        let fromDotDot = try f.fs.readdir(inode: .root, handle: handle, offset: 1, limit: 2)
        XCTAssertEqual(fromDotDot.map(\.name), [[0x2E, 0x2E], Array("f0".utf8)])
        XCTAssertEqual(try f.fs.readdir(inode: .root, handle: handle, offset: 0, limit: 0), [])
        XCTAssertEqual(try f.fs.readdir(inode: .root, handle: handle, offset: all.last!.nextOffset, limit: 5), [])
        f.fs.releasedir(inode: .root, handle: handle)
        assertThrows(.badHandle) { try f.fs.readdir(inode: .root, handle: handle, offset: 0, limit: 5) }
    }

    func testRemovingEntriesDuringAListingNeitherRepeatsNorSkipsSurvivors() throws {
        let f = try Fixture()
        let count = 500
        for i in 0..<count { try f.makeFile(String(format: "n%04d", i)) }
        let handle = try f.fs.opendir(inode: .root)
        var seen: [String] = []
        var offset: UInt64 = 0
        var removed = Set<String>()
        var page = 0
        while true {
            let entries = try f.fs.readdir(inode: .root, handle: handle, offset: offset, limit: 7)
            guard let last = entries.last else { break }
            seen += entries.map { String(decoding: $0.name, as: UTF8.self) }
            offset = last.nextOffset
            // Like `rm -rf`: remove what was just listed plus some not yet listed.
            for entry in entries where entry.name.first != 0x2E {
                let name = String(decoding: entry.name, as: UTF8.self)
                try f.fs.unlink(parent: .root, name: FileName(name))
                removed.insert(name)
            }
            let ahead = String(format: "n%04d", (page * 13 + 100) % count)
            if !removed.contains(ahead), !seen.contains(ahead) {
                try f.fs.unlink(parent: .root, name: FileName(ahead))
                removed.insert(ahead)
            }
            page += 1
        }
        f.fs.releasedir(inode: .root, handle: handle)
        XCTAssertEqual(seen.count, Set(seen).count, "an entry was returned twice")
        let listed = Set(seen.filter { $0 != "." && $0 != ".." })
        let removedAhead = removed.subtracting(listed)
        XCTAssertFalse(removedAhead.isEmpty, "the test removed entries ahead of the listing")
        XCTAssertEqual(listed.union(removedAhead).count, count, "a surviving entry was skipped")
        XCTAssertEqual(try f.names(), [])
    }

    func testEntriesAddedDuringAListingAppearOnceAtTheEnd() throws {
        let f = try Fixture()
        for i in 0..<5 { try f.makeFile("old\(i)") }
        let handle = try f.fs.opendir(inode: .root)
        let first = try f.fs.readdir(inode: .root, handle: handle, offset: 0, limit: 4)
        try f.makeFile("new")
        let rest = try f.fs.readdir(inode: .root, handle: handle, offset: first.last!.nextOffset, limit: 100)
        let names = (first + rest).map { String(decoding: $0.name, as: UTF8.self) }
        XCTAssertEqual(names, [".", "..", "old0", "old1", "old2", "old3", "old4", "new"])
        f.fs.releasedir(inode: .root, handle: handle)
    }

    func testLargeDirectoryStaysConsistentAfterManyRemovals() throws {
        let f = try Fixture()
        for i in 0..<2000 { try f.makeFile("e\(i)") }
        for i in stride(from: 0, to: 2000, by: 3) { try f.fs.unlink(parent: .root, name: FileName("e\(i)")) }
        for i in 0..<100 { try f.makeFile("late\(i)") }
        let listed = try f.list(.root, batch: 64)
        let names = listed.map { String(decoding: $0.name, as: UTF8.self) }
        let expected = [".", ".."] + (0..<2000).filter { $0 % 3 != 0 }.map { "e\($0)" } + (0..<100).map { "late\($0)" }
        XCTAssertEqual(names, expected)
        let cookies = listed.map(\.nextOffset)
        XCTAssertEqual(cookies, cookies.sorted())
        XCTAssertEqual(Set(cookies).count, cookies.count)
    }

    func testReaddirplusCountsALookupPerEntry() throws {
        let f = try Fixture()
        let file = try f.makeFile("file", contents: pattern(4096))
        f.fs.forget(inode: file, lookups: 1)
        let dir = try f.mkdir("dir").inode
        f.fs.forget(inode: dir, lookups: 1)
        let handle = try f.fs.opendir(inode: .root)
        let entries = try f.fs.readdirplus(inode: .root, handle: handle, offset: 0, limit: 10)
        f.fs.releasedir(inode: .root, handle: handle)
        XCTAssertEqual(entries.count, 4)
        XCTAssertNil(entries[0].attributes)
        XCTAssertNil(entries[1].attributes)
        XCTAssertEqual(entries[2].attributes?.inode, file)
        XCTAssertEqual(entries[2].attributes?.size, 4096)
        XCTAssertEqual(entries[2].attributes?.blocks, 8)
        XCTAssertEqual(entries[3].attributes?.kind, .directory)
        // The readdirplus reference keeps the unlinked inode alive, with its data (the
        // kernel may open it again), until it is forgotten.
        try f.fs.unlink(parent: .root, name: FileName("file"))
        XCTAssertEqual(try f.fs.getattr(inode: file).linkCount, 0)
        XCTAssertEqual(f.liveBytes, 4096)
        f.fs.forget(inode: file, lookups: 1)
        XCTAssertEqual(f.liveBytes, 0)
        assertThrows(.staleInode) { try f.fs.getattr(inode: file) }
    }

    func testOpendirErrors() throws {
        let f = try Fixture()
        let file = try f.makeFile("file")
        assertThrows(.notDirectory) { try f.fs.opendir(inode: file) }
        assertThrows(.staleInode) { try f.fs.opendir(inode: InodeNumber(77_777)) }
        let handle = try f.fs.opendir(inode: .root)
        try f.fs.fsyncdir(inode: .root, handle: handle, dataOnly: false)
        f.fs.releasedir(inode: .root, handle: handle)
        assertThrows(.badHandle) { try f.fs.fsyncdir(inode: .root, handle: handle, dataOnly: false) }
    }
}
