import Foundation
import OffloadCore
import OffloadFuzzing
import OffloadSimulation
import XCTest

/// A mount that refuses changes it would accept were it well says so where a person
/// looks: the background `mount` prints the warning the log has, and `offloadfs status`
/// shows the mount read-only and its problem (the table, lines and Prometheus metrics).
/// Before, the warning went only to the log, and status showed `serving` like any mount.
final class MountHealthTests: CommandLineTestCase {
    /// An image with no room left for a commit (made by repairing a fuzzer's input whose
    /// extents take nearly every block) is served read-only.
    func testAnImageWithoutRoomForACommitIsServedReadOnlyAndSaysSo() throws {
        let image = scratch + "/full.img", mountPoint = scratch + "/m"
        try Self.imageWithoutRoomForACommit().write(to: URL(fileURLWithPath: image))
        try requireFuse()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        let mount = try offloadfs(["mount", mountPoint, "--backing", image])
        if let pid = daemonPID(mountPoint: mountPoint) { pidsToClean.append(pid) }
        XCTAssertEqual(mount.status, 0, mount.transcript)
        XCTAssertEqual(mount.output, "", mount.transcript)
        XCTAssertTrue(mount.error.hasPrefix("offloadfs: warning: the image has no room left for a commit"), mount.transcript)
        XCTAssertTrue(mount.error.contains("larger --size"), mount.transcript)
        XCTAssertEqual(mount.error.split(separator: "\n").count, 1, mount.transcript)
        let table = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
        let line = table.split(separator: "\n").last { $0.split(separator: " ").dropFirst().first == Substring(mountPoint) }
        XCTAssertTrue(line?.split(separator: " ")[3].split(separator: ",").contains("ro") ?? false, "mounted read-only: \(line ?? "")")

        let status = try offloadfs(["status", mountPoint])
        XCTAssertEqual(status.status, 0, status.transcript)
        XCTAssertTrue(status.output.contains("\nread only: yes\n"), status.transcript)
        XCTAssertTrue(status.output.contains("\nproblem: served read-only: the image has no room left for a commit"),
                      status.transcript)
        let metrics = try offloadfs(["status", "--prometheus", mountPoint])
        XCTAssertTrue(metrics.output.contains("offloadfs_problem{mountpoint=\"\(mountPoint)\",image=\"\(image)\"} 1"),
                      metrics.transcript)
        XCTAssertTrue(metrics.output.contains("offloadfs_read_only{mountpoint=\"\(mountPoint)\",image=\"\(image)\"} 1"),
                      metrics.transcript)
        let unmount = try offloadfs(["unmount", mountPoint])
        XCTAssertEqual(unmount.status, 0, unmount.transcript)
    }

    /// A journal that cannot be written (here the image cut short under the daemon, so
    /// the frame's page faults) fails every later change with EIO until the next mount;
    /// status says so instead of `serving` and `problem: -`.
    func testAFailedJournalShowsInStatus() throws {
        let image = scratch + "/a.img", mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: image, extra: ["--size", "64M", "--format", "2"])
        XCTAssertTrue(try Shell.run("echo hello > f && sync", in: mountPoint).succeeded)
        let well = try offloadfs(["status", mountPoint])
        XCTAssertTrue(well.output.contains("\nread only: no\nproblem: -\n"), well.transcript)

        var info = stat()
        XCTAssertEqual(stat(image, &info), 0)
        // A write through a descriptor opened before (no lookup, which may fail first
        // reading a node) journals its bytes, and the frame's page faults. Then the image
        // gets its length back, so that the daemon's reads fault no more (the bytes are gone).
        let write = try Shell.run("""
            exec 3>> f
            truncate -s 8192 '\(image)'
            echo more >&3
            echo "write $?"
            truncate -s \(info.st_size) '\(image)'
            """, in: mountPoint)
        XCTAssertTrue(write.output.contains("write 1"), write.transcript)
        XCTAssertTrue(write.error.contains("I/O error") || write.error.contains("Input/output error"), write.transcript)

        let failed = try offloadfs(["status", mountPoint])
        XCTAssertTrue(failed.output.contains("\nproblem: changes are refused until the image is mounted again: "),
                      failed.transcript)
        XCTAssertTrue(processExists(pid), "the daemon serves on")
        // The final commit cannot be written either: unmount says so, and why (format 2
        // records no reason in the image; the stopping daemon's status socket gives it:
        // it said "nor why: was it killed?").
        let unmount = try offloadfs(["unmount", mountPoint])
        XCTAssertFalse(MountTable.isMounted(mountPoint), unmount.transcript)
        XCTAssertEqual(unmount.status, 1, unmount.transcript)
        XCTAssertTrue(unmount.error.contains("while writing the final commit of \(image)"), unmount.transcript)
        XCTAssertFalse(unmount.error.contains("nor why"), unmount.transcript)
    }

    /// A fuzzer's input (Tests/FuzzRegressions) repaired as `fsck --repair` would: its
    /// extents leave no room for the commit a mount opens with, and its capacity is kept.
    static func imageWithoutRoomForACommit() throws -> Data {
        let input = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzRegressions/format2-repaired-image-without-room-for-a-commit")
        let image = FuzzInput.image(from: [UInt8](try Data(contentsOf: input)))
        let report = try VolumeRepair.run(image)
        XCTAssertTrue(report.repaired)
        return Data(image.bytes)
    }
}
