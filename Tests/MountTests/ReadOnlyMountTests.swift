import Foundation
import XCTest

/// `-o ro` writes not one byte of the image (same bytes and mtime before and after, for a
/// cleanly unmounted image and for one with a journal tail left by kill -9, whose changes
/// a read-only mount replays in memory), and an image that cannot be written (mode 0444,
/// or on a filesystem mounted read-only) mounts with `-o ro`; without it, the mount is
/// refused in one line that says why and suggests `-o ro`.
final class ReadOnlyMountTests: DaemonTestCase {
    private var scratch: ScratchDisk?

    override func tearDown() {
        super.tearDown()
        if let scratch {
            try? scratch.remount(readOnly: false)
            for problem in scratch.unmount() { XCTFail(problem) }
        }
        scratch = nil
    }

    func testAReadOnlyMountWritesNothing() throws {
        let image = root + "/image.bin"
        try mount(image, ["--size", "64M"])
        try run("mkdir d && echo hello > d/f && head -c 300000 /dev/urandom > big && sha256sum d/f big > ../sums")
        try unmountAll()

        // A cleanly unmounted image; --fresh and --size cannot go with -o ro.
        var before = try FileSnapshot(image)
        for extra in [["--fresh"], ["--size", "8M"]] {
            let refused = try BoundedRun.offloadfs(["mount", mountPoint, "--backing", image, "-o", "ro"] + extra, timeout: 30)
            XCTAssertNotEqual(refused.status, 0, refused.transcript)
            XCTAssertTrue(refused.error.contains("read-only mount (-o ro) cannot"), refused.transcript)
        }
        try mount(image, ["-o", "ro"])
        try run("sha256sum -c --quiet ../sums")
        let write = try BoundedRun.shell("touch new", in: mountPoint, timeout: 10)
        XCTAssertTrue(write.error.contains("Read-only file system"), write.transcript)
        let unmount = try BoundedRun.offloadfs(["unmount", mountPoint], timeout: 30)
        XCTAssertEqual(unmount.ending, .exited(0), unmount.transcript)
        XCTAssertEqual(unmount.output + unmount.error, "", "a read-only unmount has nothing to report")
        try reapAll()
        XCTAssertEqual(try FileSnapshot(image), before, "-o ro of a clean image changed its bytes or mtime")

        // A journal tail (kill -9): replayed in memory, the image untouched.
        try mount(image, [])
        try run("echo more > g && echo again >> d/f && sha256sum d/f big g > ../sums && sync")
        let crashed = try XCTUnwrap(daemons.popLast())
        kill(crashed.pid, SIGKILL)
        _ = crashed.waitForExit()
        DaemonUnderTest.forceUnmount(mountPoint)
        before = try FileSnapshot(image)
        try mount(image, ["-o", "ro"])
        try run("sha256sum -c --quiet ../sums")
        try unmountAll()
        XCTAssertEqual(try FileSnapshot(image), before, "-o ro after kill -9 changed the image")
        try mount(image, [])
        try run("sha256sum -c --quiet ../sums")
        try unmountAll()

        // Mode 0444: refused read-write (even for root), mounted with -o ro.
        XCTAssertEqual(chmod(image, 0o444), 0)
        before = try FileSnapshot(image)
        try refused(image, containing: "it has no write permission (mode 444); mount it with -o ro")
        try mount(image, ["-o", "ro"])
        try run("sha256sum -c --quiet ../sums")
        try unmountAll()
        XCTAssertEqual(try FileSnapshot(image), before, "-o ro of a 0444 image changed it")
    }

    /// The image on a tmpfs remounted read-only: refused read-write, mounted with -o ro.
    func testAnImageOnAReadOnlyFilesystemMountsWithReadOnly() throws {
        let scratch = try ScratchDisk(megabytes: 16)
        self.scratch = scratch
        let image = scratch.path + "/image.bin"
        try mount(image, ["--size", "8M"])
        try run("echo kept > f && sha256sum f > \(root!)/sums")
        try unmountAll()
        try scratch.remount(readOnly: true)
        let before = try FileSnapshot(image)
        try refused(image, containing: "the filesystem holding it is mounted read-only; mount it with -o ro")
        try mount(image, ["-o", "ro"])
        try run("sha256sum -c --quiet \(root!)/sums")
        try unmountAll()
        XCTAssertEqual(try FileSnapshot(image), before)
    }

    // MARK: Helpers

    /// A read-write mount of `image` fails with one line containing `message`.
    private func refused(_ image: String, containing message: String) throws {
        guard let result = try refusedMount(image, []) else { return }
        print("[read-only] read-write mount refused: \(result.error)")
        XCTAssertEqual(result.status, 1, result.transcript)
        XCTAssertEqual(result.errorLines.count, 1, result.transcript)
        XCTAssertTrue(result.error.contains(message), result.transcript)
    }

    /// After `offloadfs unmount`: the daemons exit 0.
    private func reapAll() throws {
        for daemon in daemons { XCTAssertEqual(daemon.waitForExit(), .exited(0), daemon.log) }
        daemons = []
    }
}
