import Foundation
import XCTest

/// Mount failures of an unprivileged user say the real reason in one line, in the
/// background as in the foreground (issue 9, item 3). Each test runs offloadfs as a
/// fresh non-root user in a private mount namespace (see NonRootUser).
final class NonRootMountTests: XCTestCase {
    private var user: NonRootUser!

    override func setUpWithError() throws {
        try super.setUpWithError()
        user = try NonRootUser()
    }

    override func tearDown() {
        for problem in user?.remove() ?? [] { XCTFail(problem) }
        user = nil
        super.tearDown()
    }

    /// One line on stderr, prefixed `offloadfs: `, nothing on stdout, non-zero status.
    private func assertOneLineError(_ result: ShellResult, containing text: String,
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(result.status, 0, result.transcript, file: file, line: line)
        XCTAssertEqual(result.output, "", result.transcript, file: file, line: line)
        XCTAssertEqual(result.error.split(separator: "\n").count, 1, "one line: \(result.transcript)", file: file, line: line)
        XCTAssertTrue(result.error.hasPrefix("offloadfs: "), result.transcript, file: file, line: line)
        XCTAssertTrue(result.error.contains(text), "expected '\(text)': \(result.transcript)", file: file, line: line)
    }

    /// The setup itself works: the user can mount, write and unmount, so the failures
    /// below come from what each test changes.
    func testUnprivilegedUserCanMountAndUnmount() throws {
        let mountPoint = try user.makeDirectory("m"), images = try user.makeDirectory("images")
        let result = try user.run("""
            \(user.binary) mount \(mountPoint) --backing \(images)/a.img --size 64M || exit 1
            echo hello > \(mountPoint)/f && cat \(mountPoint)/f
            \(user.binary) unmount \(mountPoint)
            """)
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertEqual(result.output, "hello\n", result.transcript)
        XCTAssertEqual(result.error, "", result.transcript)
    }

    /// A busy unmount as a user goes through fusermount3 -u: fusermount3's "busy" becomes
    /// the hint with fuser and --lazy, and --lazy (fusermount3 -u -z) detaches the mount.
    func testBusyUnmountAsAUserNamesFuserAndLazyDetaches() throws {
        let mountPoint = try user.makeDirectory("m"), images = try user.makeDirectory("images")
        let result = try user.run("""
            \(user.binary) mount \(mountPoint) --backing \(images)/a.img --size 64M || exit 1
            (cd \(mountPoint) && exec sleep 30) &
            holder=$!
            sleep 0.3
            \(user.binary) unmount \(mountPoint); echo "plain $?"
            \(user.binary) unmount --lazy \(mountPoint); echo "lazy $?"
            grep -c " \(mountPoint) " /proc/self/mounts
            kill $holder
            """)
        XCTAssertEqual(result.output, "plain 1\nlazy 0\n0\n", result.transcript)
        XCTAssertTrue(result.error.hasPrefix("offloadfs: cannot unmount \(mountPoint): it is busy"), result.transcript)
        XCTAssertTrue(result.error.contains("fuser -vm \(mountPoint)"), result.transcript)
        XCTAssertEqual(result.error.split(separator: "\n").count, 1, result.transcript)
    }

    /// `-o allow_other` without `user_allow_other` in /etc/fuse.conf: fusermount3's own
    /// message, once, in the background and in the foreground.
    func testAllowOtherWithoutUserAllowOtherSaysWhy() throws {
        let mountPoint = try user.makeDirectory("m"), images = try user.makeDirectory("images")
        let expected = "cannot mount \(mountPoint): fusermount3: option allow_other only allowed if "
            + "'user_allow_other' is set in /etc/fuse.conf"
        for extra in ["", "--foreground"] {
            let result = try user.run("\(user.binary) mount \(mountPoint) --backing \(images)/a.img --size 64M "
                                      + "-o allow_other \(extra)")
            assertOneLineError(result, containing: expected)
        }
    }

    /// A mount point the user cannot write: fusermount3's reason, not "the kernel refused".
    func testMountPointTheUserCannotWriteSaysWhy() throws {
        let mountPoint = try user.makeDirectory("root-owned", ownedByUser: false)
        let images = try user.makeDirectory("images")
        for extra in ["", "--foreground"] {
            let result = try user.run("\(user.binary) mount \(mountPoint) --backing \(images)/a.img --size 64M \(extra)")
            assertOneLineError(result, containing: "cannot mount \(mountPoint): fusermount3: user has no write "
                               + "access to mountpoint \(mountPoint)")
        }
    }

    /// An image the user may not make (its directory is root's) or may not read (root's,
    /// mode 0600, mounted `-o ro`): the error says which, and does not offer `-o ro`
    /// (it offered "mount it with -o ro to read its files" for both, though the first has
    /// no files and the second was read-only already). An image the user may read but not
    /// write still gets the offer.
    func testAnImageTheUserMayNotMakeOrReadSaysWhichWithoutOfferingReadOnly() throws {
        let mountPoint = try user.makeDirectory("m"), rootOwned = try user.makeDirectory("root-owned", ownedByUser: false)
        let made = try user.run("\(user.binary) mount \(mountPoint) --backing \(rootOwned)/a.img --size 64M")
        assertOneLineError(made, containing: "cannot create image \(rootOwned)/a.img: you may not write in \(rootOwned)")
        XCTAssertFalse(made.error.contains("-o ro"), made.transcript)

        let secret = rootOwned + "/secret.img", readable = rootOwned + "/readable.img"
        for (path, mode) in [(secret, "0600"), (readable, "0644")] {
            let created = try Shell.run("head -c 4096 /dev/zero > \(path) && chmod \(mode) \(path)")
            XCTAssertTrue(created.succeeded, created.transcript)
        }
        let unread = try user.run("\(user.binary) mount \(mountPoint) --backing \(secret) -o ro")
        assertOneLineError(unread, containing: "cannot open image \(secret): you may not read it (permission denied, mode 600")
        XCTAssertFalse(unread.error.contains("mount it with -o ro"), unread.transcript)

        let unwritable = try user.run("\(user.binary) mount \(mountPoint) --backing \(readable)")
        assertOneLineError(unwritable, containing: "mount it with -o ro to read its files")
    }

    /// /dev/fuse the user cannot open: the device's mode and owner, and what to change.
    func testFuseDeviceTheUserCannotOpenNamesTheModeOrGroup() throws {
        let mountPoint = try user.makeDirectory("m"), images = try user.makeDirectory("images")
        let command = "\(user.binary) mount \(mountPoint) --backing \(images)/a.img --size 64M"
        let rootOnly = try user.run(command, fuseMode: "0600", fuseGroup: "root")
        assertOneLineError(rootOnly, containing: "cannot open /dev/fuse: Permission denied (crw------- root:root): "
                           + "only root may use FUSE here; `chmod 0666 /dev/fuse` (the mode udev gives it "
                           + "on a standard system) lets every user mount")
        let group = try user.run(command, fuseMode: "0660", fuseGroup: "nogroup")
        assertOneLineError(group, containing: "cannot open /dev/fuse: Permission denied (crw-rw---- root:nogroup): "
                           + "add \(user.name) to group nogroup (`usermod -aG nogroup \(user.name)`, then log in again)")
    }
}
