import XCTest
import OffloadCore
@testable import OffloadNamespace

/// POSIX ACLs in the namespace: the xattr format, and the three jobs the kernel leaves to
/// a FUSE filesystem (mode from a new access ACL, ACL from a chmod, default ACLs and the
/// umask on create), each checked against what ext4 does (posix_acl_* in fs/posix_acl.c).
final class PosixACLTests: XCTestCase {
    private typealias Tag = PosixACL.Tag

    /// The xattr value for `entries` (tag, permissions, id), in the kernel's layout.
    private func acl(_ entries: [(Tag, UInt32, UInt32)]) -> [UInt8] {
        var bytes: [UInt8] = [2, 0, 0, 0]
        for (tag, permissions, id) in entries {
            bytes += [UInt8(tag.rawValue & 0xFF), UInt8(tag.rawValue >> 8), UInt8(permissions), 0]
            bytes += withUnsafeBytes(of: id.littleEndian, Array.init)
        }
        return bytes
    }

    private let none = PosixACL.undefinedID
    private var access: [UInt8] { PosixACL.accessName }
    private var defaultName: [UInt8] { PosixACL.defaultName }

    /// user::rw- user:1234:r-- group::r-- mask::r-- other::---
    private var namedReader: [UInt8] {
        acl([(.userObject, 6, none), (.user, 4, 1234), (.groupObject, 4, none), (.mask, 4, none), (.other, 0, none)])
    }

    func testDecodingChecksWhatTheKernelChecks() throws {
        XCTAssertEqual(try PosixACL(xattr: namedReader).xattr, namedReader, "round trip")
        let valid: [(Tag, UInt32, UInt32)] = [(.userObject, 6, none), (.groupObject, 4, none), (.other, 4, none)]
        XCTAssertNoThrow(try PosixACL(xattr: acl(valid)))
        // Named entries in any id order, an id twice: posix_acl_valid takes them as they are.
        let unsorted = acl([(.userObject, 6, none), (.user, 4, 9), (.user, 4, 5), (.user, 2, 5), (.groupObject, 4, none),
                            (.group, 4, 7), (.group, 1, 3), (.mask, 6, none), (.other, 0, none)])
        XCTAssertEqual(try PosixACL(xattr: unsorted).xattr, unsorted, "kept as given")
        let invalid: [String: [UInt8]] = [
            "empty": [],
            "version 1": [1, 0, 0, 0] + acl(valid).dropFirst(4),
            "torn entry": Array(acl(valid).dropLast()),
            "no other": acl([(.userObject, 6, none), (.groupObject, 4, none)]),
            "named without mask": acl([(.userObject, 6, none), (.user, 4, 5), (.groupObject, 4, none), (.other, 0, none)]),
            "out of order": acl([(.groupObject, 4, none), (.userObject, 6, none), (.other, 4, none)]),
            "bits beyond rwx": acl([(.userObject, 8, none), (.groupObject, 4, none), (.other, 4, none)]),
            "unknown tag": acl(valid) + [0x40, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
            "a tag's high byte set": Array(acl(valid).prefix(5)) + [1] + Array(acl(valid).dropFirst(6)),
            "permissions in the high byte": Array(acl(valid).prefix(7)) + [1] + Array(acl(valid).dropFirst(8)),
            "two masks": acl([(.userObject, 6, none), (.groupObject, 4, none), (.mask, 4, none), (.mask, 4, none),
                              (.other, 4, none)]),
        ]
        for (what, bytes) in invalid {
            do {
                _ = try PosixACL(xattr: bytes)
                XCTFail("\(what): accepted")
            } catch {
                XCTAssertTrue(error.isInvalidArgument, "\(what): \(error)")
            }
        }
    }

    /// setfacl -m u:1234:r on a 0640 file: kept, and the mode's group bits are the mask.
    func testAccessACLSetsTheModeAndIsKept() throws {
        let f = try Fixture()
        let file = try f.create("f", mode: 0o640).attributes.inode
        try f.fs.setxattr(inode: file, name: access, value: namedReader, mode: .createOrReplace)
        XCTAssertEqual(try f.fs.getattr(inode: file).permissions, 0o640)
        XCTAssertEqual(try f.fs.getxattr(inode: file, name: access), namedReader)
        XCTAssertTrue(try f.fs.listxattr(inode: file).contains(access))
        // A mask wider than the owning group shows as the group bits (ls -l).
        let wider = acl([(.userObject, 7, none), (.user, 7, 1234), (.groupObject, 4, none), (.mask, 7, none),
                         (.other, 1, none)])
        try f.fs.setxattr(inode: file, name: access, value: wider, mode: .createOrReplace)
        XCTAssertEqual(try f.fs.getattr(inode: file).permissions, 0o771)
    }

    /// An access ACL that the mode bits say completely (setfacl -b, or -m g::r on a plain
    /// file) sets the mode and is not kept, as on ext4; set-id bits stay.
    func testMinimalAccessACLOnlySetsTheMode() throws {
        let f = try Fixture()
        let file = try f.create("f", mode: 0o4644).attributes.inode
        try f.fs.setxattr(inode: file, name: access, value: namedReader, mode: .createOrReplace)
        let minimal = acl([(.userObject, 7, none), (.groupObject, 5, none), (.other, 0, none)])
        try f.fs.setxattr(inode: file, name: access, value: minimal, mode: .createOrReplace)
        XCTAssertEqual(try f.fs.getattr(inode: file).permissions, 0o4750)
        assertThrows(.noAttribute) { try f.fs.getxattr(inode: file, name: self.access) }
        XCTAssertFalse(try f.fs.listxattr(inode: file).contains(access))
    }

    /// chmod 600 after the ACL above: owner and other entries and the mask follow the new
    /// bits; the named entry keeps r-- (now masked to nothing).
    func testChmodUpdatesTheACL() throws {
        let f = try Fixture()
        let file = try f.create("f", mode: 0o640).attributes.inode
        try f.fs.setxattr(inode: file, name: access, value: namedReader, mode: .createOrReplace)
        var changes = AttributeChanges(handle: nil)
        changes.permissions = 0o705
        _ = try f.fs.setattr(inode: file, changes: changes, context: .user)
        XCTAssertEqual(try f.fs.getxattr(inode: file, name: access),
                       acl([(.userObject, 7, none), (.user, 4, 1234), (.groupObject, 4, none), (.mask, 0, none),
                            (.other, 5, none)]))
        // A chmod changes only the access ACL; a directory's default ACL stays as set.
        let directory = try f.mkdir("d", mode: 0o755).inode
        let defaultACL = acl([(.userObject, 7, none), (.groupObject, 5, none), (.other, 5, none)])
        try f.fs.setxattr(inode: directory, name: defaultName, value: defaultACL, mode: .createOrReplace)
        _ = try f.fs.setattr(inode: directory, changes: changes, context: .user)
        XCTAssertEqual(try f.fs.getxattr(inode: directory, name: defaultName), defaultACL, "chmod leaves default ACLs")
    }

    func testDefaultACLOnlyOnDirectories() throws {
        let f = try Fixture()
        let file = try f.makeFile("f")
        assertThrows(.permissionDenied) {
            try f.fs.setxattr(inode: file, name: self.defaultName, value: self.namedReader, mode: .createOrReplace)
        }
    }

    /// setfacl -d -m u:1234:rwx d; umask 077; touch d/f; mkdir d/sub: the default ACL, not
    /// the umask, limits the new modes (as ext4 gives: f rw-rw-r--, sub rwxrwxr-x), f and
    /// sub get access ACLs masked by the mode asked for, and sub also the default ACL.
    func testDefaultACLIsInheritedInsteadOfTheUmask() throws {
        let f = try Fixture()
        let directory = try f.mkdir("d", mode: 0o755).inode
        let defaultACL = acl([(.userObject, 7, none), (.user, 7, 1234), (.groupObject, 5, none), (.mask, 7, none),
                              (.other, 5, none)])
        try f.fs.setxattr(inode: directory, name: defaultName, value: defaultACL, mode: .createOrReplace)
        let strictUmask = RequestContext(uid: 1000, gid: 1000, umask: 0o077)
        let file = try f.create("f", in: directory, mode: 0o666, as: strictUmask).attributes
        XCTAssertEqual(file.permissions, 0o664)
        XCTAssertEqual(try f.fs.getxattr(inode: file.inode, name: access),
                       acl([(.userObject, 6, none), (.user, 7, 1234), (.groupObject, 5, none), (.mask, 6, none),
                            (.other, 4, none)]))
        assertThrows(.noAttribute) { try f.fs.getxattr(inode: file.inode, name: self.defaultName) }
        let sub = try f.mkdir("sub", in: directory, mode: 0o777, as: strictUmask)
        XCTAssertEqual(sub.permissions, 0o775)
        XCTAssertEqual(try f.fs.getxattr(inode: sub.inode, name: defaultName), defaultACL)
        XCTAssertEqual(try f.fs.getxattr(inode: sub.inode, name: access),
                       acl([(.userObject, 7, none), (.user, 7, 1234), (.groupObject, 5, none), (.mask, 7, none),
                            (.other, 5, none)]))
        let fifo = try f.fs.mknod(parent: directory, name: FileName("p"), mode: 0o010644, rdev: 0, context: strictUmask)
        XCTAssertEqual(fifo.permissions, 0o644)
        let link = try f.fs.symlink(parent: directory, name: FileName("l"), target: Array("f".utf8), context: strictUmask)
        XCTAssertEqual(link.permissions, 0o777, "symlinks get no ACL and keep 0777")
        XCTAssertEqual(try f.fs.listxattr(inode: link.inode), [])
    }

    /// A default ACL without named entries or mask gives no access ACL, only the mode.
    func testMinimalDefaultACLGivesOnlyAMode() throws {
        let f = try Fixture()
        let directory = try f.mkdir("d", mode: 0o755).inode
        try f.fs.setxattr(inode: directory, name: defaultName,
                          value: acl([(.userObject, 7, none), (.groupObject, 5, none), (.other, 0, none)]),
                          mode: .createOrReplace)
        let file = try f.create("x", in: directory, mode: 0o666, as: RequestContext(uid: 1, gid: 1, umask: 0o022))
        XCTAssertEqual(file.attributes.permissions, 0o640)
        XCTAssertEqual(try f.fs.listxattr(inode: file.attributes.inode), [])
    }

    /// Without a default ACL the creator's umask applies (the kernel passes it instead of
    /// applying it once ACLs are on); applying it again when the kernel did changes nothing.
    func testUmaskAppliesWithoutADefaultACL() throws {
        let f = try Fixture()
        let context = RequestContext(uid: 1000, gid: 1000, umask: 0o027)
        XCTAssertEqual(try f.create("f", mode: 0o666, as: context).attributes.permissions, 0o640)
        XCTAssertEqual(try f.mkdir("d", mode: 0o1777, as: context).permissions, 0o1750)
        XCTAssertEqual(try f.create("g", mode: 0o640, as: context).attributes.permissions, 0o640)
    }
}
