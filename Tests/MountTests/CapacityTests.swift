import Foundation
import XCTest

/// `--size` is honoured and kept, seen through `df` on real mounts: the capacity is what
/// was asked even when the image file is longer (its growth reserve), a later mount
/// without `--size` keeps it, `--size` changes it (growing always, shrinking while the
/// data fits, otherwise a one-line refusal that leaves the image untouched), and `info`
/// reports it. An image never given `--size` follows its filesystem's free space.
final class CapacityTests: DaemonTestCase {
    private var image: String { root + "/image.bin" }

    func testSizeIsHonouredKeptAndChanged() throws {
        try mount(image, ["--size", "64M"])
        XCTAssertEqual(try dfKilobytes(), 65536)
        try run("head -c 8388608 /dev/urandom > eight && sha256sum eight > ../eight.sha256")
        try unmountAll()
        let length = (try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int) ?? -1
        print("[capacity] image file after 8 MiB under --size 64M: \(length) bytes")
        XCTAssertGreaterThan(length, 9 << 20, "the file is longer than the data (its growth reserve)")

        // Smaller than the file, larger than what it holds: df shows exactly what was asked.
        try mount(image, ["--size", "10M"])
        XCTAssertEqual(try dfKilobytes(), 10240, "--size 10M on a \(length)-byte image")
        try run("sha256sum -c --quiet ../eight.sha256")
        try unmountAll()
        try mount(image, [])
        XCTAssertEqual(try dfKilobytes(), 10240, "a mount without --size keeps the capacity")
        try unmountAll()
        let info = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(info.output.contains("capacity bytes: 10485760\n"), info.transcript)
        XCTAssertTrue(info.output.contains("capacity set by: --size"), info.transcript)

        // Too small for the 8 MiB it holds: refused in one line, the image untouched.
        let before = try FileSnapshot(image)
        if let result = try refusedMount(image, ["--size", "4M"]) {
            print("[capacity] --size 4M: \(result.summary): \(result.error)")
            XCTAssertEqual(result.status, 1, result.transcript)
            XCTAssertEqual(result.errorLines.count, 1, result.transcript)
            XCTAssertTrue(result.error.contains("--size 4M is too small for image \(image)"), result.transcript)
            XCTAssertTrue(result.error.contains("use --size 9M or more"), result.transcript)
        }
        XCTAssertEqual(try FileSnapshot(image), before, "a refused capacity writes nothing")

        // Growing, and kept again.
        try mount(image, ["--size", "32M"])
        XCTAssertEqual(try dfKilobytes(), 32768)
        try unmountAll()
        try mount(image, [])
        XCTAssertEqual(try dfKilobytes(), 32768)
        try unmountAll()

        // Never given --size: the default follows the free space, and info says so.
        try FileManager.default.removeItem(atPath: image)
        try mount(image, [])
        let host = try BoundedRun.shell("df -k --output=avail \(root!) | tail -1", timeout: 10)
        let hostKilobytes = Int(host.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThanOrEqual(try dfKilobytes() + 8192, hostKilobytes, "about the host's free space")
        try unmountAll()
        let fresh = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(fresh.output.contains("capacity set by: default"), fresh.transcript)
    }

    /// The mount's total size as `df` shows it, in KiB.
    private func dfKilobytes() throws -> Int {
        let df = try BoundedRun.shell("df -k --output=size \(mountPoint) | tail -1", timeout: 10)
        guard df.succeeded, let size = Int(df.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw MountTestError("df: \(df.transcript)")
        }
        return size
    }
}

/// An image never given `--size` follows, at each mount, the free space of the filesystem
/// holding it plus its own disk use: after another program took half of that filesystem
/// the next mount shows a smaller capacity, after it gave the space back the larger one
/// again, and `info` says the capacity is the default. Run on both formats (scripts/test's
/// format 1 pass); on format 2 it failed while the image kept the capacity it was made
/// with.
final class DefaultCapacityTests: ScratchDiskDaemonTestCase {
    override class var scratchMegabytes: Int { 64 }

    func testADefaultCapacityFollowsTheHostsFreeSpaceAtEachMount() throws {
        let scratch = try XCTUnwrap(scratch)
        let mountPoint = scratch.root + "/mnt", image = scratch.path + "/image.bin"
        /// Mounts without --size, runs `script` in the mount, and returns df's size in MiB.
        func mounted(_ script: String) throws -> Int {
            let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: scratch.root + "/daemon.log")
            guard case .mounted = try daemon.start(arguments: ["--log-level", "warning"]) else {
                throw MountTestError("did not mount: \(daemon.log)")
            }
            self.daemon = daemon
            let result = try BoundedRun.shell(script + " && df -k --output=size . | tail -1", in: mountPoint, timeout: 60)
            for problem in daemon.stop() { XCTFail(problem) }
            self.daemon = nil
            guard result.succeeded, let kilobytes = Int(result.output.split(separator: "\n").last?
                .trimmingCharacters(in: .whitespaces) ?? "") else { throw MountTestError(result.transcript) }
            return kilobytes / 1024
        }
        let first = try mounted("head -c 4194304 /dev/urandom > four && sha256sum four > ../four.sha256")
        XCTAssertGreaterThan(first, 56, "about the 64 MiB disk")
        // Another program takes 32 MiB of the disk.
        let filler = try BoundedRun.shell("head -c 33554432 /dev/zero > \(scratch.path)/filler", timeout: 60)
        XCTAssertTrue(filler.succeeded, filler.transcript)
        let crowded = try mounted("sha256sum -c --quiet ../four.sha256")
        XCTAssertLessThan(crowded, first - 24, "the capacity follows the free space down")
        XCTAssertGreaterThan(crowded, 16)
        XCTAssertEqual(unlink(scratch.path + "/filler"), 0)
        let freed = try mounted("sha256sum -c --quiet ../four.sha256")
        XCTAssertGreaterThan(freed, first - 4, "and up again")
        print("[capacity] default: \(first) MiB, \(crowded) MiB with 32 MiB of the disk taken, \(freed) MiB after")
        let info = try BoundedRun.offloadfs(["info", image], timeout: 30)
        XCTAssertTrue(info.output.contains("capacity set by: default"), info.transcript)
        let fsck = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(fsck.status, 0, fsck.transcript)
    }
}
