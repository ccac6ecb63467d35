import Foundation
import XCTest

/// A final checkpoint that fails at unmount is reported, with the image on a 24 MiB tmpfs
/// filled to the last byte: `offloadfs unmount` exits non-zero with one line saying why
/// and what to do, `info` shows it, a mount of the image explains it instead of a bare
/// errno, and once space is freed the image mounts with every file intact and unmounts
/// cleanly (exit 0).
final class UnmountFailureTests: DaemonTestCase {
    private var scratch: ScratchDisk?

    override func setUpWithError() throws {
        try super.setUpWithError()
        scratch = try ScratchDisk(megabytes: 24)
    }

    override func tearDown() {
        super.tearDown()
        for problem in scratch?.unmount() ?? [] { XCTFail(problem) }
        scratch = nil
    }

    func testAFailedFinalCheckpointIsReportedAndExplained() throws {
        // Format 1's final checkpoint (format 2's final commit draws on its metadata
        // reserve: FormatTwoHostFullTests).
        let unpin = MountTestFormat.pinFormatOne()
        defer { unpin() }
        let disk = try XCTUnwrap(scratch).path, image = disk + "/image.bin"
        try mount(image, ["--size", "1G"])

        // Files to keep, then the host disk filled by someone else, then the mount filled
        // block by block until the daemon's own disk reserve (fallocated ahead) is gone too.
        try run("""
            set -e
            mkdir keep && head -c 6291456 /dev/urandom > keep/six.bin && echo hello > keep/hello.txt
            sha256sum keep/six.bin keep/hello.txt > ../keep.sha256
            """)
        _ = try BoundedRun.shell("dd if=/dev/zero of=\(disk)/filler bs=64k status=none", timeout: 60)
        let more = try BoundedRun.shell("dd if=/dev/zero of=more bs=4k count=16384 status=none", in: mountPoint, timeout: 60)
        XCTAssertTrue(more.error.contains("No space left on device"), "the mount must fill up: \(more.transcript)")
        let free = try BoundedRun.shell("df -k --output=avail \(disk) | tail -1", timeout: 10)
        print("[unmount failure] host disk after filling: \(free.output.trimmingCharacters(in: .whitespacesAndNewlines)) KiB free")

        // Unmount: non-zero, one line naming the failure and the disk to free space on.
        let unmount = try BoundedRun.offloadfs(["unmount", mountPoint], timeout: 60)
        print("[unmount failure] offloadfs unmount: \(unmount.summary): \(unmount.error)")
        XCTAssertEqual(unmount.status, 1, unmount.transcript)
        XCTAssertEqual(unmount.errorLines.count, 1, "one line: \(unmount.transcript)")
        XCTAssertTrue(unmount.error.contains("no space left on device while writing the final checkpoint of \(image)"),
                      unmount.transcript)
        XCTAssertTrue(unmount.error.contains("free space on \(disk) ("), unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "the mount is gone all the same")
        let daemon = daemons.removeLast()
        XCTAssertEqual(daemon.waitForExit(), .exited(1), "the daemon exits non-zero: \(daemon.log)")

        let info = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(info.output.contains("last unmount: failed: no space left on device while writing the final checkpoint"),
                      info.transcript)
        // The image's own capacity may be what is full: the advice says so too.
        XCTAssertTrue(info.output.contains("if the image's own capacity is what is full, mount it again with a larger --size"),
                      info.transcript)
        // By a path with no directory in it: the walk up to the disk's mount point span for
        // ever there (the parent of "." is ".": the upgrade hunt of the thirty-fifth session).
        let name = (image as NSString).lastPathComponent
        for typed in [name, "./" + name] {
            let relative = try BoundedRun.shell("'\(DaemonBinary.path!)' info '\(typed)'", in: disk, timeout: 30)
            XCTAssertEqual(relative.ending, .exited(0), relative.transcript)
            XCTAssertTrue(relative.output.contains("free space on \(disk) ("), relative.transcript)
        }

        // A mount of the image on the still full disk says what happened and what to do.
        if let result = try refusedMount(image, []) {
            print("[unmount failure] mount on the full disk: \(result.summary): \(result.error)")
            XCTAssertEqual(result.errorLines.count, 1, result.transcript)
            XCTAssertTrue(result.error.contains("no space left on device while recovering image \(image)"), result.transcript)
            XCTAssertTrue(result.error.contains("its last unmount could not write one either: no space left on device"),
                          result.transcript)
            XCTAssertTrue(result.error.contains("free space on \(disk) ("), result.transcript)
        }

        // Space freed: everything is there, and this unmount succeeds.
        try FileManager.default.removeItem(atPath: disk + "/filler")
        try mount(image, [])
        try run("sha256sum -c --quiet ../keep.sha256")
        let clean = try BoundedRun.offloadfs(["unmount", mountPoint], timeout: 60)
        XCTAssertEqual(clean.ending, .exited(0), clean.transcript)
        XCTAssertEqual(daemons.removeLast().waitForExit(), .exited(0))
        let after = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(after.output.contains("last unmount: clean"), after.transcript)
    }

    /// After kill -9 the mount is dead; `offloadfs unmount` clears it, notes that the
    /// daemon had stopped, and exits 0 (nothing failed at unmount).
    func testUnmountOfAMountWhoseDaemonWasKilled() throws {
        let image = root + "/image.bin"
        try mount(image, [])
        try run("echo kept > f")
        let daemon = daemons.removeLast()
        XCTAssertEqual(kill(daemon.pid, SIGKILL), 0)
        XCTAssertEqual(daemon.waitForExit(), .signalled(SIGKILL))
        let unmount = try BoundedRun.offloadfs(["unmount", mountPoint], timeout: 60)
        XCTAssertEqual(unmount.ending, .exited(0), unmount.transcript)
        XCTAssertEqual(unmount.errorLines.count, 1, unmount.transcript)
        XCTAssertTrue(unmount.error.contains("note: the daemon serving \(mountPoint) had stopped"), unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint))
        try mount(image, [])
        try run("test \"$(cat f)\" = kept")
    }
}
