import Foundation
import XCTest

/// Background `mount` and `unmount` wait while the daemon makes progress, however long
/// that takes, and give up only once it has reported nothing for the stall bound
/// (`OFFLOADFS_STALL_SECONDS`). A test knob (`OFFLOADFS_TEST_SLOW_PHASE`) makes one phase
/// long, either reporting progress or not: a phase twice as long as the bound, reporting,
/// must be waited for (a fixed wait of the bound would fail); a stalled one must be given
/// up on long before it ends (margins wide enough for a loaded machine).
final class ProgressWaitTests: XCTestCase {
    private var root: String!
    private var mountPoint: String { root + "/mnt" }
    private var image: String { root + "/image.bin" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        try requireFuseDevice()
        root = try makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let root {
            if MountTable.isMounted(mountPoint) { _ = try? BoundedRun.offloadfs(["unmount", mountPoint], timeout: 60) }
            DaemonUnderTest.forceUnmount(mountPoint)
            XCTAssertTrue(waitForImageRelease(timeout: 30), "a daemon still holds \(image)")
            try? FileManager.default.removeItem(atPath: root)
        }
        super.tearDown()
    }

    private func offloadfs(_ arguments: [String], slowPhase: String? = nil, stallSeconds: Int) throws -> BoundedResult {
        var environment = ["OFFLOADFS_STALL_SECONDS": "\(stallSeconds)"]
        if let slowPhase { environment["OFFLOADFS_TEST_SLOW_PHASE"] = slowPhase }
        return try BoundedRun.program(try XCTUnwrap(DaemonBinary.path), arguments, environment: environment, timeout: 60)
    }

    private func mount(slowPhase: String?, stallSeconds: Int) throws -> BoundedResult {
        try offloadfs(["mount", mountPoint, "--backing", image, "--size", "64M"], slowPhase: slowPhase,
                      stallSeconds: stallSeconds)
    }

    func testMountWaitsAsLongAsStartUpProgresses() throws {
        let mount = try self.mount(slowPhase: "\(MountTestFormat.newImagePhase):4", stallSeconds: 2)
        XCTAssertTrue(mount.succeeded, mount.transcript)
        XCTAssertGreaterThan(mount.seconds, 4, "the slow phase ran")
        XCTAssertTrue(MountTable.isMounted(mountPoint))
    }

    func testMountGivesUpWhenStartUpStalls() throws {
        let mount = try self.mount(slowPhase: "\(MountTestFormat.newImagePhase):20:stall", stallSeconds: 1)
        XCTAssertEqual(mount.status, 1, mount.transcript)
        XCTAssertLessThan(mount.seconds, 10, "gave up after the 1 s bound, not after the 20 s phase")
        XCTAssertEqual(mount.errorLines.count, 1, mount.transcript)
        XCTAssertTrue(mount.error.contains("the daemon made no progress for 1 s (last: \(MountTestFormat.newImagePhase)"), mount.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "nothing left mounted")
    }

    func testUnmountWaitsAsLongAsTheFinalCheckpointProgresses() throws {
        XCTAssertTrue(try mount(slowPhase: "\(MountTestFormat.finalPhase):4", stallSeconds: 2).succeeded)
        XCTAssertTrue(try Shell.run("echo kept > f", in: mountPoint).succeeded)
        let unmount = try offloadfs(["unmount", mountPoint], stallSeconds: 2)
        XCTAssertTrue(unmount.succeeded, unmount.transcript)
        XCTAssertGreaterThan(unmount.seconds, 4, "it waited for the whole final checkpoint")
        let info = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(info.output.contains("cleanly unmounted: yes"), "the image is free and clean at once: \(info.transcript)")
    }

    func testUnmountGivesUpWhenTheFinalCheckpointStalls() throws {
        XCTAssertTrue(try mount(slowPhase: "\(MountTestFormat.finalPhase):6:stall", stallSeconds: 1).succeeded)
        let unmount = try offloadfs(["unmount", mountPoint], stallSeconds: 1)
        XCTAssertEqual(unmount.status, 1, unmount.transcript)
        XCTAssertLessThan(unmount.seconds, 5, "gave up after the 1 s bound, not after the 6 s phase: \(unmount.transcript)")
        XCTAssertEqual(unmount.errorLines.count, 1, unmount.transcript)
        XCTAssertTrue(unmount.error.contains("no progress for 1 s (last: stopping: \(MountTestFormat.finalPhase)"),
                      unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "the kernel mount is gone all the same")
        // The daemon was only slow: it finishes by itself and the image is clean.
        XCTAssertTrue(waitForImageRelease(timeout: 30))
        let info = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(info.output.contains("cleanly unmounted: yes"), info.transcript)
    }

    /// The kernel gives an unmounted FUSE mount's device number to the next mount at
    /// once, while the first daemon still writes its final commit; the status socket is
    /// named after the device. The next mount's daemon removed the first one's socket and
    /// bound its own there, so the first unmount's wait, hearing only another daemon,
    /// gave up after the stall bound. The next daemon now binds a name of its own while
    /// the first still answers, and both waits and `status` find theirs.
    func testAMountTakingTheDeviceOfAStoppingOneLeavesItsUnmountToFollowIt() throws {
        XCTAssertTrue(try mount(slowPhase: "\(MountTestFormat.finalPhase):4", stallSeconds: 2).succeeded)
        let device = try XCTUnwrap(MountInfoLine.device(of: mountPoint))
        let unmount = Process()
        unmount.executableURL = URL(fileURLWithPath: try XCTUnwrap(DaemonBinary.path))
        unmount.arguments = ["unmount", mountPoint]
        unmount.environment = ProcessInfo.processInfo.environment.merging(["OFFLOADFS_STALL_SECONDS": "2"]) { $1 }
        let errors = Pipe()
        unmount.standardError = errors
        let started = Date()
        try unmount.run()
        defer { if unmount.isRunning { kill(unmount.processIdentifier, SIGKILL); unmount.waitUntilExit() } }
        // The first daemon is in its final commit now; the next mount takes its device.
        let deadline = Date().addingTimeInterval(10)
        while MountTable.isMounted(mountPoint) && Date() < deadline { usleep(20_000) }
        let next = root + "/next"
        try FileManager.default.createDirectory(atPath: next, withIntermediateDirectories: true)
        defer {
            _ = try? BoundedRun.offloadfs(["unmount", next], timeout: 60)
            DaemonUnderTest.forceUnmount(next)
        }
        let mounted = try BoundedRun.offloadfs(["mount", next, "--backing", root + "/next.img", "--size", "64M"], timeout: 60)
        XCTAssertTrue(mounted.succeeded, mounted.transcript)
        print("[device reuse] first mount \(device), next mount \(MountInfoLine.device(of: next) ?? "-")")
        unmount.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(unmount.terminationStatus, 0, message)
        XCTAssertGreaterThan(Date().timeIntervalSince(started), 4, "it waited for the whole final commit: \(message)")
        let status = try BoundedRun.offloadfs(["status", next], timeout: 30)
        XCTAssertTrue(status.output.contains("state: serving\n"), status.transcript)
    }

    /// True once no process holds the image's lock.
    private func waitForImageRelease(timeout: TimeInterval) -> Bool {
        let fd = open(image, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { flock(fd, LOCK_UN); return true }
            usleep(20_000)
        }
        return false
    }
}
