import XCTest
import OffloadCore
@testable import OffloadNamespace

/// An unlinked inode lives while the kernel references it or a handle is open, and its
/// storage is freed exactly when both are gone.
final class LifetimeTests: XCTestCase {
    func testUnlinkedOpenFileStaysUsableUntilReleaseAndForget() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("doomed")
        let inode = attributes.inode
        _ = try f.write(inode, handle, at: 0, pattern(8 * 4096))
        XCTAssertEqual(f.liveBytes, 8 * 4096)

        try f.fs.unlink(parent: .root, name: FileName("doomed"))
        assertThrows(.notFound) { try f.lookup("doomed") }
        // fstat, read and write through the handle still work.
        var stat = try f.fs.getattr(inode: inode)
        XCTAssertEqual(stat.linkCount, 0)
        XCTAssertEqual(stat.size, 8 * 4096)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: handle, offset: 4096, count: 4096),
                       Array(pattern(8 * 4096)[4096..<8192]))
        _ = try f.write(inode, handle, at: 8 * 4096, pattern(4096, seed: 3))
        XCTAssertEqual(f.liveBytes, 9 * 4096)
        _ = try f.fs.setattr(inode: inode, changes: AttributeChanges(size: 9 * 4096 + 1, handle: handle),
                             context: .user)
        stat = try f.fs.getattr(inode: inode)
        XCTAssertEqual(stat.size, 9 * 4096 + 1)

        f.fs.release(inode: inode, handle: handle)
        XCTAssertEqual(f.liveBytes, 9 * 4096, "no name and no handle, but the kernel may open the file again")
        XCTAssertEqual(try f.fs.getattr(inode: inode).linkCount, 0, "the kernel still references the inode")
        XCTAssertEqual(try f.fs.getattr(inode: inode).size, 9 * 4096 + 1)
        f.fs.forget(inode: inode, lookups: 1)
        XCTAssertEqual(f.liveBytes, 0)
        assertThrows(.staleInode) { try f.fs.getattr(inode: inode) }
    }

    /// A closed file unlinked while the kernel still references it keeps its bytes until
    /// the last FORGET: the kernel may open it again (a path looked up before the unlink
    /// or a rename that replaced it, which the open names; `/proc/PID/fd`). Before, the
    /// unlink emptied it, and a reader racing a `rename` that replaced a file read it
    /// empty (found through a mount).
    func testAClosedFileTheKernelStillReferencesKeepsItsBytesUntilTheLastForget() throws {
        let f = try Fixture()
        let bytes = pattern(4 * 4096)
        let inode = try f.makeFile("f", contents: bytes)
        _ = try f.makeFile("g", contents: pattern(100, seed: 2))
        try f.fs.rename(parent: .root, name: FileName("g"), newParent: .root, newName: FileName("f"), flags: [])
        XCTAssertEqual(f.liveBytes, 5 * 4096)
        XCTAssertEqual(try f.fs.getattr(inode: inode).linkCount, 0, "the inode lives while the kernel references it")
        let reopened = try f.fs.open(inode: inode, flags: O_RDONLY)
        XCTAssertEqual(try f.fs.read(inode: inode, handle: reopened, offset: 0, count: 1 << 20), bytes)
        f.fs.release(inode: inode, handle: reopened)
        XCTAssertEqual(f.liveBytes, 5 * 4096)
        f.fs.forget(inode: inode, lookups: 1)
        XCTAssertEqual(f.liveBytes, 4096)
        assertThrows(.staleInode) { try f.fs.getattr(inode: inode) }
    }

    /// `rm big && echo > small` on a full filesystem: the kernel sends big's FORGET as
    /// the unlink's syscall ends, but the daemon's thread may handle it after the write
    /// arrives. The write refused for space waits for it (at most `FileDataRules.forgetWaitNanoseconds`) and is
    /// tried again.
    func testAWriteRefusedForSpaceWaitsForTheForgetOfAnUnlinkedFile() throws {
        let f = try Fixture(capacityBytes: 4 << 20)
        let (attributes, handle) = try f.create("big")
        var written = 0
        while true {
            do {
                written += try f.write(attributes.inode, handle, at: UInt64(written), pattern(64 << 10))
            } catch FSError.noSpace {
                break
            }
        }
        f.fs.release(inode: attributes.inode, handle: handle)
        try f.fs.unlink(parent: .root, name: FileName("big"))
        let (small, smallHandle) = try f.create("small")
        XCTAssertThrowsError(try f.write(small.inode, smallHandle, at: 0, pattern(64 << 10)), "setup: the image is full") {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        let fs = f.fs, big = attributes.inode
        let forget = Thread {
            usleep(30_000)
            fs.forget(inode: big, lookups: 1)
        }
        forget.start()
        XCTAssertEqual(try f.write(small.inode, smallHandle, at: 0, pattern(64 << 10)), 64 << 10,
                       "the write did not wait for the FORGET that freed big's bytes")
        f.fs.release(inode: small.inode, handle: smallHandle)
    }

    func testForgetBeforeReleaseAlsoFreesAtTheLastStep() throws {
        let f = try Fixture()
        let (attributes, handle) = try f.create("doomed")
        let inode = attributes.inode
        _ = try f.write(inode, handle, at: 0, pattern(4096))
        let second = try f.fs.open(inode: inode, flags: O_RDONLY)
        try f.fs.unlink(parent: .root, name: FileName("doomed"))
        f.fs.forget(inode: inode, lookups: 1)
        f.fs.release(inode: inode, handle: handle)
        XCTAssertEqual(f.liveBytes, 4096, "one handle is still open")
        XCTAssertEqual(try f.fs.read(inode: inode, handle: second, offset: 0, count: 4096), pattern(4096))
        f.fs.release(inode: inode, handle: second)
        XCTAssertEqual(f.liveBytes, 0)
        assertThrows(.staleInode) { try f.fs.getattr(inode: inode) }
    }

    func testUnlinkOfAFileTheKernelForgotFreesAtOnce() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f", contents: pattern(2 * 4096))
        f.fs.forget(inode: inode, lookups: 1)
        XCTAssertEqual(f.liveBytes, 2 * 4096, "a linked file lives without kernel references")
        try f.fs.unlink(parent: .root, name: FileName("f"))
        XCTAssertEqual(f.liveBytes, 0)
    }

    func testHardLinkedFileLivesWhileOneNameRemains() throws {
        let f = try Fixture()
        let inode = try f.makeFile("a", contents: pattern(4096))
        _ = try f.fs.link(inode: inode, newParent: .root, newName: FileName("b"))
        f.fs.forget(inode: inode, lookups: 2)
        try f.fs.unlink(parent: .root, name: FileName("a"))
        XCTAssertEqual(f.liveBytes, 4096)
        try f.fs.unlink(parent: .root, name: FileName("b"))
        XCTAssertEqual(f.liveBytes, 0)
    }

    func testRemovedDirectoryLivesWhileOpen() throws {
        let f = try Fixture()
        let dir = try f.mkdir("d").inode
        let handle = try f.fs.opendir(inode: dir)
        try f.fs.rmdir(parent: .root, name: FileName("d"))
        f.fs.forget(inode: dir, lookups: 1)
        XCTAssertEqual(try f.fs.getattr(inode: dir).linkCount, 0)
        XCTAssertEqual(try f.fs.readdir(inode: dir, handle: handle, offset: 0, limit: 10), [])
        f.fs.releasedir(inode: dir, handle: handle)
        assertThrows(.staleInode) { try f.fs.getattr(inode: dir) }
    }

    func testLookupCountsAddUp() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")   // 1 (create)
        _ = try f.lookup("f")              // 2
        _ = try f.lookup("f")              // 3
        try f.fs.unlink(parent: .root, name: FileName("f"))
        f.fs.forget(inode: inode, lookups: 2)
        XCTAssertEqual(try f.fs.getattr(inode: inode).linkCount, 0, "one reference is left")
        f.fs.forget(inode: inode, lookups: 1)
        assertThrows(.staleInode) { try f.fs.getattr(inode: inode) }
    }

    func testRootIsNeverDropped() throws {
        let f = try Fixture()
        f.fs.forget(inode: .root, lookups: 1000)
        XCTAssertEqual(try f.fs.getattr(inode: .root).kind, .directory)
    }
}
