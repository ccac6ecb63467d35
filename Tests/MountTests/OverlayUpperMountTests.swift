import Foundation
import XCTest

/// overlayfs with its upper layer on offloadfs, as a live system or a container runtime
/// puts one on tmpfs: the kernel's overlayfs mounts only on an upper filesystem that can
/// rename with RENAME_WHITEOUT (format 2 can; format 1 answers EINVAL, and overlayfs
/// refuses it). Every change through the overlay is kept in the upper layer, whiteouts and
/// opaque directories included, across a remount of offloadfs.
final class OverlayUpperMountTests: MountedTestCase {
    override var mountArguments: [String] { ["--size", "256M"] }

    func testOverlayfsMountsWithItsUpperLayerOnOffloadfs() throws {
        let lower = fixture.root + "/lower", merged = fixture.root + "/merged"
        let setup = try Shell.run("mkdir -p \(lower)/d \(merged) && echo low > \(lower)/a && echo low2 > \(lower)/b && echo x > \(lower)/d/x")
        XCTAssertTrue(setup.succeeded, setup.transcript)
        try sh("mkdir upper work")
        let options = "lowerdir=\(lower),upperdir=\(mountPoint)/upper,workdir=\(mountPoint)/work"
        func mountOverlay() throws -> ShellResult { try Shell.run("mount -t overlay overlay -o \(options) \(merged)") }
        defer { _ = try? Shell.run("umount \(merged) 2>/dev/null") }

        guard MountTestFormat.isTwo else {
            let whiteout = "import ctypes, os; os.chdir('\(mountPoint)'); open('f', 'w').close(); "
                + "libc = ctypes.CDLL(None, use_errno=True); "
                + "print(libc.renameat2(-100, b'f', -100, b'g', 4), os.strerror(ctypes.get_errno()))"
            XCTAssertEqual(try Shell.run("python3 -c \"\(whiteout)\"").output, "-1 Invalid argument\n")
            XCTAssertFalse(try mountOverlay().succeeded, "format 1 has no RENAME_WHITEOUT, which overlayfs needs")
            return
        }
        let mounted = try mountOverlay()
        XCTAssertTrue(mounted.succeeded, mounted.transcript)
        let changed = try Shell.run("""
            cd \(merged) && echo up > c && rm a && mv b b2 && rm -r d && mkdir d && echo new > d/y && ls -A . d
            """)
        XCTAssertEqual(changed.output, ".:\nb2\nc\nd\n\nd:\ny\n", changed.transcript)
        // In the upper layer: the whiteouts of `a` and `b` (character devices 0:0), the
        // new files, and `d` opaque.
        XCTAssertEqual(try sh("cd upper && stat -c '%n %F %t:%T %a' a b | sort"),
                       "a character special file 0:0 0\nb character special file 0:0 0\n")
        XCTAssertEqual(try sh("getfattr --only-values -n trusted.overlay.opaque upper/d"), "y")

        XCTAssertTrue(try Shell.run("umount \(merged)").succeeded)
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        let fsck = try Shell.runProgram(try XCTUnwrap(DaemonBinary.path), ["fsck", fixture.image])
        XCTAssertEqual(fsck.status, 0, fsck.transcript)
        try fixture.start(arguments: mountArguments, skipIfCannotMount: false)
        let again = try mountOverlay()
        XCTAssertTrue(again.succeeded, again.transcript)
        XCTAssertEqual(try Shell.run("cd \(merged) && ls -A . d && cat b2 c d/y").output, ".:\nb2\nc\nd\n\nd:\ny\nlow2\nup\nnew\n")
    }
}
