import Foundation
import XCTest

/// Throws unless the offloadfs binary and /dev/fuse exist: XCTSkip for a missing
/// /dev/fuse, a failure under CI=true (where a mount test must never be skipped).
func requireMountPrerequisites() throws {
    guard DaemonBinary.path != nil else {
        throw MountTestError("the offloadfs binary was not found next to the test bundle")
    }
    guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
        if MountFixture.isCI { throw MountTestError("/dev/fuse is missing under CI") }
        throw XCTSkip("/dev/fuse is missing")
    }
}

/// A test case that runs its own `offloadfs mount --foreground` daemons, the way a person
/// mounts an image again and again: a fresh temporary directory `root` with a mount point
/// `root/mnt`; every daemon still running is unmounted (and must exit 0) in tearDown,
/// which then removes the directory.
class DaemonTestCase: XCTestCase {
    var root: String!
    var mountPoint: String { root + "/mnt" }
    /// Daemons started by `mount` and not yet stopped.
    var daemons: [DaemonUnderTest] = []

    override func setUpWithError() throws {
        try super.setUpWithError()
        try requireMountPrerequisites()
        root = try makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for daemon in daemons { for problem in daemon.stop() { XCTFail(problem) } }
        daemons = []
        if let root {
            DaemonUnderTest.forceUnmount(mountPoint)
            try? FileManager.default.removeItem(atPath: root)
        }
        super.tearDown()
    }

    /// Mounts `image` at the mount point with `arguments` (log level warning); throws
    /// unless it mounts.
    func mount(_ image: String, _ arguments: [String]) throws {
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: root + "/daemon-\(UUID()).log")
        guard case .mounted = try daemon.start(arguments: arguments + ["--log-level", "warning"]) else {
            throw MountTestError("offloadfs mount \(image) \(arguments) did not mount: \(daemon.log)")
        }
        daemons.append(daemon)
    }

    /// A mount of `image` with `arguments` that must be refused: its result (nil, with a
    /// failure, if it mounted).
    func refusedMount(_ image: String, _ arguments: [String]) throws -> BoundedResult? {
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: root + "/refused-\(UUID()).log")
        guard case .exited(let result) = try daemon.start(arguments: arguments) else {
            daemon.stop()
            XCTFail("offloadfs mount \(image) \(arguments) mounted, but had to be refused")
            return nil
        }
        return result
    }

    /// Unmounts every daemon (fusermount3 -u); throws unless each exited 0.
    func unmountAll() throws {
        var problems: [String] = []
        for daemon in daemons { problems += daemon.stop() }
        daemons = []
        guard problems.isEmpty else { throw MountTestError("\(problems)") }
    }

    /// Runs `script` with /bin/sh in the mount point; throws unless it exits 0.
    func run(_ script: String) throws {
        let result = try BoundedRun.shell(script, in: mountPoint, timeout: 120)
        guard result.succeeded else { throw MountTestError("\(script): \(result.transcript)") }
    }
}
