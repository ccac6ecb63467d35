import Foundation
import XCTest

/// Mounting where something is mounted already, or on a directory that holds files
/// (issue 9, item 2).
final class MountPointCheckTests: CommandLineTestCase {
    /// A live offloadfs mount is never hidden by a second one.
    func testMountOverALiveMountIsRefused() throws {
        let mountPoint = scratch + "/m"
        try mountInBackground(mountPoint, image: scratch + "/a.img")
        for extra in [[], ["--foreground"]] {
            let result = try offloadfs(["mount", mountPoint, "--backing", scratch + "/b.img", "--size", "64M"] + extra)
            assertOneLineError(result, containing: "\(mountPoint) is already an offloadfs mount (image \(scratch!)/a.img)")
            XCTAssertTrue(result.error.contains("offloadfs unmount \(mountPoint)"), result.transcript)
            XCTAssertEqual(mountCount(mountPoint), 1, "nothing stacked \(extra)")
        }
        // Also when the mount point is spelt differently (trailing slash).
        let slash = try offloadfs(["mount", mountPoint + "/", "--backing", scratch + "/b.img", "--size", "64M"])
        assertOneLineError(slash, containing: "already an offloadfs mount")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch + "/b.img"), "no image is created")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
    }

    /// After kill -9 the mount point is a dead mount: mount says so and how to clear it;
    /// --clear-dead-mount clears it and mounts, with what the image held.
    func testMountOverADeadMountSaysHowToClearIt() throws {
        let mountPoint = scratch + "/m", image = scratch + "/a.img"
        let pid = try mountInBackground(mountPoint, image: image)
        XCTAssertTrue(try Shell.run("echo kept > f && sync", in: mountPoint).succeeded)
        kill(pid, SIGKILL)
        XCTAssertTrue(waitForExit(pid))

        let refused = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "64M"])
        assertOneLineError(refused, containing: "\(mountPoint) is a dead offloadfs mount")
        XCTAssertTrue(refused.error.contains("offloadfs unmount \(mountPoint)"), refused.transcript)
        XCTAssertTrue(refused.error.contains("--clear-dead-mount"), refused.transcript)
        XCTAssertEqual(mountCount(mountPoint), 1, "no second mount stacked on the dead one")

        let cleared = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "64M", "--clear-dead-mount"])
        XCTAssertEqual(cleared.status, 0, cleared.transcript)
        XCTAssertEqual(mountCount(mountPoint), 1, "the dead mount was replaced, not stacked on")
        pidsToClean.append(try XCTUnwrap(daemonPID(mountPoint: mountPoint)))
        XCTAssertEqual(try Shell.run("cat f", in: mountPoint).output, "kept\n")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
        XCTAssertEqual(mountCount(mountPoint), 0, "no dead mount reappears after unmount")
    }

    /// An image under its own mount point is refused: the mount would hide it, and the
    /// daemon's own open of it by its path (its watch for the image's deletion) went
    /// through the mount it had not begun to serve, so the mount never answered (`ls`
    /// of it hung too) and only kill -9 ended it.
    func testAnImageUnderItsMountPointIsRefused() throws {
        let mountPoint = scratch + "/m"
        try FileManager.default.createDirectory(atPath: mountPoint + "/sub", withIntermediateDirectories: true)
        for image in [mountPoint + "/a.img", mountPoint + "/sub/b.img", mountPoint + "/../m/c.img"] {
            for extra in [[], ["--foreground"]] {
                let result = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "64M"] + extra)
                assertOneLineError(result, containing: "lies under the mount point \(mountPoint)")
                XCTAssertEqual(mountCount(mountPoint), 0, "\(image) \(extra)")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mountPoint), ["sub"], "no image was made")
        // Beside the mount point is fine.
        try mountInBackground(mountPoint, image: scratch + "/m.img")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
    }

    /// --clear-dead-mount never touches a live mount.
    func testClearDeadMountLeavesALiveMountAlone() throws {
        let mountPoint = scratch + "/m"
        try mountInBackground(mountPoint, image: scratch + "/a.img")
        let result = try offloadfs(["mount", mountPoint, "--backing", scratch + "/b.img", "--clear-dead-mount"])
        assertOneLineError(result, containing: "already an offloadfs mount")
        XCTAssertTrue(try Shell.run("touch still-live", in: mountPoint).succeeded, "the first mount still serves")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
    }

    /// Any other mount (here a tmpfs) is named and left alone.
    func testMountOverAnotherFilesystemIsRefused() throws {
        guard geteuid() == 0 else { throw XCTSkip("mounting a tmpfs needs root") }
        let mountPoint = scratch + "/t"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        XCTAssertTrue(try Shell.run("mount -t tmpfs -o size=1M offloadfs-test-tmpfs \(mountPoint)").succeeded)
        defer { _ = try? Shell.run("umount \(mountPoint)") }
        let result = try offloadfs(["mount", mountPoint, "--backing", scratch + "/a.img", "--clear-dead-mount"])
        assertOneLineError(result, containing: "\(mountPoint) is already a mount point (tmpfs from offloadfs-test-tmpfs)")
        XCTAssertEqual(mountCount(mountPoint), 1)
    }

    /// A mount point with files in it is mounted (libfuse 3 and mount(8) allow it), with
    /// one warning line that its entries are hidden meanwhile.
    func testNonEmptyMountPointIsMountedWithAWarning() throws {
        try requireFuse()
        let mountPoint = scratch + "/m"
        try FileManager.default.createDirectory(atPath: mountPoint + "/hidden-dir", withIntermediateDirectories: true)
        XCTAssertTrue(FileManager.default.createFile(atPath: mountPoint + "/hidden-file", contents: Data("x".utf8)))
        mountsToClean.append(mountPoint)
        let result = try offloadfs(["mount", mountPoint, "--backing", scratch + "/a.img", "--size", "64M"])
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertEqual(result.output, "")
        XCTAssertEqual(result.error, "offloadfs: warning: mount point \(mountPoint) is not empty (2 entries); "
                       + "they are hidden until it is unmounted\n")
        pidsToClean.append(try XCTUnwrap(daemonPID(mountPoint: mountPoint)))
        XCTAssertEqual(try Shell.run("ls -A", in: mountPoint).output, "", "the mount hides them")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: mountPoint + "/hidden-file"), "and they come back")
    }

    /// Two mounts on one mount point at once: the check at the start and the kernel mount
    /// are seconds apart when the image takes long to open (a test knob makes it 6 s
    /// here), and the second mount, made meanwhile, had the first stacked on top of it.
    /// The first now checks again before it mounts, and refuses.
    func testAMountMadeWhileTheImageOpensIsNotMountedOver() throws {
        let mountPoint = scratch + "/m"
        try requireFuse()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        let slow = Process()
        slow.executableURL = URL(fileURLWithPath: DaemonBinary.path!)
        slow.arguments = ["mount", mountPoint, "--backing", scratch + "/slow.img", "--size", "64M", "--format", "2"]
        slow.environment = ProcessInfo.processInfo.environment.merging(
            ["OFFLOADFS_TEST_SLOW_PHASE": "making a format 2 image:6"]) { $1 }
        let errors = Pipe()
        slow.standardError = errors
        try slow.run()
        defer { if slow.isRunning { kill(slow.processIdentifier, SIGKILL); slow.waitUntilExit() } }
        // Its image is made once the mount point was checked: the slow phase has begun.
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: scratch + "/slow.img") && Date() < deadline { usleep(20_000) }
        try mountInBackground(mountPoint, image: scratch + "/quick.img")
        slow.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(slow.terminationStatus, 1, message)
        XCTAssertTrue(message.contains("mount point \(mountPoint) became a mount (fuse.offloadfs from \(scratch!)/quick.img)"),
                      message)
        XCTAssertEqual(mountCount(mountPoint), 1, "not stacked")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
    }
}
