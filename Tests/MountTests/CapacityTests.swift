import Foundation
import XCTest

/// `--size` is honoured and kept, seen through `df` on real mounts: the capacity is what
/// was asked even when the image file is longer (its growth reserve), a later mount
/// without `--size` keeps it, `--size` changes it (growing always, shrinking while the
/// data fits, otherwise a one-line refusal that leaves the image untouched), and `info`
/// reports it. An image never given `--size` follows its filesystem's free space.
final class CapacityTests: XCTestCase {
    private var root: String!
    private var daemon: DaemonUnderTest?
    private var mountPoint: String { root + "/mnt" }
    private var image: String { root + "/image.bin" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard DaemonBinary.path != nil else {
            throw MountTestError("the offloadfs binary was not found next to the test bundle")
        }
        guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
            if MountFixture.isCI { throw MountTestError("/dev/fuse is missing under CI") }
            throw XCTSkip("/dev/fuse is missing")
        }
        root = try makeTemporaryDirectory()
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
    }

    override func tearDown() {
        if let daemon { for problem in daemon.stop() { XCTFail(problem) } }
        daemon = nil
        if let root {
            DaemonUnderTest.forceUnmount(mountPoint)
            try? FileManager.default.removeItem(atPath: root)
        }
        super.tearDown()
    }

    func testSizeIsHonouredKeptAndChanged() throws {
        try mount(["--size", "64M"])
        XCTAssertEqual(try dfKilobytes(), 65536)
        try run("head -c 8388608 /dev/urandom > eight && sha256sum eight > ../eight.sha256")
        try unmount()
        let length = try fileLength()
        print("[capacity] image file after 8 MiB under --size 64M: \(length) bytes")
        XCTAssertGreaterThan(length, 9 << 20, "the file is longer than the data (its growth reserve)")

        // Smaller than the file, larger than what it holds: df shows exactly what was asked.
        try mount(["--size", "10M"])
        XCTAssertEqual(try dfKilobytes(), 10240, "--size 10M on a \(length)-byte image")
        try run("sha256sum -c --quiet ../eight.sha256")
        try unmount()
        try mount([])
        XCTAssertEqual(try dfKilobytes(), 10240, "a mount without --size keeps the capacity")
        try unmount()
        let info = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(info.output.contains("capacity bytes: 10485760\n"), info.transcript)
        XCTAssertTrue(info.output.contains("capacity set by: --size"), info.transcript)

        // Too small for the 8 MiB it holds: refused in one line, the image untouched.
        let before = try FileSnapshot(image)
        let refused = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: root + "/refused.log")
        guard case .exited(let result) = try refused.start(arguments: ["--size", "4M"]) else {
            refused.stop()
            return XCTFail("--size 4M under 8 MiB of data mounted")
        }
        print("[capacity] --size 4M: \(result.summary): \(result.error)")
        XCTAssertEqual(result.status, 1, result.transcript)
        XCTAssertEqual(result.errorLines.count, 1, result.transcript)
        XCTAssertTrue(result.error.contains("--size 4M is too small for image \(image)"), result.transcript)
        XCTAssertTrue(result.error.contains("use --size 9M or more"), result.transcript)
        XCTAssertEqual(try FileSnapshot(image), before, "a refused capacity writes nothing")

        // Growing, and kept again.
        try mount(["--size", "32M"])
        XCTAssertEqual(try dfKilobytes(), 32768)
        try unmount()
        try mount([])
        XCTAssertEqual(try dfKilobytes(), 32768)
        try unmount()

        // Never given --size: the default follows the free space, and info says so.
        try FileManager.default.removeItem(atPath: image)
        try mount([])
        let host = try BoundedRun.shell("df -k --output=avail \(root!) | tail -1", timeout: 10)
        let hostKilobytes = Int(host.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThanOrEqual(try dfKilobytes() + 8192, hostKilobytes, "about the host's free space")
        try unmount()
        let fresh = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(fresh.output.contains("capacity set by: default"), fresh.transcript)
    }

    // MARK: Helpers

    private func mount(_ arguments: [String]) throws {
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: root + "/daemon-\(UUID()).log")
        guard case .mounted = try daemon.start(arguments: arguments + ["--log-level", "warning"]) else {
            throw MountTestError("offloadfs mount \(arguments) did not mount: \(daemon.log)")
        }
        self.daemon = daemon
    }

    private func unmount() throws {
        let problems = daemon?.stop() ?? []
        daemon = nil
        guard problems.isEmpty else { throw MountTestError("\(problems)") }
    }

    /// The mount's total size as `df` shows it, in KiB.
    private func dfKilobytes() throws -> Int {
        let df = try BoundedRun.shell("df -k --output=size \(mountPoint) | tail -1", timeout: 10)
        guard df.succeeded, let size = Int(df.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw MountTestError("df: \(df.transcript)")
        }
        return size
    }

    private func run(_ script: String) throws {
        let result = try BoundedRun.shell(script, in: mountPoint, timeout: 60)
        guard result.succeeded else { throw MountTestError("\(script): \(result.transcript)") }
    }

    private func fileLength() throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int) ?? -1
    }
}
