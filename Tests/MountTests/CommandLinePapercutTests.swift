import Foundation
import FuseBridge
import XCTest

/// The command-line edges of issue 9, item 9 that are not about unmounting (those are in
/// UnmountCommandTests): the version, a symlinked image, `info` on a mounted image, and
/// an image file deleted while mounted.
final class CommandLinePapercutTests: CommandLineTestCase {
    /// `--version` names the commit the binary was built from. scripts/test (and so CI,
    /// and scripts/install) pass it to the build in OFFLOADFS_GIT_COMMIT; a build without
    /// it says the commit is unknown rather than print the same line for every build.
    func testVersionNamesTheCommit() throws {
        let result = try offloadfs(["--version"])
        XCTAssertEqual(result.status, 0, result.transcript)
        let given = ProcessInfo.processInfo.environment["OFFLOADFS_GIT_COMMIT"] ?? ""
        if given.isEmpty {
            XCTAssertFalse(MountFixture.isCI, "CI builds through scripts/test, which sets OFFLOADFS_GIT_COMMIT")
            XCTAssertEqual(result.output, "offloadfs \(ProductVersion.string) (commit unknown)\n")
            return
        }
        XCTAssertEqual(result.output, "offloadfs \(ProductVersion.string) (commit \(given))\n")
        let head = try Shell.run("git -C \(PackageLayout.root) rev-parse --short=12 HEAD")
        if head.succeeded {
            XCTAssertTrue(given.hasPrefix(head.output.trimmingCharacters(in: .whitespacesAndNewlines)),
                          "the commit given to the build is the checkout's HEAD: \(given) vs \(head.output)")
        }
    }

    /// A `--size` too small for a new image says so, and that no image was made (it said
    /// the image "holds 0 bytes" and "was not changed": the admin hunt of the thirty-fifth
    /// session).
    func testASizeTooSmallForANewImageSaysNoImageWasMade() throws {
        let image = scratch + "/new.img", mountPoint = scratch + "/m"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let result = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "1"])
        if MountTestFormat.isTwo {
            assertOneLineError(result, containing: "--size 1 is too small for a new image \(image): its metadata needs ")
            XCTAssertTrue(result.error.contains("(no image was made)"), result.transcript)
        } else {
            // Format 1 refuses a capacity below one block before it sizes the metadata.
            assertOneLineError(result, containing: "capacity 1 is smaller than one block")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: image))
        XCTAssertFalse(MountTable.isMounted(mountPoint))
    }

    /// An image path with `.` or `..` in it is named by its directory's real path: the mount
    /// shows it so, and the unmount, after the directory the path went through is gone, no
    /// longer takes the image for one moved while mounted (the admin hunt of the
    /// thirty-fifth session: "note: the image ... was moved while mounted, from
    /// .../sub/../rel.img to .../rel.img").
    func testAnImagePathWithDotsIsNamedByItsRealPath() throws {
        let real = try XCTUnwrap(realpath(scratch, nil).map { pointer in defer { free(pointer) }; return String(cString: pointer) }) + "/rel.img", mountPoint = scratch + "/m"
        try FileManager.default.createDirectory(atPath: scratch + "/sub", withIntermediateDirectories: true)
        let pid = try mountInBackground(mountPoint, image: scratch + "/sub/.././rel.img")
        let table = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        XCTAssertTrue(table.contains("\(real) \(mountPoint) fuse.offloadfs"), "the mount names the real path:\n\(table)")
        XCTAssertEqual(rmdir(scratch + "/sub"), 0)
        let unmount = try offloadfs(["unmount", mountPoint])
        XCTAssertEqual(unmount.status, 0, unmount.transcript)
        XCTAssertEqual(unmount.error, "", unmount.transcript)
        XCTAssertTrue(waitForExit(pid))
    }

    /// A symlinked image is followed, as every tool does: the mount shows (and locks) the
    /// real file, and fsck and info read it through the link too. A dangling link is
    /// refused (it may point at a disk that is not mounted; no image is made elsewhere).
    func testSymlinkedImageIsFollowed() throws {
        let real = scratch + "/real.img", link = scratch + "/link.img", mountPoint = scratch + "/m"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "real.img")
        XCTAssertTrue(FileManager.default.createFile(atPath: real, contents: nil), "an empty file: a new image")
        let pid = try mountInBackground(mountPoint, image: link)
        XCTAssertTrue(try Shell.run("echo through-the-link > f", in: mountPoint).succeeded)
        let table = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
        XCTAssertTrue(table.contains("\(real) \(mountPoint) fuse.offloadfs"), "the mount names the real image:\n\(table)")
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
        XCTAssertTrue(waitForExit(pid))
        XCTAssertEqual(try offloadfs(["fsck", link]).status, 0, "fsck follows the link")
        XCTAssertEqual(try offloadfs(["info", link]).status, 0, "info follows the link")
        XCTAssertTrue(FileManager.default.fileExists(atPath: real))

        try FileManager.default.createSymbolicLink(atPath: scratch + "/dangling.img", withDestinationPath: "gone/x.img")
        let dangling = try offloadfs(["mount", mountPoint, "--backing", scratch + "/dangling.img", "--size", "64M"])
        assertOneLineError(dangling, containing: "image \(scratch!)/dangling.img is a symbolic link to gone/x.img, "
                           + "which does not exist (to start a new image there, create it first")
        XCTAssertFalse(MountTable.isMounted(mountPoint))
    }

    /// `info` on a mounted image shows where it is mounted and the live figures (statfs
    /// of the mount, the image file's size) instead of refusing.
    func testInfoOfAMountedImageShowsLiveFigures() throws {
        let image = scratch + "/a.img", mountPoint = scratch + "/m"
        try mountInBackground(mountPoint, image: image, extra: ["--size", "64M"])
        XCTAssertTrue(try Shell.run("mkdir d && head -c 1M /dev/urandom > d/f && sync", in: mountPoint).succeeded)
        let result = try offloadfs(["info", image])
        XCTAssertEqual(result.status, 0, result.transcript)
        var values: [String: String] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            XCTAssertEqual(parts.count, 2, "not `key: value`: \(line)")
            values[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        XCTAssertEqual(values["mounted at"], mountPoint, result.output)
        XCTAssertEqual(values["capacity bytes"], "\(64 << 20)", result.output)
        XCTAssertEqual(values["inodes"], "3", "root, d and d/f: \(result.output)")
        let used = try XCTUnwrap(values["used bytes"].flatMap { UInt64($0) }, result.output)
        XCTAssertGreaterThanOrEqual(used, 1 << 20, result.output)
        let free = try XCTUnwrap(values["free bytes"].flatMap { UInt64($0) }, result.output)
        let df = try Shell.run("df -B1 --output=avail . | tail -1", in: mountPoint)
        XCTAssertEqual(free, UInt64(df.output.trimmingCharacters(in: .whitespacesAndNewlines)), "as df says")
        XCTAssertEqual(values["format version"], "\(MountTestFormat.number)", result.output)
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
    }

    /// `info` looked for the image's mount by stat-ing every offloadfs mount's image, and
    /// statfs of its mount point: behind a mount whose daemon is stopped (here the mount
    /// holding another mount's image) it hung for ever. Both give up after 2 s now: `info`
    /// of an image at rest reports it, and of the stopped mount's own image says the
    /// mount did not answer.
    func testInfoDoesNotHangBehindAStoppedMount() throws {
        let outer = scratch + "/m1", inner = scratch + "/m2", rest = scratch + "/rest.img"
        try mountInBackground(inner, image: rest)
        XCTAssertEqual(try offloadfs(["unmount", inner]).status, 0)
        let outerPID = try mountInBackground(outer, image: scratch + "/a.img")
        try mountInBackground(inner, image: outer + "/b.img")
        kill(outerPID, SIGSTOP)
        var stopped = true
        defer { if stopped { kill(outerPID, SIGCONT) } }

        let atRest = try BoundedRun.program(DaemonBinary.path!, ["info", rest], timeout: 30)
        XCTAssertEqual(atRest.ending, .exited(0), atRest.transcript)
        XCTAssertTrue(atRest.output.contains("cleanly unmounted: yes"), atRest.transcript)
        let own = try BoundedRun.program(DaemonBinary.path!, ["info", scratch + "/a.img"], timeout: 30)
        XCTAssertEqual(own.ending, .exited(0), own.transcript)
        XCTAssertTrue(own.output.contains("mounted at: \(outer)"), own.transcript)
        XCTAssertTrue(own.output.contains("the mount did not answer statfs within 2 s"), own.transcript)

        kill(outerPID, SIGCONT)
        stopped = false
        XCTAssertEqual(try offloadfs(["unmount", inner]).status, 0)
        XCTAssertEqual(try offloadfs(["unmount", outer]).status, 0)
    }

    /// Deleting the image file while mounted loses everything at unmount: the daemon logs
    /// it as an error when it notices (at its maintenance tick) and at unmount, `status`
    /// shows it as the mount's problem, and `offloadfs unmount` leaves the mount mounted
    /// with the command that saves the image (it went ahead and lost every file before,
    /// the hunt of the thirty-fifth session found). The saved copy mounts with the file;
    /// `--discard-deleted-image` then unmounts.
    func testDeletedImageIsReportedLoudly() throws {
        let fixture = try MountFixture()
        var stopped = false
        defer { if !stopped { fixture.stop() } }
        try fixture.start(arguments: ["--size", "64M"], environment: ["OFFLOADFS_MAINTENANCE_INTERVAL": "0.05"])
        XCTAssertTrue(try fixture.sh("echo doomed > f").succeeded)
        XCTAssertEqual(unlink(fixture.image), 0)
        let deadline = Date().addingTimeInterval(10)
        while !fixture.daemonLog.contains("was deleted while mounted") && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(fixture.daemonLog.contains("error"), fixture.daemonLog)
        XCTAssertTrue(fixture.daemonLog.contains("the image file \(fixture.image) was deleted while mounted"),
                      fixture.daemonLog)
        XCTAssertTrue(fixture.daemonLog.contains("cp --sparse=always /proc/\(fixture.pid!)/fd/"), fixture.daemonLog)

        let status = try offloadfs(["status", fixture.mountPoint])
        XCTAssertTrue(status.output.contains("its image \(fixture.image) was deleted while mounted"), status.transcript)
        let refused = try offloadfs(["unmount", fixture.mountPoint])
        assertOneLineError(refused, containing: "\(fixture.mountPoint) is not unmounted: its image \(fixture.image) was "
                           + "deleted while mounted")
        XCTAssertTrue(MountTable.isMounted(fixture.mountPoint))
        // The command the refusal gives saves it.
        let saved = fixture.image + ".saved"
        let start = try XCTUnwrap(refused.error.range(of: "cp --sparse=always /proc/\(fixture.pid!)/fd/"), refused.transcript)
        let end = try XCTUnwrap(refused.error.range(of: " \(saved),", range: start.upperBound..<refused.error.endIndex),
                                refused.transcript)
        let command = String(refused.error[start.lowerBound..<end.upperBound].dropLast())
        XCTAssertTrue(try Shell.run(command).succeeded, command)
        // Out of the fixture's folder, which its stop removes: as the image of another.
        let again = try MountFixture()
        defer { again.stop() }
        XCTAssertEqual(rename(saved, again.image), 0)

        let unmount = try offloadfs(["unmount", "--discard-deleted-image", fixture.mountPoint])
        XCTAssertEqual(unmount.status, 0, unmount.transcript)
        XCTAssertTrue(unmount.error.contains("deleted while mounted, went with it"), unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(fixture.mountPoint))
        fixture.daemon?.waitUntilExit()
        XCTAssertEqual(fixture.daemon?.terminationStatus, 1, "the daemon ends in failure: \(fixture.daemonLog)")
        XCTAssertTrue(fixture.daemonLog.contains("the last checkpoint went to the deleted image"), fixture.daemonLog)
        stopped = true
        _ = fixture.stop()
        // The saved copy checks clean and mounts, as after a crash, with the file.
        let check = try offloadfs(["fsck", again.image])
        XCTAssertEqual(check.status, 0, check.transcript)
        try again.start(arguments: ["--size", "64M"])
        XCTAssertEqual(try again.sh("cat f").output, "doomed\n")
    }

    /// An image renamed while mounted (`mv`) is not lost: the daemon writes its last commit
    /// to the file it holds, under its new name. `offloadfs unmount` used to report it
    /// deleted ("the files it held are gone") and exit 1; it names the new path now (the
    /// daemon's descriptor on the file it locks), waits for that file's release and exits 0.
    func testAMovedImageIsFollowedToItsNewName() throws {
        let fixture = try MountFixture()
        var stopped = false
        defer { if !stopped { fixture.stop() } }
        try fixture.start(arguments: ["--size", "64M"])
        XCTAssertTrue(try fixture.sh("echo kept > f").succeeded)
        let moved = fixture.image + ".moved"
        XCTAssertEqual(rename(fixture.image, moved), 0)

        let unmount = try offloadfs(["unmount", fixture.mountPoint])
        XCTAssertEqual(unmount.status, 0, unmount.transcript)
        XCTAssertEqual(unmount.error, "offloadfs: note: the image of \(fixture.mountPoint) was moved while mounted, from "
                       + "\(fixture.image) to \(moved); the daemon wrote it there\n", unmount.transcript)
        fixture.daemon?.waitUntilExit()
        XCTAssertEqual(fixture.daemon?.terminationStatus, 0, fixture.daemonLog)
        let info = try offloadfs(["info", moved])
        XCTAssertTrue(info.output.contains("cleanly unmounted: yes"), info.transcript)
        stopped = true
        _ = fixture.stop()
    }

    /// Another file renamed over the image while mounted loses the image as a deletion
    /// does; `offloadfs unmount` says it was replaced (the path's file is not the one the
    /// daemon holds, whose lock it used to take for the daemon's), not that the daemon had
    /// died, and returns once the daemon has exited.
    func testReplacedImageIsReportedAsSuch() throws {
        let fixture = try MountFixture()
        var stopped = false
        defer { if !stopped { fixture.stop() } }
        try fixture.start(arguments: ["--size", "64M"])
        XCTAssertTrue(try fixture.sh("echo doomed > f").succeeded)
        let copy = try Shell.run("cp --sparse=always '\(fixture.image)' '\(fixture.image).new' && mv '\(fixture.image).new' '\(fixture.image)'")
        XCTAssertTrue(copy.succeeded, copy.transcript)

        let unmount = try offloadfs(["unmount", fixture.mountPoint])
        assertOneLineError(unmount, containing: "\(fixture.mountPoint) is unmounted, but its image \(fixture.image) "
                           + "was replaced while mounted")
        XCTAssertFalse(unmount.transcript.contains("killed?"), unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(fixture.mountPoint))
        let state = (try? String(contentsOfFile: "/proc/\(fixture.pid!)/stat", encoding: .utf8))
            .flatMap { $0.split(separator: ")").last?.split(separator: " ").first }
        XCTAssertTrue(state == nil || state == "Z", "the unmount returned before the daemon exited (state \(state ?? "-"))")
        fixture.daemon?.waitUntilExit()
        XCTAssertTrue(fixture.daemonLog.contains("the image file \(fixture.image) was deleted while mounted"),
                      fixture.daemonLog)
        stopped = true
        _ = fixture.stop()
    }
}
