import Foundation
import XCTest

/// A test case that runs `offloadfs` commands as a person types them, in a fresh scratch
/// directory, and cleans up every mount and daemon it made outside a MountFixture (also
/// when the test failed).
class CommandLineTestCase: XCTestCase {
    var scratch: String!
    /// Mounts and daemons a test made outside a MountFixture, cleaned up in tearDown.
    var mountsToClean: [String] = []
    var pidsToClean: [Int32] = []

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard DaemonBinary.path != nil else {
            throw MountTestError("the offloadfs binary was not found next to the test bundle")
        }
        scratch = try makeTemporaryDirectory()
    }

    override func tearDown() {
        for mount in mountsToClean where MountTable.isMounted(mount) {
            _ = try? Shell.runProgram("/usr/bin/env", ["fusermount3", "-u", mount])
            if MountTable.isMounted(mount) { _ = try? Shell.runProgram("/usr/bin/env", ["fusermount3", "-uz", mount]) }
        }
        for pid in pidsToClean {
            let deadline = Date().addingTimeInterval(10)
            while processExists(pid) && !isZombie(pid) && Date() < deadline { usleep(10_000) }
            if processExists(pid) && !isZombie(pid) {
                XCTFail("daemon \(pid) still running after unmount; killing it")
                kill(pid, SIGKILL)
            }
        }
        if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        super.tearDown()
    }

    func offloadfs(_ arguments: [String], in directory: String? = nil,
                   environment: [String: String] = [:]) throws -> ShellResult {
        try Shell.runProgram(DaemonBinary.path!, arguments, in: directory, environment: environment)
    }

    /// A failed command must say why in exactly one line on stderr, print nothing on
    /// stdout, exit non-zero, and never show a crash.
    func assertOneLineError(_ result: ShellResult, containing text: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(result.status, 0, result.transcript, file: file, line: line)
        XCTAssertEqual(result.output, "", result.transcript, file: file, line: line)
        let lines = result.error.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 2, "exactly one line (plus its newline): \(result.transcript)", file: file, line: line)
        XCTAssertTrue(result.error.hasPrefix("offloadfs: "), result.transcript, file: file, line: line)
        XCTAssertTrue(result.error.contains(text), "expected '\(text)': \(result.transcript)", file: file, line: line)
        XCTAssertFalse(result.error.contains("Fatal error"), result.transcript, file: file, line: line)
    }

    func requireFuse() throws {
        if !FileManager.default.fileExists(atPath: "/dev/fuse") {
            if MountFixture.isCI { throw MountTestError("/dev/fuse is missing under CI") }
            throw XCTSkip("/dev/fuse is missing")
        }
    }

    /// Mounts `image` on `mountPoint` in the background with `offloadfs mount` (the
    /// directory is made first), registers both for cleanup and returns the daemon's PID.
    @discardableResult
    func mountInBackground(_ mountPoint: String, image: String, extra: [String] = ["--size", "64M"],
                           file: StaticString = #filePath, line: UInt = #line) throws -> Int32 {
        try requireFuse()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        mountsToClean.append(mountPoint)
        let result = try offloadfs(["mount", mountPoint, "--backing", image] + extra)
        guard result.succeeded else {
            throw MountTestError("offloadfs mount \(mountPoint) failed: \(result.transcript)")
        }
        let pid = try XCTUnwrap(daemonPID(mountPoint: mountPoint), "the background daemon is running",
                                file: file, line: line)
        pidsToClean.append(pid)
        return pid
    }

    /// The PID of the daemon serving `mountPoint`, found by its command line (other than
    /// `excluding`, a previous daemon that may still be on its way out).
    func daemonPID(mountPoint: String, excluding: Int32? = nil) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry), pid != excluding,
                  let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if arguments.count > 2, arguments[1] == "mount", arguments[2] == mountPoint,
               arguments.contains("--foreground") {
                return pid
            }
        }
        return nil
    }

    func waitForExit(_ pid: Int32) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while processExists(pid) && !isZombie(pid) && Date() < deadline { usleep(10_000) }
        return !processExists(pid) || isZombie(pid)
    }

    func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// How many entries /proc/mounts has for `path` (stacked mounts count each).
    func mountCount(_ path: String) -> Int {
        guard let table = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return 0 }
        return table.split(separator: "\n").filter { $0.split(separator: " ").dropFirst().first == Substring(path) }.count
    }
}
