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
    /// trailing slash still names the dead mount, and unmount clears it, with the socket
    /// the daemon left. `status` says the daemon is gone and what clears the mount (it
    /// printed the socket's "Connection refused", and the socket stayed: the admin hunt
    /// of the thirty-fifth session).
    func testUnmountOfADeadMountWithTrailingSlash() throws {
        let mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: scratch + "/a.img")
        let device = try XCTUnwrap(MountInfoLine.device(of: mountPoint))
        let sockets = { ((try? FileManager.default.contentsOfDirectory(atPath: "/run/offloadfs")) ?? []).filter { $0.hasPrefix(device + ".") } }
        XCTAssertFalse(sockets().isEmpty, "setup: the daemon's status socket in /run/offloadfs")
        kill(pid, SIGKILL)
        XCTAssertTrue(waitForExit(pid))
        let status = try offloadfs(["status", mountPoint])
        assertOneLineError(status, containing: "its daemon is gone (killed, or it crashed)")
        XCTAssertTrue(status.error.contains("offloadfs unmount \(mountPoint) clears the mount"), status.transcript)
        // info too (a dead mount answers ENOTCONN at once: it said "did not answer within 2 s").
        let info = try offloadfs(["info", scratch + "/a.img"])
        XCTAssertTrue(info.output.contains("figures: none: the mount's daemon is gone"), info.transcript)
        let result = try offloadfs(["unmount", mountPoint + "/"])
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "the dead mount is gone")
        XCTAssertEqual(sockets(), [], "the dead daemon's socket is removed")
    }

    /// A dead mount's device may also have a socket of the daemon the device number
    /// belonged to before, still writing its final commit (stopping): `status` of the
    /// dead mount printed that other mount's status (found by a CI run beside a crash
    /// soak's unmounts). A stopping daemon of another mount point is not this mount's.
    func testADeadMountIsNotAnsweredForByAnotherMountsStoppingDaemon() throws {
        let live = scratch + "/live", dead = scratch + "/dead"
        _ = try mountInBackground(live, image: scratch + "/live.img")
        let pid = try mountInBackground(dead, image: scratch + "/dead.img")
        let liveDevice = try XCTUnwrap(MountInfoLine.device(of: live))
        let deadDevice = try XCTUnwrap(MountInfoLine.device(of: dead))
        kill(pid, SIGKILL)
        XCTAssertTrue(waitForExit(pid))
        // The live daemon's status, stopping, served on the dead mount's device by a
        // stand-in (what a daemon of the device number's previous mount binds).
        let impostor = "/run/offloadfs/\(deadDevice).999999.sock"
        let script = """
            import json, os, socket, sys
            def ask(path):
                s = socket.socket(socket.AF_UNIX); s.connect(path); s.sendall(b"status\\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk: return data
                    data += chunk
            status = json.loads(ask("/run/offloadfs/\(liveDevice).sock"))
            status["state"] = "stopping"
            server = socket.socket(socket.AF_UNIX); server.bind("\(impostor)"); server.listen(4)
            print("ready", flush=True)
            while True:
                connection, _ = server.accept(); connection.recv(64)
                connection.sendall(json.dumps(status).encode()); connection.close()
            """
        try script.write(toFile: scratch + "/impostor.py", atomically: false, encoding: .utf8)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = [scratch + "/impostor.py"]
        let ready = Pipe()
        server.standardOutput = ready
        try server.run()
        defer { server.terminate(); server.waitUntilExit(); unlink(impostor) }
        XCTAssertEqual(String(decoding: ready.fileHandleForReading.availableData, as: UTF8.self), "ready\n")

        let status = try offloadfs(["status", dead])
        assertOneLineError(status, containing: "its daemon is gone (killed, or it crashed)")
        XCTAssertTrue(status.error.contains("is served by the daemon of another mount (\(live), pid"), status.transcript)
        XCTAssertFalse(status.output.contains(live), status.transcript)
        XCTAssertEqual(try offloadfs(["unmount", dead + "/"]).status, 0)
        XCTAssertEqual(try offloadfs(["unmount", live]).status, 0)
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
        // `status` lists the detached daemon, though the mount table no longer has it.
        let status = try offloadfs(["status"])
        XCTAssertEqual(status.status, 0, status.transcript)
        XCTAssertTrue(status.output.contains("mountpoint: \(mountPoint)\nimage: \(scratch!)/a.img\n"), status.transcript)
        XCTAssertTrue(status.output.contains("state: serving (detached)\n"), status.transcript)
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        XCTAssertTrue(waitForExit(pid), "the daemon exits once the last user is gone")
    }

    /// Two read-only mounts of one image each hold a shared lock on it: unmounting one
    /// waits for its own daemon to exit, not for the image's lock the other holds (it
    /// waited the 60 s stall bound and exited 1), and the other goes on serving.
    func testUnmountingOneOfTwoReadOnlyMountsReturnsAtOnce() throws {
        let image = scratch + "/a.img", first = scratch + "/m1", second = scratch + "/m2"
        try mountInBackground(first, image: image)
        XCTAssertTrue(try Shell.run("echo kept > f", in: first).succeeded)
        XCTAssertEqual(try offloadfs(["unmount", first]).status, 0)
        let firstPID = try mountInBackground(first, image: image, extra: ["-o", "ro"])
        let secondPID = try mountInBackground(second, image: image, extra: ["-o", "ro"])
        let unmount = try BoundedRun.program(DaemonBinary.path!, ["unmount", first], timeout: 40)
        XCTAssertEqual(unmount.ending, .exited(0), unmount.transcript)
        XCTAssertLessThan(unmount.seconds, 20, unmount.transcript)
        XCTAssertEqual(unmount.output + unmount.error, "", unmount.transcript)
        XCTAssertTrue(!processExists(firstPID) || isZombie(firstPID), "its daemon had exited when unmount returned")
        XCTAssertEqual(try Shell.run("cat f", in: second).output, "kept\n", "the other mount serves on")
        XCTAssertTrue(processExists(secondPID))
        let last = try BoundedRun.program(DaemonBinary.path!, ["unmount", second], timeout: 40)
        XCTAssertEqual(last.ending, .exited(0), last.transcript)
        XCTAssertTrue(waitForExit(secondPID))
    }

    /// A stopped daemon (SIGSTOP) accepts no connection on its status socket, whose
    /// backlog the unmount's polls filled: the next connect waited for ever, and so did
    /// `offloadfs unmount`. Its connects now time out; it gives up after the stall bound
    /// and says the daemon is stopped and how to let it finish. (The backlog is filled
    /// here first, as about 40 s of polling filled it.)
    func testUnmountOfAStoppedDaemonGivesUpAndSaysItIsStopped() throws {
        let mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: scratch + "/a.img")
        let device = try XCTUnwrap(MountInfoLine.device(of: mountPoint))
        kill(pid, SIGSTOP)
        var stopped = true
        defer { if stopped { kill(pid, SIGCONT) } }
        var held = Self.fillBacklog(of: "/run/offloadfs/\(device).sock")
        defer { held.forEach { close($0) } }
        XCTAssertGreaterThan(held.count, 0, "connected to the status socket")
        let unmount = try BoundedRun.program(DaemonBinary.path!, ["unmount", mountPoint],
                                             environment: ["OFFLOADFS_STALL_SECONDS": "2"], timeout: 60)
        XCTAssertEqual(unmount.ending, .exited(1), unmount.transcript)
        XCTAssertLessThan(unmount.seconds, 30, unmount.transcript)
        XCTAssertTrue(unmount.error.contains("no progress for 2 s"), unmount.transcript)
        XCTAssertTrue(unmount.error.contains("the daemon (pid \(pid)) is stopped"), unmount.transcript)
        XCTAssertTrue(unmount.error.contains("kill -CONT \(pid)"), unmount.transcript)
        XCTAssertFalse(MountTable.isMounted(mountPoint), "the kernel mount is gone all the same")
        // Closed, so that the daemon's status thread need not wait 2 s for each to speak.
        held.forEach { close($0) }
        held = []
        kill(pid, SIGCONT)
        stopped = false
        XCTAssertTrue(waitForExit(pid), "continued, the daemon finishes and exits")
    }

    /// The kernel gives an unmounted mount's device number to the next FUSE mount while
    /// the first daemon still writes its final commit, and the next daemon binds the same
    /// socket path: the first one's exit removed the other's socket (seen as "no status
    /// socket" for a mount beside a test run). Here the path is taken over by a socket of
    /// the test's before the unmount; the daemon's exit must leave it.
    func testADaemonsExitLeavesASocketThatTookItsPath() throws {
        let mountPoint = scratch + "/m"
        let pid = try mountInBackground(mountPoint, image: scratch + "/a.img")
        let path = "/run/offloadfs/\(try XCTUnwrap(MountInfoLine.device(of: mountPoint))).sock"
        XCTAssertEqual(unlink(path), 0, "the daemon's socket is at \(path)")
        let successor = try DatagramListener(name: path)
        defer { successor.close() }
        XCTAssertEqual(try offloadfs(["unmount", mountPoint]).status, 0)
        XCTAssertTrue(waitForExit(pid))
        var status = stat()
        XCTAssertEqual(lstat(path, &status), 0, "the other socket is still there")
        unlink(path)
    }

    /// Non-blocking connects to `path` until the listener's backlog refuses one (EAGAIN);
    /// the connected descriptors, which keep it full until closed.
    private static func fillBacklog(of path: String) -> [Int32] {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + 1)
        var held: [Int32] = []
        for _ in 0..<256 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { break }
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) }
            }
            if status != 0 {
                close(fd)
                break
            }
            held.append(fd)
        }
        return held
    }
}

/// The "MAJOR:MINOR" device of the mount at a path, from /proc/self/mountinfo (which names
/// a mount's status socket).
enum MountInfoLine {
    static func device(of mountPoint: String) -> String? {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in table.split(separator: "\n").reversed() {
            let fields = line.split(separator: " ")
            if fields.count > 4, fields[4] == Substring(mountPoint) { return String(fields[2]) }
        }
        return nil
    }
}
