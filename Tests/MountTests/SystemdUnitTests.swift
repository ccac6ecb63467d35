import Foundation
import XCTest

/// systemd/: the template unit and the example mount/automount units are valid, the
/// hardening the unit asks for leaves a working mount, and the README shows them.
final class SystemdUnitTests: XCTestCase {
    private var scratch: String!

    override func setUpWithError() throws {
        try super.setUpWithError()
        scratch = try makeTemporaryDirectory()
    }

    override func tearDown() {
        if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        super.tearDown()
    }

    private var unitPath: String { PackageLayout.root + "/systemd/offloadfs@.service" }

    /// `systemd-analyze verify` checks that ExecStart's program exists, and the unit names
    /// /usr/local/bin/offloadfs (where scripts/install puts it, rewritten for another
    /// PREFIX): verify a copy that names the binary just built, as an instance
    /// (offloadfs@mnt-x), next to the examples.
    func testUnitsPassSystemdAnalyzeVerify() throws {
        let binary = try XCTUnwrap(DaemonBinary.path)
        let unit = try String(contentsOfFile: unitPath, encoding: .utf8)
        XCTAssertTrue(unit.contains("ExecStart=/usr/local/bin/offloadfs mount %f --backing ${IMAGE} --foreground $OPTIONS"), unit)
        try unit.replacingOccurrences(of: "/usr/local/bin/offloadfs", with: binary)
            .write(toFile: scratch + "/offloadfs@mnt-x.service", atomically: true, encoding: .utf8)
        var files = [scratch + "/offloadfs@mnt-x.service"]
        for example in try FileManager.default.contentsOfDirectory(atPath: PackageLayout.root + "/systemd/examples").sorted() {
            try FileManager.default.copyItem(atPath: PackageLayout.root + "/systemd/examples/" + example,
                                             toPath: scratch + "/" + example)
            files.append(scratch + "/" + example)
        }
        XCTAssertEqual(files.count, 3, "the unit, a .mount and an .automount: \(files)")
        let verify = try BoundedRun.program("/usr/bin/systemd-analyze", ["verify", "--man=no"] + files, timeout: 60)
        XCTAssertEqual(verify.status, 0, verify.transcript)
        XCTAssertEqual(verify.output + verify.error, "", "no warnings: \(verify.transcript)")

        // And the check can fail: an unknown key is reported.
        try (unit.replacingOccurrences(of: "/usr/local/bin/offloadfs", with: binary) + "\n[Service]\nNoSuchSetting=1\n")
            .write(toFile: scratch + "/offloadfs@bad.service", atomically: true, encoding: .utf8)
        let bad = try BoundedRun.program("/usr/bin/systemd-analyze", ["verify", "--man=no", scratch + "/offloadfs@bad.service"],
                                         timeout: 60)
        XCTAssertTrue(bad.error.contains("NoSuchSetting"), bad.transcript)
    }

    /// The unit's CapabilityBoundingSet and NoNewPrivileges, applied by setpriv as systemd
    /// would apply them: the daemon mounts, serves and unmounts with only those.
    func testDaemonWorksWithTheUnitsCapabilitiesAndNoNewPrivileges() throws {
        try requireFuseDevice()
        let unit = try String(contentsOfFile: unitPath, encoding: .utf8)
        XCTAssertTrue(unit.contains("\nNoNewPrivileges=yes\n"))
        let line = try XCTUnwrap(unit.split(separator: "\n").first { $0.hasPrefix("CapabilityBoundingSet=") })
        let capabilities = line.dropFirst("CapabilityBoundingSet=".count).split(separator: " ")
            .map { $0.lowercased().replacingOccurrences(of: "cap_", with: "") }
        XCTAssertFalse(capabilities.isEmpty)
        let mountPoint = scratch + "/mnt", image = scratch + "/image.bin"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        defer { DaemonUnderTest.forceUnmount(mountPoint) }
        let mount = try BoundedRun.program("/usr/bin/setpriv", [
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all," + capabilities.map { "+" + $0 }.joined(separator: ","),
            try XCTUnwrap(DaemonBinary.path), "mount", mountPoint, "--backing", image, "--size", "64M",
        ], timeout: 60)
        XCTAssertTrue(mount.succeeded, mount.transcript)
        let use = try Shell.run("echo x > f && cat f", in: mountPoint)
        XCTAssertEqual(use.output, "x\n", use.transcript)
        let status = try BoundedRun.offloadfs(["status", "--json", mountPoint], timeout: 30)
        let pid = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any])?["pid"] as? Int,
                                status.transcript)
        let proc = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        XCTAssertTrue(proc.contains("NoNewPrivs:\t1"), "the daemon runs with no_new_privs")
        let effective = try XCTUnwrap(proc.split(separator: "\n").first { $0.hasPrefix("CapEff:") })
        let bits = UInt64(effective.split(separator: "\t").last ?? "", radix: 16) ?? .max
        let numbers = ["dac_override": 1, "dac_read_search": 2, "sys_admin": 21]
        let expected = capabilities.reduce(UInt64(0)) { $0 | (1 << UInt64(numbers[$1] ?? 63)) }
        XCTAssertEqual(bits, expected, "only the unit's capabilities: \(effective)")
        let unmount = try BoundedRun.offloadfs(["unmount", mountPoint], timeout: 60)
        XCTAssertTrue(unmount.succeeded, unmount.transcript)
    }

    func testReadmeShowsTheUnitTheFstabLineAndStatus() throws {
        let readme = try String(contentsOfFile: PackageLayout.root + "/README.md", encoding: .utf8)
        for text in ["## Run at boot", "systemctl enable --now offloadfs@", "/etc/offloadfs/", "fuse.offloadfs",
                     "x-systemd.automount", "## Status", "offloadfs status", "--prometheus", "user_allow_other"] {
            XCTAssertTrue(readme.contains(text), "README mentions \(text)")
        }
        for example in try FileManager.default.contentsOfDirectory(atPath: PackageLayout.root + "/systemd/examples") {
            let body = try String(contentsOfFile: PackageLayout.root + "/systemd/examples/" + example, encoding: .utf8)
            let directives = body.split(separator: "\n").filter { !$0.hasPrefix("#") && $0.contains("=") }
            for directive in directives {
                XCTAssertTrue(readme.contains(directive), "README shows \(example)'s \(directive)")
            }
        }
    }
}
