import XCTest
import OffloadCore
@testable import OffloadNamespace

/// Ownership, modes, set-group-ID inheritance, timestamps, statfs.
final class AttributeTests: XCTestCase {
    func testNewInodesTakeTheCallersIds() throws {
        let f = try Fixture()
        let caller = RequestContext(uid: 4242, gid: 77)
        let dir = try f.mkdir("d", as: caller)
        let (file, handle) = try f.create("f", as: caller)
        let link = try f.fs.symlink(parent: .root, name: FileName("l"), target: [0x61], context: caller)
        for attributes in [dir, file, link] {
            XCTAssertEqual(attributes.uid, 4242)
            XCTAssertEqual(attributes.gid, 77)
        }
        f.fs.release(inode: file.inode, handle: handle)
    }

    func testSetgidDirectoryPassesItsGroupAndBitOn() throws {
        let f = try Fixture()
        let shared = try f.mkdir("shared", mode: 0o2775, as: RequestContext(uid: 0, gid: 500))
        XCTAssertEqual(shared.permissions, 0o2775)
        let caller = RequestContext(uid: 1000, gid: 1000)
        let sub = try f.mkdir("sub", in: shared.inode, mode: 0o755, as: caller)
        XCTAssertEqual(sub.gid, 500)
        XCTAssertEqual(sub.permissions, 0o2755, "subdirectories inherit set-group-ID")
        let (file, handle) = try f.create("file", in: shared.inode, mode: 0o644, as: caller)
        XCTAssertEqual(file.gid, 500)
        XCTAssertEqual(file.permissions, 0o644, "files do not get the bit")
        f.fs.release(inode: file.inode, handle: handle)
        let nested = try f.mkdir("nested", in: sub.inode, as: caller)
        XCTAssertEqual(nested.gid, 500)
        XCTAssertEqual(nested.permissions & 0o2000, 0o2000)
        let plain = try f.mkdir("plain", as: caller)
        XCTAssertEqual(plain.gid, 1000)
        XCTAssertEqual(plain.permissions, 0o755)
    }

    func testChmodAndChown() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")
        let t = f.clock.advance()
        let before = try f.fs.getattr(inode: inode)
        let changed = try f.fs.setattr(inode: inode, changes: AttributeChanges(permissions: 0o100600), context: .user)
        XCTAssertEqual(changed.permissions, 0o600)
        XCTAssertEqual(changed.mode, 0o100600)
        XCTAssertEqual(changed.changeTime, t)
        XCTAssertEqual(changed.modificationTime, before.modificationTime)
        let owned = try f.fs.setattr(inode: inode, changes: AttributeChanges(uid: 5, gid: 6), context: .root)
        XCTAssertEqual(owned.uid, 5)
        XCTAssertEqual(owned.gid, 6)
        let groupOnly = try f.fs.setattr(inode: inode, changes: AttributeChanges(gid: 9), context: .root)
        XCTAssertEqual(groupOnly.uid, 5)
        XCTAssertEqual(groupOnly.gid, 9)
    }

    func testChownByNonRootClearsSetIdBits() throws {
        let f = try Fixture()
        let inode = try f.makeFile("prog")
        _ = try f.fs.setattr(inode: inode, changes: AttributeChanges(permissions: 0o6755), context: .root)
        var attributes = try f.fs.setattr(inode: inode, changes: AttributeChanges(gid: 1000), context: .user)
        XCTAssertEqual(attributes.permissions, 0o755)
        // Without group-execute the set-group-ID bit means mandatory locking: kept.
        _ = try f.fs.setattr(inode: inode, changes: AttributeChanges(permissions: 0o6745), context: .root)
        attributes = try f.fs.setattr(inode: inode, changes: AttributeChanges(gid: 1000), context: .user)
        XCTAssertEqual(attributes.permissions, 0o2745)
        // Root keeps the bits, and directories are never touched.
        _ = try f.fs.setattr(inode: inode, changes: AttributeChanges(permissions: 0o6755), context: .root)
        attributes = try f.fs.setattr(inode: inode, changes: AttributeChanges(uid: 0), context: .root)
        XCTAssertEqual(attributes.permissions, 0o6755)
        let dir = try f.mkdir("d", mode: 0o2755)
        attributes = try f.fs.setattr(inode: dir.inode, changes: AttributeChanges(gid: 1000), context: .user)
        XCTAssertEqual(attributes.permissions, 0o2755)
    }

    func testExplicitTimes() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")
        let past = Timestamp(seconds: 12345, nanoseconds: 678)
        let t = f.clock.advance()
        var attributes = try f.fs.setattr(
            inode: inode, changes: AttributeChanges(accessTime: .set(past), modificationTime: .now), context: .user)
        XCTAssertEqual(attributes.accessTime, past)
        XCTAssertEqual(attributes.modificationTime, t)
        XCTAssertEqual(attributes.changeTime, t)
        let birth = attributes.birthTime
        let t2 = f.clock.advance()
        attributes = try f.fs.setattr(inode: inode, changes: AttributeChanges(modificationTime: .set(past)),
                                      context: .user)
        XCTAssertEqual(attributes.modificationTime, past)
        XCTAssertEqual(attributes.accessTime, past)
        XCTAssertEqual(attributes.changeTime, t2)
        XCTAssertEqual(attributes.birthTime, birth, "birth time never changes")
        let ctime = Timestamp(seconds: 99, nanoseconds: 1)
        attributes = try f.fs.setattr(inode: inode, changes: AttributeChanges(permissions: 0o600, changeTime: ctime),
                                      context: .user)
        XCTAssertEqual(attributes.changeTime, ctime)
        let unchanged = try f.fs.setattr(inode: inode, changes: AttributeChanges(), context: .user)
        XCTAssertEqual(unchanged, attributes)
    }

    func testTimestampsFollowPosix() throws {
        let f = try Fixture()
        let t0 = f.clock.now
        let dir = try f.mkdir("d").inode
        let (file, handle) = try f.create("f", in: dir)
        XCTAssertEqual(file.birthTime, t0)
        XCTAssertEqual(file.modificationTime, t0)

        let t1 = f.clock.advance()
        _ = try f.write(file.inode, handle, at: 0, pattern(10))
        var stat = try f.fs.getattr(inode: file.inode)
        XCTAssertEqual(stat.modificationTime, t1)
        XCTAssertEqual(stat.changeTime, t1)
        XCTAssertEqual(stat.accessTime, t0)
        XCTAssertEqual(try f.fs.getattr(inode: dir).modificationTime, t0, "writing a file leaves its directory")

        f.clock.advance()
        _ = try f.fs.read(inode: file.inode, handle: handle, offset: 0, count: 10)
        stat = try f.fs.getattr(inode: file.inode)
        XCTAssertEqual(stat.accessTime, t0, "reads do not update atime (noatime)")
        XCTAssertEqual(stat.modificationTime, t1)

        let t3 = f.clock.advance()
        try f.makeFile("g", in: dir)
        var dirStat = try f.fs.getattr(inode: dir)
        XCTAssertEqual(dirStat.modificationTime, t3)
        XCTAssertEqual(dirStat.changeTime, t3)

        let t4 = f.clock.advance()
        try f.fs.unlink(parent: dir, name: FileName("f"))
        dirStat = try f.fs.getattr(inode: dir)
        XCTAssertEqual(dirStat.modificationTime, t4)
        stat = try f.fs.getattr(inode: file.inode)
        XCTAssertEqual(stat.changeTime, t4, "unlink changes the inode's link count: ctime")
        XCTAssertEqual(stat.modificationTime, t1)
        f.fs.release(inode: file.inode, handle: handle)
    }

    func testStatfsReflectsTheStore() throws {
        let f = try Fixture(capacityBytes: 32 << 20)
        var stats = f.fs.statfs()
        XCTAssertEqual(stats.blockSize, 4096)
        XCTAssertEqual(stats.totalBlocks, 8192)
        XCTAssertEqual(stats.freeBlocks, 8192)
        XCTAssertEqual(stats.availableBlocks, 8192)
        XCTAssertEqual(stats.maximumNameLength, 255)
        XCTAssertEqual(stats.totalInodes - stats.freeInodes, 1)
        try f.makeFile("f", contents: pattern(10 * 4096))
        stats = f.fs.statfs()
        XCTAssertEqual(stats.freeBlocks, 8182)
        XCTAssertEqual(stats.totalInodes - stats.freeInodes, 2)
    }

    func testWritesPastCapacityAreENOSPC() throws {
        let f = try Fixture(capacityBytes: 1 << 20)
        let (file, handle) = try f.create("big")
        _ = try f.write(file.inode, handle, at: 0, pattern(1 << 20))
        assertThrows(.noSpace) { try f.write(file.inode, handle, at: 1 << 20, pattern(4096)) }
        XCTAssertEqual(f.fs.statfs().freeBlocks, 0)
        f.fs.release(inode: file.inode, handle: handle)
    }
}
