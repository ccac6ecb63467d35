import Foundation
import XCTest

/// A small tmpfs of its own (a "disk" that can be filled up, or made read-only), mounted
/// in a fresh temporary directory for one test. Needs root; without it the test is
/// skipped, and under CI=true a tmpfs that cannot be mounted fails the test.
/// `unmount()` must run in tearDown (it also removes the directory).
final class ScratchDisk {
    /// The temporary directory: the tmpfs is mounted at `path`, and the test may put
    /// other things (mount points, reference files) next to it, on the host's disk.
    let root: String
    var path: String { root + "/disk" }
    private var mounted = false

    init(megabytes: Int) throws {
        guard geteuid() == 0 else { throw XCTSkip("mounting a tmpfs needs root") }
        root = try makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: root + "/disk", withIntermediateDirectories: true)
        let mount = try BoundedRun.program("/usr/bin/env", ["mount", "-t", "tmpfs", "-o", "size=\(megabytes)m",
                                                            "tmpfs", root + "/disk"], timeout: 30)
        guard mount.succeeded else {
            try? FileManager.default.removeItem(atPath: root)
            if MountFixture.isCI { throw MountTestError("cannot mount a tmpfs: \(mount.transcript)") }
            throw XCTSkip("cannot mount a tmpfs: \(mount.transcript)")
        }
        mounted = true
    }

    /// Makes the tmpfs read-only (or writable again): `mount -o remount,ro`.
    func remount(readOnly: Bool) throws {
        let result = try BoundedRun.program("/usr/bin/env", ["mount", "-o", "remount,\(readOnly ? "ro" : "rw")", path],
                                            timeout: 30)
        guard result.succeeded else { throw MountTestError("remount \(path): \(result.transcript)") }
    }

    /// Unmounts the tmpfs (retrying while busy, then lazily) and removes the directory;
    /// returns the problems seen.
    @discardableResult
    func unmount() -> [String] {
        var problems: [String] = []
        if mounted {
            var unmounted = false
            for _ in 0..<20 {
                let result = try? BoundedRun.program("/usr/bin/env", ["umount", path], timeout: 30)
                if result?.succeeded == true || !MountTable.isMounted(path) { unmounted = true; break }
                usleep(250_000)
            }
            if !unmounted {
                problems.append("umount \(path) kept failing; unmounting lazily")
                _ = try? BoundedRun.program("/usr/bin/env", ["umount", "-l", path], timeout: 30)
            }
            mounted = false
        }
        try? FileManager.default.removeItem(atPath: root)
        return problems
    }
}

/// A test with its image on a tmpfs of `scratchMegabytes` (`ScratchDisk`, mounted at
/// `scratch.path`; mount point `scratch.root + "/mnt"`) and at most one daemon at a time
/// (`daemon`): after each test, also a failed one, the daemon is stopped, the mount point
/// forced off and the tmpfs unmounted.
class ScratchDiskDaemonTestCase: XCTestCase {
    class var scratchMegabytes: Int { 16 }
    var scratch: ScratchDisk?
    var daemon: DaemonUnderTest?

    override func setUpWithError() throws {
        try super.setUpWithError()
        try requireMountPrerequisites()
        scratch = try ScratchDisk(megabytes: Self.scratchMegabytes)
        try FileManager.default.createDirectory(atPath: scratch!.root + "/mnt", withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let daemon { for problem in daemon.stop() { XCTFail(problem) } }
        daemon = nil
        if let scratch {
            DaemonUnderTest.forceUnmount(scratch.root + "/mnt")
            for problem in scratch.unmount() { XCTFail(problem) }
        }
        scratch = nil
        super.tearDown()
    }
}
