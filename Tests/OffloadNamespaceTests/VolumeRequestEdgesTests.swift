#if canImport(Glibc)
import Glibc
#endif
@testable import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import XCTest

/// Requests at the edges of what Linux allows, through format 2's namespace, as a defect
/// hunt through a mount found them answered differently from ext4 and tmpfs (thirty-fifth
/// session).
final class VolumeRequestEdgesTests: XCTestCase {
    private func makeFileSystem(capacity: UInt64 = 256 << 20) throws -> VolumeFileSystem {
        try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(capacity)), capacity: .set(capacity),
                                    memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    /// Removing an ACL a file does not have succeeds, as on ext4 and tmpfs (the kernel
    /// sends `setfacl -k`'s removal of a default ACL, and `acl_delete_def_file`'s, as a
    /// REMOVEXATTR); it answered ENODATA. Any other name still does, and an ACL that is
    /// there is removed. Format 1's namespace answers the same.
    func testRemovingAnAbsentACLSucceeds() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root).inode
        try fs.removexattr(inode: directory, name: PosixACL.defaultName)
        try fs.removexattr(inode: directory, name: PosixACL.accessName)
        XCTAssertThrowsError(try fs.removexattr(inode: directory, name: Array("user.absent".utf8))) {
            XCTAssertEqual($0 as? FSError, .noAttribute)
        }
        // user::rwx group::r-x other::r-x, as a default ACL.
        var value: [UInt8] = [2, 0, 0, 0]
        for (tag, permissions) in [(UInt16(0x01), UInt8(7)), (0x04, 5), (0x20, 5)] {
            value += [UInt8(tag), 0, permissions, 0, 0xFF, 0xFF, 0xFF, 0xFF]
        }
        try fs.setxattr(inode: directory, name: PosixACL.defaultName, value: value, mode: .createOrReplace)
        XCTAssertNotNil(try? fs.getxattr(inode: directory, name: PosixACL.defaultName))
        try fs.removexattr(inode: directory, name: PosixACL.defaultName)
        XCTAssertThrowsError(try fs.getxattr(inode: directory, name: PosixACL.defaultName))
        try fileSystem.close(meter: nil)
        let f = try Fixture()
        let formatOne = try f.mkdir("d")
        try f.fs.removexattr(inode: formatOne.inode, name: PosixACL.defaultName)
    }

    /// A directory moved into a tree deeper than 65,536 directories: Linux sets no depth
    /// limit, and the rename succeeds (the walk up that refuses a move into the moved
    /// directory's own subtree gave up there with EIO). A move into its own subtree at
    /// that depth is still refused.
    func testARenameIntoATreeDeeperThanSixtyFiveThousandDirectoriesWorks() throws {
        let fileSystem = try makeFileSystem(capacity: 1 << 30)
        let fs = fileSystem.namespace
        let mover = try fs.mkdir(parent: .root, name: FileName("mover"), mode: 0o755, context: .root).inode
        var deepest = InodeNumber.root
        for _ in 0..<65_540 { deepest = try fs.mkdir(parent: deepest, name: FileName("d"), mode: 0o755, context: .root).inode }
        try fs.rename(parent: .root, name: FileName("mover"), newParent: deepest, newName: FileName("mover"), flags: [])
        XCTAssertEqual(try fs.lookup(parent: deepest, name: FileName("mover")).inode, mover)
        let top = try fs.lookup(parent: .root, name: FileName("d")).inode
        XCTAssertThrowsError(try fs.rename(parent: .root, name: FileName("d"), newParent: mover, newName: FileName("d"), flags: [])) {
            guard case .invalidArgument? = $0 as? FSError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("d")).inode, top)
        try fileSystem.close(meter: nil)
    }
}
