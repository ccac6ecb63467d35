import Foundation
import XCTest

/// `offloadfs unmount` as people type it: any spelling of the mount point that umount(8)
/// and fusermount3 -u accept, the `umount` alias, and a busy mount.
final class UnmountCommandTests: CommandLineTestCase {
    /// A trailing slash (what tab completion adds), `./m`, doubled slashes, `..` and a
    /// symlink to the mount point all name the mount (issue 9, item 1).
    func testUnmountAcceptsEverySpellingOfTheMountPoint() throws {
        let mountPoint = scratch + "/m", image = scratch + "/a.img"
        try FileManager.default.createSymbolicLink(atPath: scratch + "/link", withDestinationPath: mountPoint)
        let spellings: [(argument: String, directory: String?)] = [
            (mountPoint + "/", nil),
            ("./m", scratch),
            ("m//", scratch),
            (scratch.replacingOccurrences(of: "/", with: "//") + "//m", nil),
            (scratch + "/m/../m/.", nil),
            (scratch + "/link", nil),
        ]
        var previous: Int32?
        for (argument, directory) in spellings {
            let pid = try mountInBackground(mountPoint, image: image)
            XCTAssertNotEqual(pid, previous)
            let result = try offloadfs(["unmount", argument], in: directory)
            XCTAssertEqual(result.status, 0, "unmount \(argument): \(result.transcript)")
            XCTAssertEqual(result.output + result.error, "", "unmount \(argument)")
            XCTAssertFalse(MountTable.isMounted(mountPoint), "unmount \(argument) unmounted it")
            XCTAssertTrue(waitForExit(pid), "the daemon exits after unmount \(argument)")
            previous = pid
        }
    }

    /// After kill -9 the mount point cannot be resolved (ENOTCONN); the spelling with a
    /// trailing slash still names the dead mount, and unmount clears it.
    func testUnmountOfADeadMountWithTrailingSlash() throws {
        let mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: scratch + "/a.img")
        kill(pid, SIGKILL)
        XCTAssertTrue(waitForExit(pid))
        let result = try offloadfs(["unmount", mountPoint + "/"])
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "the dead mount is gone")
    }

    /// `offloadfs umount M` is `offloadfs unmount M`, as umount(8) spells it (item 9).
    func testUmountIsAnAliasOfUnmount() throws {
        let mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: scratch + "/a.img")
        let result = try offloadfs(["umount", mountPoint])
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint))
        XCTAssertTrue(waitForExit(pid))
    }

    /// A misspelt subcommand is named, with the closest real one, instead of an
    /// "Unknown option" about the arguments that follow it (item 9).
    func testUnknownSubcommandIsNamedWithASuggestion() throws {
        for (typed, suggestion) in [("mont", "mount"), ("unmuont", "unmount"), ("inf", "info"), ("fsk", "fsck")] {
            let result = try offloadfs([typed, scratch + "/m", "--backing", scratch + "/x"])
            XCTAssertEqual(result.status, 64, result.transcript)
            assertOneLineError(result, containing: "unknown subcommand '\(typed)'")
            XCTAssertTrue(result.error.contains("did you mean '\(suggestion)'"), result.transcript)
        }
        let unlike = try offloadfs(["frobnicate"])
        assertOneLineError(unlike, containing: "unknown subcommand 'frobnicate'")
        XCTAssertTrue(unlike.error.contains("mount, unmount, status, fsck, info"), unlike.transcript)
    }

    /// A busy mount: unmount names the tools that find the user and offers --lazy, which
    /// detaches the mount at once; the daemon exits once the last user lets go (item 9).
    func testBusyUnmountNamesFuserAndLazyDetaches() throws {
        let mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: scratch + "/a.img")
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/bin/sleep")
        holder.arguments = ["60"]
        holder.currentDirectoryURL = URL(fileURLWithPath: mountPoint)
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL); holder.waitUntilExit() } }

        let busy = try offloadfs(["unmount", mountPoint])
        assertOneLineError(busy, containing: "busy")
        XCTAssertTrue(busy.error.contains("fuser -vm \(mountPoint)"), busy.transcript)
        XCTAssertTrue(busy.error.contains("lsof"), busy.transcript)
        XCTAssertTrue(busy.error.contains("--lazy"), busy.transcript)
        XCTAssertTrue(MountTable.isMounted(mountPoint), "a busy mount stays mounted")

        let lazy = try offloadfs(["unmount", "--lazy", mountPoint])
        XCTAssertEqual(lazy.status, 0, lazy.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "--lazy detaches the mount at once")
        XCTAssertTrue(processExists(pid) && !isZombie(pid), "the daemon serves the process still inside")
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        XCTAssertTrue(waitForExit(pid), "the daemon exits once the last user is gone")
    }
}
