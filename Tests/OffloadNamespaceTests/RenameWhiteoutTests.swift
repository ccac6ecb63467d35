import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace

/// renameat2 with RENAME_WHITEOUT on format 2: the rename, and at the source name a
/// whiteout (a character device 0:0 with no permission bits, owned by the caller), in one
/// frame; what ext4 and tmpfs leave, and what overlayfs asks of its upper layer.
final class RenameWhiteoutTests: XCTestCase {
    private let user = RequestContext(uid: 1000, gid: 1000)

    private func volumeNamespace() throws -> (VolumeNamespace, TreeVolume) {
        let volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 64 << 20), capacityBytes: 64 << 20,
                                           imageID: 9, nameHashKey: SipHash24(key0: 9, key1: 3))
        return (try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0)), volume)
    }

    func testARenameLeavesAWhiteoutAtTheSourceName() throws {
        let (fs, volume) = try volumeNamespace()
        let from = try fs.mkdir(parent: .root, name: FileName("from"), mode: 0o2775, context: user).inode
        _ = try fs.setattr(inode: from, changes: AttributeChanges(gid: 77), context: .root)
        let to = try fs.mkdir(parent: .root, name: FileName("to"), mode: 0o755, context: user).inode
        let (file, handle) = try fs.create(parent: from, name: FileName("f"), mode: 0o100644, flags: O_RDWR | O_CREAT, context: user)
        fs.release(inode: file.inode, handle: handle)
        let directory = try fs.mkdir(parent: from, name: FileName("d"), mode: 0o755, context: user)
        let inodesBefore = fs.statfs().totalInodes - fs.statfs().freeInodes

        try fs.rename(parent: from, name: FileName("f"), newParent: to, newName: FileName("f"), flags: .whiteout, context: user)
        XCTAssertEqual(try fs.lookup(parent: to, name: FileName("f")).inode, file.inode)
        let whiteout = try fs.lookup(parent: from, name: FileName("f"))
        XCTAssertEqual(whiteout.kind, .characterDevice)
        XCTAssertEqual(whiteout.rdev, 0)
        XCTAssertEqual(whiteout.permissions, 0)
        XCTAssertEqual(whiteout.linkCount, 1)
        XCTAssertEqual(whiteout.uid, 1000)
        XCTAssertEqual(whiteout.gid, 77, "a set-group-ID directory's group, as for any new inode")
        XCTAssertEqual(fs.statfs().totalInodes - fs.statfs().freeInodes, inodesBefore + 1, "the whiteout is an inode")

        // A directory, over an existing name, with RENAME_NOREPLACE to a free one.
        try fs.rename(parent: from, name: FileName("d"), newParent: to, newName: FileName("d"), flags: [.whiteout, .noReplace],
                      context: user)
        XCTAssertEqual(try fs.lookup(parent: to, name: FileName("d")).inode, directory.inode)
        XCTAssertEqual(try fs.lookup(parent: from, name: FileName("d")).kind, .characterDevice)
        XCTAssertEqual(try fs.getattr(inode: from).linkCount, 2, "the moved directory's link went with it")
        XCTAssertEqual(try fs.getattr(inode: to).linkCount, 3)
        assertThrows(.exists) {
            try fs.rename(parent: to, name: FileName("f"), newParent: to, newName: FileName("d"), flags: [.whiteout, .noReplace],
                          context: self.user)
        }
        try fs.rename(parent: to, name: FileName("f"), newParent: from, newName: FileName("f"), flags: .whiteout, context: user)
        XCTAssertEqual(try fs.lookup(parent: from, name: FileName("f")).inode, file.inode, "over the first whiteout")
        XCTAssertEqual(try fs.lookup(parent: to, name: FileName("f")).kind, .characterDevice)
        // With RENAME_EXCHANGE it is refused, as the kernel refuses it.
        assertThrows(.invalidArgument("RENAME_WHITEOUT and RENAME_EXCHANGE together")) {
            try fs.rename(parent: from, name: FileName("f"), newParent: to, newName: FileName("d"), flags: [.whiteout, .exchange],
                          context: self.user)
        }
        let names = try fs.readdir(inode: from, handle: try fs.opendir(inode: from), offset: 0, limit: 100).map(\.name)
        XCTAssertEqual(Set(names.map { String(decoding: $0, as: UTF8.self) }), [".", "..", "f", "d"])

        // What the journal replays and the commit keeps: the same after a reopen.
        try volume.commit()
        XCTAssertTrue(try VolumeCheck.run(volume.storage).isClean)
        let reopened = try VolumeNamespace(volume: try TreeVolume.open(volume.storage), memoryLimiter: MemoryLimiter(limitBytes: 0))
        XCTAssertEqual(try reopened.lookup(parent: to, name: FileName("f")).kind, .characterDevice)
        XCTAssertEqual(try reopened.lookup(parent: from, name: FileName("d")).kind, .characterDevice)
        XCTAssertEqual(try reopened.lookup(parent: from, name: FileName("f")).inode, file.inode)
    }

    func testFormatOneRefusesIt() throws {
        let fixture = try Fixture()
        _ = try fixture.makeFile("f")
        assertThrows(.invalidArgument("unknown rename flags")) {
            try fixture.fs.rename(parent: .root, name: FileName("f"), newParent: .root, newName: FileName("g"), flags: .whiteout,
                                  context: .root)
        }
        XCTAssertNoThrow(try fixture.fs.lookup(parent: .root, name: FileName("f")))
    }
}
