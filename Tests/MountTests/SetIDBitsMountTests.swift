import Foundation
import XCTest

/// The set-id bits and the requests whose clearing of them the kernel leaves to a FUSE
/// filesystem (`SetIDRules`), and what listxattr shows an unprivileged user, against what
/// ext4 and tmpfs do for the same commands (a differential hunt ran these on both on this
/// machine, thirty-sixth session; every expected mode below is theirs).
final class SetIDBitsMountTests: MountedTestCase {
    /// allow_other, so that another user can use the mount.
    override var mountArguments: [String] { ["--size", "64M", "-o", "allow_other"] }

    /// open(2) with O_TRUNC by a caller without CAP_FSETID takes S_ISUID away, and S_ISGID
    /// when group-execute is set or the caller is outside the file's group; root keeps
    /// both. Before, the kernel truncated through the OPEN (FUSE_CAP_ATOMIC_O_TRUNC) and
    /// dropped the SETATTR carrying the new mode, so every bit stayed. The kernel's cached
    /// mode follows (its own ATTR_KILL_* make it read the attributes again): `stat
    /// --cached=always` after a permission check shows what it holds.
    func testAnOpenThatTruncatesTakesAwayTheSetIDBitsItsCallerMayNotKeep() throws {
        let user = try NonRootUser()
        defer { for problem in user.remove() { XCTFail(problem) } }
        XCTAssertEqual(chmod(fixture.root, 0o755), 0)
        try sh("""
            for f in both kept outside member; do echo hi > $f; done
            chmod 6777 both kept && chmod 2766 outside member && chgrp \(user.name) member
            """)
        for file in ["both", "outside", "member"] {
            let truncated = try user.runHere(": > \(mountPoint)/\(file)")
            XCTAssertTrue(truncated.succeeded, "\(file): \(truncated.transcript)")
        }
        try sh(": > kept")
        try sh("cat both outside member kept > /dev/null")
        let modes = try sh("stat --cached=always -c '%n %a %s' both outside member kept")
        XCTAssertEqual(modes, "both 777 0\noutside 766 0\nmember 2766 0\nkept 6777 0\n")
        // What the image keeps: the same after a remount.
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        try fixture.start(arguments: mountArguments, skipIfCannotMount: false)
        XCTAssertEqual(try sh("stat -c '%n %a %s' both outside member kept"), modes)
    }

    /// Setting an access ACL takes S_ISGID away from a caller outside the file's group
    /// without CAP_FSETID (posix_acl_update_mode), also when the ACL says only what the
    /// mode says. Before, the bit stayed: libfuse 3.14 does not pass on the kernel's
    /// FUSE_SETXATTR_ACL_KILL_SGID.
    func testAnAccessACLTakesSetGIDAwayFromAnOwnerOutsideTheGroup() throws {
        let user = try NonRootUser()
        defer { for problem in user.remove() { XCTFail(problem) } }
        XCTAssertEqual(chmod(fixture.root, 0o755), 0)
        try sh("""
            touch outside minimal member rooted
            chown \(user.name):root outside minimal && chown \(user.name):\(user.name) member
            chmod 2770 outside member rooted && chmod 6750 minimal
            """)
        // The minimal one through setxattr: setfacl sends nothing for an ACL the mode says.
        let minimal = "import os, struct; os.setxattr('minimal', 'system.posix_acl_access', struct.pack('<I', 2) + "
            + "b''.join(struct.pack('<HHI', t, p, 0xffffffff) for t, p in [(1, 7), (4, 5), (0x20, 0)]))"
        for command in ["setfacl -m u:nobody:r outside", "python3 -c \"\(minimal)\"", "setfacl -m u:nobody:r member"] {
            let set = try user.runHere(command, in: mountPoint)
            XCTAssertTrue(set.succeeded, "\(command): \(set.transcript)")
        }
        try sh("setfacl -m u:nobody:r rooted")
        XCTAssertEqual(try sh("stat -c '%n %a' outside minimal member rooted"),
                       "outside 770\nminimal 4750\nmember 2770\nrooted 2770\n")
        XCTAssertEqual(try sh("getfacl -c minimal"), "user::rwx\ngroup::r-x\nother::---\n\n")
    }

    /// listxattr shows `trusted.*` names to a holder of CAP_SYS_ADMIN alone, as ext4 and
    /// tmpfs do; before, an unprivileged user listed them (the values were refused).
    func testTrustedAttributesAreListedToRootAlone() throws {
        let user = try NonRootUser()
        defer { for problem in user.remove() { XCTFail(problem) } }
        XCTAssertEqual(chmod(fixture.root, 0o755), 0)
        try sh("touch f && setfattr -n trusted.secret -v 1 f && setfattr -n user.note -v 2 f")
        let list = "import os; print(sorted(os.listxattr('\(mountPoint)/f')))"
        let listed = try user.runHere("python3 -c \"\(list)\"")
        XCTAssertEqual(listed.output, "['user.note']\n", listed.transcript)
        XCTAssertEqual(try sh("python3 -c \"\(list)\""), "['trusted.secret', 'user.note']\n")
    }

    /// An ACL whose named entries are out of id order, or name one id twice, is taken as
    /// it is (posix_acl_valid asks for tag order alone; ext4 and tmpfs keep such an ACL).
    /// Before, EINVAL. An ACL out of tag order is still refused.
    func testNamedACLEntriesInAnyIdOrderAreKept() throws {
        try sh("touch f g")
        let script = """
            import os, struct
            def acl(entries):
                return struct.pack('<I', 2) + b''.join(struct.pack('<HHI', t, p, i) for t, p, i in entries)
            none = 0xffffffff
            named = [(1, 6, none), (2, 4, 1002), (2, 4, 1001), (2, 2, 1001), (4, 4, none), (0x10, 6, none), (0x20, 4, none)]
            os.setxattr('f', 'system.posix_acl_access', acl(named))
            print('kept as given:', os.getxattr('f', 'system.posix_acl_access') == acl(named))
            try:
                os.setxattr('g', 'system.posix_acl_access', acl([(4, 4, none), (1, 6, none), (0x20, 4, none)]))
                print('out of tag order: taken')
            except OSError as error:
                print('out of tag order:', error.strerror)
            """
        XCTAssertEqual(try sh("python3 - <<'EOF'\n\(script)\nEOF"), "kept as given: True\nout of tag order: Invalid argument\n")
        // getfacl sorts what it prints.
        XCTAssertEqual(try sh("getfacl -cn f"), "user::rw-\nuser:1001:r--\nuser:1001:-w-\nuser:1002:r--\ngroup::r--\nmask::rw-\nother::r--\n\n")
    }
}
