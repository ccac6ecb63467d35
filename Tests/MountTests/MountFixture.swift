import Foundation
import XCTest

/// One running daemon on a fresh temporary mount point and image.
///
/// `start` runs `offloadfs mount MOUNTPOINT --backing IMAGE --foreground ...` as a child
/// process (so its PID is known) and waits until /proc/mounts shows the mount. `stop`
/// always runs, from `tearDown`, also after a failed test: it unmounts with
/// `fusermount3 -u` (retrying while the mount is busy, then lazily), waits for the daemon
/// to exit, kills it by its PID only if it is still running, and reports whatever was left.
///
/// If the mount cannot be made (no /dev/fuse, no permission to mount, the daemon exits
/// early), the test fails when CI=true and is skipped otherwise.
final class MountFixture {
    let root: String
    let mountPoint: String
    let image: String
    private(set) var daemon: Process?
    private let logURL: URL

    init() throws {
        root = try makeTemporaryDirectory()
        mountPoint = root + "/mnt"
        image = root + "/image.bin"
        logURL = URL(fileURLWithPath: root + "/daemon.log")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
    }

    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Throws XCTSkip (or fails under CI) when the mount cannot be made; with
    /// `skipIfCannotMount: false` (for a remount, once a first mount has shown that mounting
    /// works here) it always throws an error instead. `start` may be called again after
    /// `stop(removingFiles: false)` or `killDaemon()`, to mount the same image again; the
    /// daemon log keeps growing across starts. `environment` is added to the daemon's.
    func start(arguments extra: [String] = ["--size", "8G"], skipIfCannotMount: Bool = true,
               environment: [String: String] = [:]) throws {
        guard daemon == nil else { throw MountTestError("start while the fixture's daemon is still running") }
        self.skipIfCannotMount = skipIfCannotMount
        guard let binary = DaemonBinary.path else {
            throw MountTestError("the offloadfs binary was not found next to the test bundle; build it "
                                 + "(swift build) or set OFFLOADFS_BINARY")
        }
        guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
            try cannotMount("/dev/fuse does not exist")
            return
        }
        if !FileManager.default.fileExists(atPath: logURL.path) {
            _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        }
        let log = try FileHandle(forWritingTo: logURL)
        defer { try? log.close() }
        _ = try log.seekToEnd()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["mount", mountPoint, "--backing", image, "--foreground", "--log-level", "warning"] + extra
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        try process.run()
        daemon = process
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if MountTable.isMounted(mountPoint) { return }
            if !process.isRunning {
                try cannotMount("the daemon exited with status \(process.terminationStatus): \(daemonLog)")
                return
            }
            usleep(10_000)
        }
        try cannotMount("the mount did not appear within 20 s: \(daemonLog)")
    }

    private var skipIfCannotMount = true

    private func cannotMount(_ reason: String) throws {
        if Self.isCI {
            throw MountTestError("cannot mount offloadfs under CI: \(reason)")
        }
        if !skipIfCannotMount {
            throw MountTestError("cannot mount offloadfs again: \(reason)")
        }
        throw XCTSkip("cannot mount offloadfs here: \(reason)")
    }

    var daemonLog: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// The daemon's PID, while it has one.
    var pid: Int32? { daemon.map { $0.processIdentifier } }

    /// Kills the daemon with SIGKILL (a crash) and waits for it to be gone. The mount point
    /// is left as a dead mount ("Transport endpoint is not connected") until
    /// `detachDeadMount()`. Only this fixture's own daemon PID is signalled.
    func killDaemon() {
        guard let daemon else { return }
        if daemon.isRunning { kill(daemon.processIdentifier, SIGKILL) }
        daemon.waitUntilExit()
        self.daemon = nil
    }

    /// Lazily unmounts a mount whose daemon is gone (`fusermount3 -u -z`, then `umount -l`).
    @discardableResult
    func detachDeadMount() -> Bool {
        if MountTable.isMounted(mountPoint) {
            _ = try? Shell.runProgram("/usr/bin/env", ["fusermount3", "-u", "-z", mountPoint])
        }
        if MountTable.isMounted(mountPoint) {
            _ = try? Shell.runProgram("/usr/bin/env", ["umount", "-l", mountPoint])
        }
        return !MountTable.isMounted(mountPoint)
    }

    /// Unmounts and ends the daemon; returns problems found (empty when all was clean).
    /// With `removingFiles: false` the image and the mount point stay, for a remount.
    @discardableResult
    func stop(removingFiles: Bool = true) -> [String] {
        var problems: [String] = []
        if MountTable.isMounted(mountPoint) {
            var unmounted = false
            for _ in 0..<50 {
                let result = try? Shell.runProgram("/usr/bin/env", ["fusermount3", "-u", mountPoint])
                if result?.succeeded == true || !MountTable.isMounted(mountPoint) { unmounted = true; break }
                usleep(100_000)  // EBUSY while a just-closed file is still being released
            }
            if !unmounted {
                problems.append("fusermount3 -u kept failing; unmounting lazily")
                _ = try? Shell.runProgram("/usr/bin/env", ["fusermount3", "-uz", mountPoint])
            }
        }
        if let daemon {
            problems += reapDaemon(daemon, timeout: 15, log: { self.daemonLog })
            if processExists(daemon.processIdentifier) {
                problems.append("the daemon's pid \(daemon.processIdentifier) still exists")
            }
        }
        if MountTable.isMounted(mountPoint) {
            problems.append("\(mountPoint) is still in /proc/mounts")
        }
        daemon = nil
        if removingFiles {
            // A dead mount (daemon killed) would make removal fail with ENOTCONN.
            detachDeadMount()
            try? FileManager.default.removeItem(atPath: root)
        }
        return problems
    }

    /// Runs a shell script in the mount point.
    func sh(_ script: String, file: StaticString = #filePath, line: UInt = #line) throws -> ShellResult {
        try Shell.run(script, in: mountPoint)
    }
}

/// A fresh directory under $TMPDIR (or /tmp) via mkdtemp(3).
func makeTemporaryDirectory() throws -> String {
    let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    var template = Array((base + "/offloadfs-test.XXXXXX").utf8CString)
    guard let result = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw MountTestError("mkdtemp in \(base): \(String(cString: strerror(errno)))")
    }
    return String(cString: result)
}

func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}

/// /proc/mounts, as the kernel sees it right now.
enum MountTable {
    static func isMounted(_ path: String) -> Bool {
        guard let table = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return false }
        let escaped = path.replacingOccurrences(of: " ", with: "\\040")
        return table.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 2 && fields[1] == escaped
        }
    }

    static func type(of path: String) -> String? {
        guard let table = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return nil }
        let rows: [[Substring]] = table.split(separator: "\n").map { $0.split(separator: " ") }
        guard let row = rows.last(where: { $0.count > 2 && $0[1] == path }) else { return nil }
        return String(row[2])
    }
}

/// A test case with a fresh mount for every test method.
class MountedTestCase: XCTestCase {
    var fixture: MountFixture!

    /// Extra arguments for `offloadfs mount` (a subclass may override).
    var mountArguments: [String] { ["--size", "8G"] }
    /// Extra environment for the daemon (test knobs; a subclass may override).
    var mountEnvironment: [String: String] { [:] }

    override func setUpWithError() throws {
        try super.setUpWithError()
        fixture = try MountFixture()
        do {
            try fixture.start(arguments: mountArguments, environment: mountEnvironment)
        } catch {
            fixture.stop()
            fixture = nil
            throw error
        }
    }

    override func tearDown() {
        if let fixture {
            for problem in fixture.stop() { XCTFail(problem) }
        }
        fixture = nil
        super.tearDown()
    }

    var mountPoint: String { fixture.mountPoint }

    /// Runs `script` in the mount point and fails the test (with the transcript) unless it
    /// exits 0; returns stdout.
    @discardableResult
    func sh(_ script: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try fixture.sh(script)
        XCTAssertTrue(result.succeeded, "\(script)\n\(result.transcript)", file: file, line: line)
        if !result.succeeded { throw MountTestError("script failed: \(script)") }
        return result.output
    }
}

/// Waits up to `timeout` seconds for a daemon that was told to stop (unmounted), kills it
/// by its PID if it is still running, and reports an unclean end (`log` adds its log).
func reapDaemon(_ process: Process, timeout: TimeInterval, log: () -> String) -> [String] {
    var problems: [String] = []
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(5_000) }
    if process.isRunning {
        problems.append("the daemon (pid \(process.processIdentifier)) did not exit after unmount; killed")
        kill(process.processIdentifier, SIGKILL)
    }
    process.waitUntilExit()
    if process.terminationReason != .exit || process.terminationStatus != 0 {
        problems.append("the daemon ended with \(process.terminationReason == .exit ? "status" : "signal") "
                        + "\(process.terminationStatus): \(log())")
    }
    return problems
}
