import Foundation
import XCTest

/// A user who is not root mounts an image they own, uses it, reads its status and
/// unmounts it (through fusermount3), as they would with sshfs; another user may not read
/// that status, nor the status of root's mounts.
///
/// The user is a throw-away one (`NonRootUser`). The script runs as root in a private
/// mount namespace (`PrivateNamespace`) and switches users per step: libfuse opens
/// /dev/fuse itself even for users (fusermount3, setuid root, only makes the mount), so a
/// node of the same device with mode 0666 is bind-mounted over it there, whatever the
/// machine's own mode (0600 in containers; Debian gives 0666).
final class NonRootStatusTests: PrivateNamespaceTestCase {
    private var user: NonRootUser!

    override func setUpWithError() throws {
        user = try NonRootUser()
        try super.setUpWithError()
    }

    override func tearDown() {
        super.tearDown()
        for problem in user?.remove() ?? [] { XCTFail(problem) }
        user = nil
    }

    func testUserMountsReadsTheStatusAndUnmounts() throws {
        // The user's own directory (the binary's copy is in the same 0755 directory).
        let home = try user.makeDirectory("home")
        let result = try namespace.run("""
            user=\(user.name); bin=\(user.binary)
            home=\(home); mnt=$home/mnt; img=$home/image.bin
            trap 'fusermount3 -u -z "$mnt" 2>/dev/null || true; umount -l "$ROOT/rootmnt" 2>/dev/null || true' EXIT
            mkdir -p "$mnt"; chown "$user:" "$mnt"
            mknod "$ROOT/fuse" c 10 229; chmod 666 "$ROOT/fuse"; mount --bind "$ROOT/fuse" /dev/fuse
            as_user() { setpriv --reuid="$user" --regid="$user" --init-groups env -u XDG_RUNTIME_DIR HOME="$home" "$@"; }
            as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }

            step mount as_user "$bin" mount "$mnt" --backing "$img" --size 64M
            step mounts grep " $mnt " /proc/self/mounts
            step use as_user sh -c 'echo mine > "$1/f" && cat "$1/f" && stat -c %U "$1/f"' - "$mnt"
            step status as_user "$bin" status --json "$mnt"
            step root-status "$bin" status --json "$mnt"
            step nobody-status as_nobody "$bin" status "$mnt"
            step unmount as_user "$bin" unmount "$mnt"
            step after sh -c "grep ' $mnt ' /proc/self/mounts || true"
            # The status socket was in /tmp/offloadfs-UID (no login session): gone with it.
            step runtime-dir sh -c "ls -d /tmp/offloadfs-$(id -u "$user") 2>/dev/null || true"
            step info "$bin" info "$img"

            # root's mount: its status is root's only.
            mkdir "$ROOT/rootmnt"
            step root-mount "$bin" mount "$ROOT/rootmnt" --backing "$ROOT/root.img" --size 64M
            step nobody-root-status as_nobody "$bin" status "$ROOT/rootmnt"
            step root-unmount "$bin" unmount "$ROOT/rootmnt"
            """)
        XCTAssertTrue(result.succeeded, result.transcript)
        _ = check("mount")
        let uid = try Shell.runProgram("/usr/bin/id", ["-u", user.name]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(check("mounts").output.contains("user_id=\(uid),"), "the user's own mount (fusermount3)")
        XCTAssertEqual(check("use").output, "mine\n\(user.name)\n", "the user's files are the user's")
        XCTAssertTrue(check("status").output.contains("\"owner_uid\" : \(uid)"), namespace.step("status").transcript)
        XCTAssertTrue(check("root-status").output.contains("\"state\" : \"serving\""), "root may read it too")
        let nobody = check("nobody-status", status: 1)
        XCTAssertEqual(nobody.error.split(separator: "\n").count, 1, nobody.transcript)
        XCTAssertTrue(nobody.error.contains("cannot read the status of") && nobody.error.contains("permission denied"),
                      nobody.transcript)
        _ = check("unmount")
        XCTAssertEqual(check("after").output, "", "unmounted")
        XCTAssertEqual(check("runtime-dir").output, "", "the user's empty runtime directory is removed")
        XCTAssertTrue(check("info").output.contains("cleanly unmounted: yes"), namespace.step("info").transcript)

        _ = check("root-mount")
        let refused = check("nobody-root-status", status: 1)
        XCTAssertTrue(refused.error.contains("permission denied"), refused.transcript)
        _ = check("root-unmount")
    }
}
