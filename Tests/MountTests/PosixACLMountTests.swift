import Foundation
import XCTest

/// POSIX ACLs through a real mount, with the tools people use (issue 9, item 8). The
/// expected `getfacl` outputs are what ext4 prints for the same commands (checked when
/// these tests were written: the same script on ext4 gave the same text).
final class PosixACLMountTests: MountedTestCase {
    /// allow_other, so that another user can be let in (or kept out) by an ACL.
    override var mountArguments: [String] { ["--size", "64M", "-o", "allow_other"] }

    /// setfacl, getfacl and ls -l; chmod keeps the mask in step; setfacl -b removes it.
    func testSetfaclGetfaclAndChmod() throws {
        let output = try sh("""
            umask 022
            touch f && chmod 640 f && setfacl -m u:nobody:r f && getfacl -c f && ls -l f | cut -d' ' -f1
            chmod 600 f && getfacl -c f
            setfacl -m u:nobody:rwx,g::r f && getfacl -c f
            setfacl -b f && getfacl -c f && ls -l f | cut -d' ' -f1
            """)
        XCTAssertEqual(output, """
            user::rw-
            user:nobody:r--
            group::r--
            mask::r--
            other::---

            -rw-r-----+
            user::rw-
            user:nobody:r--\t#effective:---
            group::r--\t#effective:---
            mask::---
            other::---

            user::rw-
            user:nobody:rwx
            group::r--
            mask::rwx
            other::---

            user::rw-
            group::r--
            other::---

            -rw-r-----

            """)
    }

    /// A default ACL is inherited by new files, directories and FIFOs in place of the
    /// umask; a directory inherits the default ACL itself.
    func testDefaultACLIsInherited() throws {
        let output = try sh("""
            mkdir d && setfacl -d -m u:nobody:rwx d
            umask 077 && touch d/f && mkdir d/sub && mkfifo d/p
            getfacl -c d/f d/sub && ls -l d | grep -v total | cut -d' ' -f1 | sort
            umask 022 && mkdir e && setfacl -d -m g::r-x,o::- e && touch e/x && getfacl -c e/x
            """)
        XCTAssertEqual(output, """
            user::rw-
            user:nobody:rwx\t#effective:rw-
            group::r-x\t#effective:r--
            mask::rw-
            other::r--

            user::rwx
            user:nobody:rwx
            group::r-x
            mask::rwx
            other::r-x
            default:user::rwx
            default:user:nobody:rwx
            default:group::r-x
            default:mask::rwx
            default:other::r-x

            -rw-rw-r--+
            drwxrwxr-x+
            prw-rw-r--+
            user::rw-
            group::r--
            other::---


            """)
    }

    /// The kernel enforces ACLs for another user: a grant past the mode, a denial that
    /// the mode would allow, a directory, and a write grant.
    func testACLsAreEnforcedForAnotherUser() throws {
        let user = try NonRootUser()
        defer { for problem in user.remove() { XCTFail(problem) } }
        XCTAssertEqual(chmod(fixture.root, 0o755), 0)
        try sh("echo secret > granted && chmod 600 granted && echo open > denied && chmod 644 denied "
               + "&& mkdir closed && chmod 700 closed && touch closed/inside && echo log > writable && chmod 644 writable")
        let cat = "cat \(mountPoint)/granted"
        XCTAssertFalse(try user.runHere(cat).succeeded, "mode 0600 keeps the user out")
        try sh("setfacl -m u:\(user.name):r granted")
        XCTAssertEqual(try user.runHere(cat).output, "secret\n", "the ACL lets the user read")

        XCTAssertEqual(try user.runHere("cat \(mountPoint)/denied").output, "open\n")
        try sh("setfacl -m u:\(user.name):- denied")
        let denied = try user.runHere("cat \(mountPoint)/denied")
        XCTAssertTrue(denied.error.contains("Permission denied"), "the ACL denies what other allows: \(denied.transcript)")

        XCTAssertFalse(try user.runHere("ls \(mountPoint)/closed").succeeded)
        try sh("setfacl -m u:\(user.name):rx closed")
        XCTAssertEqual(try user.runHere("ls \(mountPoint)/closed").output, "inside\n")

        XCTAssertFalse(try user.runHere("echo more >> \(mountPoint)/writable").succeeded)
        try sh("setfacl -m u:\(user.name):rw writable")
        XCTAssertTrue(try user.runHere("echo more >> \(mountPoint)/writable").succeeded)
        XCTAssertEqual(try sh("cat writable"), "log\nmore\n")
    }

    /// cp -a and rsync -A copy ACLs (access and default) into the mount and out of it,
    /// exit 0, and the copies' ACLs are the originals'.
    func testCpAAndRsyncACopyACLs() throws {
        // The source lives beside the mount when that filesystem has ACLs, else in it.
        let outside = fixture.root + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let hostHasACLs = try Shell.run("touch probe && setfacl -m u:nobody:r probe", in: outside).succeeded
        let source = hostHasACLs ? outside + "/src" : mountPoint + "/src"
        let make = try Shell.run("""
            mkdir -p \(source)/sub && echo a > \(source)/sub/a && echo b > \(source)/b
            setfacl -m u:nobody:rw \(source)/sub/a && setfacl -m g:nogroup:r,o::- \(source)/b
            setfacl -d -m g:nogroup:rx \(source)/sub
            """)
        XCTAssertTrue(make.succeeded, make.transcript)
        let expected = byFile(try sh("cd \(source) && getfacl -R ."))
        XCTAssertTrue(expected.contains { $0.contains("user:nobody:rw-") }, "\(expected)")
        XCTAssertTrue(expected.contains { $0.contains("default:group:nogroup:r-x") }, "\(expected)")
        for copy in ["cp -a \(source) cp", "rsync -aA \(source)/ rsync"] {
            try sh(copy)
            XCTAssertEqual(byFile(try sh("cd \(copy.split(separator: " ").last!) && getfacl -R .")), expected, copy)
        }
        if hostHasACLs {
            let back = try Shell.run("cp -a \(mountPoint)/cp back && cd back && getfacl -R .", in: outside)
            XCTAssertEqual(byFile(back.output), expected, "copied out of the mount: \(back.transcript)")
        }
    }

    /// ACLs are xattrs of the image: a remount shows them unchanged and still inherits.
    func testACLsSurviveRemount() throws {
        try sh("touch f && setfacl -m u:nobody:rw,g:nogroup:r f && mkdir d && setfacl -d -m u:nobody:rx d")
        let before = byFile(try sh("getfacl -R ."))
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        try fixture.start(arguments: mountArguments, skipIfCannotMount: false)
        XCTAssertEqual(byFile(try sh("getfacl -R .")), before)
        XCTAssertEqual(try sh("umask 077 && touch d/new && getfacl -c d/new"), """
            user::rw-
            user:nobody:r-x\t#effective:r--
            group::r-x\t#effective:r--
            mask::r--
            other::r--


            """)
    }

    /// `getfacl -R` output as one block per file, sorted: the order of a listing is the
    /// directory's, which differs between filesystems and between a copy and its source.
    private func byFile(_ output: String) -> [String] {
        output.components(separatedBy: "\n\n").filter { !$0.isEmpty }.sorted()
    }
}
