import Foundation
import XCTest

/// offloadfs mounted the way an administrator mounts other filesystems: `mount -t
/// fuse.offloadfs` (through mount.fuse3), an fstab line, `mount -t offloadfs` (through the
/// mount.offloadfs helper), and `umount` (through umount.fuse.offloadfs, which waits for
/// the final checkpoint). Everything runs in a private mount namespace where the helpers
/// point at the binary under test (`PrivateNamespace`).
final class MountHelperTests: PrivateNamespaceTestCase {
    /// Only mount.fuse3's exact form (IMAGE DIR -o OPTS) is read as a mount: a mistyped
    /// subcommand before a directory is an error, never an image created and mounted.
    func testMistypedSubcommandIsNotTakenForAnImage() throws {
        try FileManager.default.createDirectory(atPath: namespace.root + "/mnt", withIntermediateDirectories: true)
        let binary = try XCTUnwrap(DaemonBinary.path)
        for arguments in [["mont", "mnt"], ["mont", "mnt", "--backing", "x.img"]] {
            let result = try BoundedRun.program(binary, arguments, in: namespace.root, timeout: 30)
            XCTAssertNotEqual(result.status, 0, "\(arguments): \(result.transcript)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: namespace.root + "/mont"), "\(arguments)")
            XCTAssertFalse(MountTable.isMounted(namespace.root + "/mnt"), "\(arguments)")
        }
    }

    func testMountUmountFstabAndHelperForms() throws {
        let result = try namespace.run("""
            img=$ROOT/image.bin; mnt=$ROOT/mnt
            mkdir "$mnt"
            trap 'umount -l "$mnt" 2>/dev/null || true' EXIT
            mounts() { grep " $mnt " /proc/self/mounts || true; }

            # mount.fuse3 runs `offloadfs IMAGE DIR -o OPTS`, with what mount(8) and
            # mount.fuse3 add (dev, suid) and keep for themselves (nofail, _netdev, ...).
            # (The test knob makes the final checkpoint take 1 s, to see umount wait for it.)
            step fuse env OFFLOADFS_TEST_SLOW_PHASE='\(MountTestFormat.finalPhase):1' \\
                mount -t fuse.offloadfs "$img" "$mnt" -o size=64M,memory_limit=1M,noatime,nofail,_netdev,x-systemd.automount,noauto,defaults
            step fuse-mounts mounts
            step fuse-use sh -c "echo kept > '$mnt/f' && cat '$mnt/f'"
            step fuse-status "$BIN" status "$mnt" --json
            step fuse-umount sh -c 'start=$(date +%s%N); umount "$1"; echo $(( ($(date +%s%N) - start) / 1000000 ))' - "$mnt"
            # umount returned only after the final checkpoint: the image is free and clean.
            step fuse-info "$BIN" info "$img"

            # The same as an fstab line.
            # (README's fstab line, with this test's paths.)
            printf '%s %s fuse.offloadfs size=64M,memory_limit=1M,allow_other,_netdev,nofail,x-systemd.automount,x-systemd.idle-timeout=10min 0 0\\n' \\
                "$img" "$mnt" > "$ROOT/fstab"
            step fstab mount -T "$ROOT/fstab" "$mnt"
            step fstab-use cat "$mnt/f"
            step fstab-umount umount "$mnt"

            # mount -t offloadfs: mount(8) runs /sbin/mount.offloadfs SPEC DIR -o OPTS.
            step helper mount -t offloadfs "$img" "$mnt" -o memory_limit=2M,ro
            step helper-mounts mounts
            step helper-use cat "$mnt/f"
            step helper-umount umount "$mnt"

            # format=2 makes a new image in format 2. (`offloadfs unmount`, which waits for
            # the daemon: for this mount umount(8) ran umount2 itself, without the helper,
            # as strace showed, and returned before the daemon let go of the image.)
            step format-two mount -t fuse.offloadfs "$ROOT/two.bin" "$mnt" -o size=64M,format=2
            step format-two-umount "$BIN" unmount "$mnt"
            step format-two-info "$BIN" info "$ROOT/two.bin"

            # Refused options: one clear line each, nothing mounted.
            step bad-format mount -t fuse.offloadfs "$img" "$mnt" -o format=3
            step bad-size mount -t fuse.offloadfs "$img" "$mnt" -o size=12Q
            step bad-option mount -t offloadfs "$img" "$mnt" -o no_such_option
            step bad-zero-size mount -t fuse.offloadfs "$img" "$mnt" -o size=0
            step bad-read-only-size mount -t fuse.offloadfs "$img" "$mnt" -o ro,size=64M
            step too-small mount -t fuse.offloadfs "$ROOT/small.bin" "$mnt" -o size=1,format=2
            step bad-mounts mounts
            """)
        XCTAssertTrue(result.succeeded, result.transcript)
        let fuse = check("fuse-mounts").output
        XCTAssertTrue(fuse.contains(" fuse.offloadfs ") && fuse.contains("noatime"), "type and the passed option: \(fuse)")
        _ = check("fuse")
        XCTAssertEqual(check("fuse-use").output, "kept\n")
        let status = check("fuse-status").output
        XCTAssertTrue(status.contains("\"size=64M\"") && status.contains("\"memory_limit=1M\"") && status.contains("\"noatime\""),
                      "offloadfs's own options were taken out of -o: \(status)")
        XCTAssertFalse(status.contains("nofail") || status.contains("x-systemd") || status.contains("_netdev"),
                       "mount(8)'s own options were dropped: \(status)")
        let milliseconds = Int(check("fuse-umount").output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThanOrEqual(milliseconds, 1000, "umount waited for the (1 s) final checkpoint")
        XCTAssertTrue(check("fuse-info").output.contains("cleanly unmounted: yes"), namespace.step("fuse-info").transcript)

        _ = check("fstab")
        XCTAssertEqual(check("fstab-use").output, "kept\n", "an fstab line mounts the same image")
        _ = check("fstab-umount")

        _ = check("helper")
        let helper = check("helper-mounts").output
        XCTAssertTrue(helper.contains(" fuse.offloadfs ro,"), "mount.offloadfs passed ro on: \(helper)")
        XCTAssertEqual(check("helper-use").output, "kept\n")
        _ = check("helper-umount")
        _ = check("format-two-umount")
        XCTAssertTrue(check("format-two-info").output.contains("format version: 2"), namespace.step("format-two-info").transcript)

        for (name, text) in [("bad-format", "format=3: the format is 1 or 2"), ("bad-size", "size=12Q: '12Q' has an unknown unit"),
                             ("bad-option", "no_such_option"), ("bad-zero-size", "must be larger than 0"),
                             ("bad-read-only-size", "-o size= changes the image's capacity"),
                             ("too-small", "-o size=1 is too small for a new image")] {
            let step = namespace.step(name)
            // mount(8)'s status for a mistake (64 is its "some mount succeeded"; the option
            // checks of the command itself answered it, the admin hunt found).
            XCTAssertEqual(step.status, 1, "\(name): \(step.transcript)")
            let lines = step.error.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(name): one line: \(step.transcript)")
            XCTAssertTrue(step.error.hasPrefix("offloadfs: ") && step.error.contains(text), "\(name): \(step.transcript)")
            // The options are named as the -o options the line holds, not as flags.
            XCTAssertFalse(step.error.contains("--"), "\(name): \(step.transcript)")
        }
        XCTAssertTrue(namespace.step("too-small").error.contains("use -o size="), namespace.step("too-small").transcript)
        XCTAssertEqual(namespace.step("bad-mounts").output, "", "a refused mount leaves nothing mounted")
    }
}
