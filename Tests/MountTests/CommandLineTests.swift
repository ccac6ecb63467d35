import Foundation
import FuseBridge
import XCTest

/// The CLI as a user meets it: help, version, the one-line errors, background mounting,
/// unmounting, and signals.
final class CommandLineTests: CommandLineTestCase {
    // MARK: Help and version

    func testHelpListsSubcommandsAndOptions() throws {
        let top = try offloadfs(["--help"])
        XCTAssertEqual(top.status, 0, top.transcript)
        XCTAssertTrue(top.output.contains("USAGE: offloadfs <subcommand>"), top.output)
        for subcommand in ["mount ", "unmount, umount ", "status ", "fsck ", "info "] {
            XCTAssertTrue(top.output.contains("  \(subcommand)"), "--help must list \(subcommand):\n\(top.output)")
        }
        let unmount = try offloadfs(["unmount", "--help"])
        XCTAssertTrue(unmount.output.contains("--lazy"), "unmount --help must document --lazy:\n\(unmount.output)")
        let mount = try offloadfs(["mount", "--help"])
        XCTAssertEqual(mount.status, 0, mount.transcript)
        for option in ["--backing", "--foreground", "--fresh", "--writeback-cache", "--memory-limit", "--size", "-o",
                       "--log-level", "--clear-dead-mount"] {
            XCTAssertTrue(mount.output.contains(option), "mount --help must document \(option):\n\(mount.output)")
        }
        XCTAssertFalse(mount.output.contains("--ready-fd"), "the internal readiness option stays hidden")
    }

    // MARK: One-line errors

    func testMissingMountPoint() throws {
        let result = try offloadfs(["mount", scratch + "/absent", "--backing", scratch + "/img"])
        assertOneLineError(result, containing: "does not exist")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch + "/img"), "no image is created on failure")
    }

    func testMountPointIsNotADirectory() throws {
        _ = FileManager.default.createFile(atPath: scratch + "/file", contents: Data("x".utf8))
        assertOneLineError(try offloadfs(["mount", scratch + "/file", "--backing", scratch + "/img"]),
                           containing: "is not a directory")
        assertOneLineError(try offloadfs(["mount", scratch + "/file", "--backing", scratch + "/img", "--foreground"]),
                           containing: "is not a directory")
    }

    func testImageInMissingDirectory() throws {
        try FileManager.default.createDirectory(atPath: scratch + "/mnt", withIntermediateDirectories: true)
        assertOneLineError(try offloadfs(["mount", scratch + "/mnt", "--backing", scratch + "/no/such/dir/img"]),
                           containing: "does not exist")
    }

    func testUnknownMountOptionFailsWithOneLine() throws {
        try requireFuse()
        try FileManager.default.createDirectory(atPath: scratch + "/mnt", withIntermediateDirectories: true)
        mountsToClean.append(scratch + "/mnt")
        let result = try offloadfs(["mount", scratch + "/mnt", "--backing", scratch + "/img", "--size", "64M",
                                    "-o", "no_such_option"])
        assertOneLineError(result, containing: "no_such_option")
        XCTAssertFalse(MountTable.isMounted(scratch + "/mnt"))
        // In the foreground too, with the default log level: still one line, no log lines.
        let foreground = try offloadfs(["mount", scratch + "/mnt", "--backing", scratch + "/img", "--size", "64M",
                                        "--foreground", "-o", "no_such_option"])
        assertOneLineError(foreground, containing: "no_such_option")
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch + "/img"),
                       "a failed mount removes the image it created")
    }

    func testInvalidSizeIsRejected() throws {
        let result = try offloadfs(["mount", scratch, "--backing", scratch + "/img", "--size", "12Q"])
        XCTAssertNotEqual(result.status, 0, result.transcript)
        XCTAssertTrue(result.error.contains("--size"), result.transcript)
        XCTAssertFalse(result.error.contains("Fatal error"), result.transcript)
    }

    func testUnmountOfSomethingNotMounted() throws {
        assertOneLineError(try offloadfs(["unmount", scratch]), containing: "is not mounted")
    }

    func testImageAlreadyInUse() throws {
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        try fixture.start(arguments: ["--size", "64M"])
        try FileManager.default.createDirectory(atPath: scratch + "/second", withIntermediateDirectories: true)
        mountsToClean.append(scratch + "/second")
        let result = try offloadfs(["mount", scratch + "/second", "--backing", fixture.image, "--size", "64M"])
        assertOneLineError(result, containing: "in use")
        // Who holds it: a detached daemon or a running fsck are not in the mount table.
        XCTAssertTrue(result.error.contains("(held by pid \(fixture.pid!): "), result.transcript)
        for command in [["fsck", fixture.image], ["fsck", "--repair", fixture.image]] {
            let busy = try offloadfs(command)
            assertOneLineError(busy, containing: "(held by pid \(fixture.pid!): ")
        }
    }

    // MARK: Background mounting, unmount, signals

    func testBackgroundMountIsLiveWhenCommandReturns() throws {
        try requireFuse()
        let mountPoint = scratch + "/bg", image = scratch + "/bg.img"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        let result = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "256M", "--memory-limit", "1M"])
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertEqual(result.output + result.error, "", "a successful background mount prints nothing")
        XCTAssertTrue(MountTable.isMounted(mountPoint), "the mount must be live when the command returns")
        XCTAssertEqual(MountTable.type(of: mountPoint), "fuse.offloadfs")
        let pid = try XCTUnwrap(daemonPID(mountPoint: mountPoint), "the background daemon is running")
        pidsToClean.append(pid)
        // Named as the command is (`ps -C offloadfs`, `pgrep -x`), not `exe`: it runs again
        // through /proc/self/exe.
        XCTAssertEqual(try String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8), "offloadfs\n")
        let use = try Shell.run("echo hello > f && cat f && df -P -k . | tail -1", in: mountPoint)
        XCTAssertTrue(use.succeeded, use.transcript)
        XCTAssertTrue(use.output.hasPrefix("hello\n\(image) "), use.output)

        let unmount = try offloadfs(["unmount", mountPoint])
        XCTAssertEqual(unmount.status, 0, unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "unmount removes the mount")
        XCTAssertTrue(waitForExit(pid), "the daemon exits after unmount")
    }

    /// `offloadfs unmount` returns only once the daemon has let go of the image, so the
    /// same image mounts again right away, with what the previous mount wrote.
    func testUnmountThenMountTheSameImageAgainRightAway() throws {
        try requireFuse()
        let mountPoint = scratch + "/again", image = scratch + "/again.img"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        var previous: Int32?
        for round in 1...3 {
            let mount = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "256M"])
            XCTAssertEqual(mount.status, 0, "round \(round): \(mount.transcript)")
            XCTAssertEqual(mount.output + mount.error, "", "round \(round)")
            XCTAssertTrue(MountTable.isMounted(mountPoint), "round \(round)")
            let pid = try XCTUnwrap(daemonPID(mountPoint: mountPoint, excluding: previous), "round \(round)")
            pidsToClean.append(pid)
            let listing = try Shell.run("cat d/f 2>/dev/null || echo none", in: mountPoint)
            XCTAssertTrue(listing.succeeded, listing.transcript)
            XCTAssertEqual(listing.output, round == 1 ? "none\n" : "round\(round - 1)\n",
                           "round \(round): the image keeps what the previous mount wrote")
            let use = try Shell.run("mkdir -p d && echo round\(round) > d/f && cat d/f", in: mountPoint)
            XCTAssertEqual(use.output, "round\(round)\n", use.transcript)

            let unmount = try offloadfs(["unmount", mountPoint])
            XCTAssertEqual(unmount.status, 0, "round \(round): \(unmount.transcript)")
            XCTAssertEqual(unmount.output + unmount.error, "", "round \(round)")
            XCTAssertFalse(MountTable.isMounted(mountPoint), "round \(round)")
            previous = pid
        }
        XCTAssertTrue(waitForExit(previous!), "the last daemon exits after unmount")
    }

    /// A file that is not an offloadfs image is never taken over: one error line, no
    /// mount, and not one byte of the file changed (background and foreground, with
    /// `--fresh` or without).
    func testForeignFileAsImageIsRefusedAndLeftUntouched() throws {
        try requireFuse()
        let mountPoint = scratch + "/mnt", image = scratch + "/picture.png"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        // A PNG signature and IHDR chunk, then arbitrary bytes past the first block.
        var bytes: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A,
                              0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
                              0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x08, 0x06, 0x00, 0x00, 0x00]
        bytes += (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let original = Data(bytes)
        XCTAssertTrue(FileManager.default.createFile(atPath: image, contents: original))
        let before = try FileManager.default.attributesOfItem(atPath: image)[.modificationDate] as? Date
        // `--fresh` too (it made a format 2 image over any file, an ext4 image included).
        for extra in [[], ["--foreground"], ["--fresh"], ["--fresh", "--foreground"]] {
            let result = try offloadfs(["mount", mountPoint, "--backing", image, "--size", "64M"] + extra)
            assertOneLineError(result, containing: "not an offloadfs image")
            XCTAssertFalse(MountTable.isMounted(mountPoint), "\(extra)")
            XCTAssertEqual(FileManager.default.contents(atPath: image), original, "the file is unchanged \(extra)")
        }
        let after = try FileManager.default.attributesOfItem(atPath: image)[.modificationDate] as? Date
        XCTAssertEqual(before, after, "the file's mtime is unchanged")
    }

    /// A FIFO named as the image is refused at once by every command (fsck, info and a
    /// read-only mount waited for ever for a writer: their open for reading blocked).
    func testAFifoAsImageIsRefusedAtOnce() throws {
        try requireFuse()
        let mountPoint = scratch + "/mnt", fifo = scratch + "/fifo"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let binary = try XCTUnwrap(DaemonBinary.path)
        for command in ["fsck '\(fifo)'", "info '\(fifo)'", "mount '\(mountPoint)' --backing '\(fifo)' -o ro",
                        "mount '\(mountPoint)' --backing '\(fifo)' -o ro --foreground"] {
            let result = try Shell.run("timeout 20 '\(binary)' \(command)", in: scratch)
            XCTAssertNotEqual(result.status, 124, "\(command) waited: \(result.transcript)")
            XCTAssertNotEqual(result.status, 0, result.transcript)
            XCTAssertTrue(result.error.contains("not a regular file"), "\(command): \(result.transcript)")
            XCTAssertFalse(MountTable.isMounted(mountPoint), command)
        }
    }

    func testSigtermUnmountsCleanly() throws { try checkSignalUnmounts(SIGTERM) }
    func testSigintUnmountsCleanly() throws { try checkSignalUnmounts(SIGINT) }

    private func checkSignalUnmounts(_ signal: Int32) throws {
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        try fixture.start(arguments: ["--size", "64M"])
        XCTAssertTrue(try fixture.sh("echo x > f && cat f").succeeded)
        let pid = try XCTUnwrap(fixture.pid)
        XCTAssertEqual(kill(pid, signal), 0)
        fixture.daemon?.waitUntilExit()
        XCTAssertEqual(fixture.daemon?.terminationReason, .exit, "the daemon exits normally on signal \(signal)")
        XCTAssertEqual(fixture.daemon?.terminationStatus, 0, fixture.daemonLog)
        XCTAssertFalse(MountTable.isMounted(fixture.mountPoint), "signal \(signal) unmounts")
    }

    func testWritesPastSizeGetENOSPC() throws {
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        try fixture.start(arguments: ["--size", "16M", "--memory-limit", "0"])
        let result = try fixture.sh("dd if=/dev/zero of=big bs=1M count=64 conv=fsync status=none")
        XCTAssertNotEqual(result.status, 0, "writing 64 MiB into a 16 MiB filesystem must fail")
        XCTAssertTrue(result.error.contains("No space left on device"), result.transcript)
        XCTAssertTrue(try fixture.sh("rm big && echo fits > small && cat small").succeeded, "space comes back after rm")
    }

    func testReadOnlyOptionIsPassedThrough() throws {
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        // A read-only mount needs an existing image (it writes nothing, so it creates none).
        try fixture.start(arguments: ["--size", "64M"])
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        try fixture.start(arguments: ["-o", "ro"], skipIfCannotMount: false)
        let result = try fixture.sh("touch f")
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.error.contains("Read-only file system"), result.transcript)
        let options = try String(contentsOfFile: "/proc/mounts", encoding: .utf8).split(separator: "\n")
            .first { $0.split(separator: " ").dropFirst().first.map(String.init) == fixture.mountPoint }
        XCTAssertTrue(options?.contains(" ro,") == true, "mounted read-only: \(options ?? "")")
        XCTAssertTrue(options?.contains("default_permissions") == true, "\(options ?? "")")
        XCTAssertFalse(options?.contains("allow_other") == true, "allow_other only when asked for")
    }
}
