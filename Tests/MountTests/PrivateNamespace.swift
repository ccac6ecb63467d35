import Foundation
import XCTest

/// Runs a shell script in a private mount namespace (`unshare --mount --propagation
/// private`), so that it may bind-mount the offloadfs binary just built where mount(8),
/// mount.fuse3 and umount(8) look for their helpers (/sbin, the shell's default PATH),
/// without touching what the machine has installed. Mounts made inside stay inside.
///
/// The script gets `$BIN` (the offloadfs binary) and `$ROOT` (a fresh directory), runs
/// with `set -eu`, and records each step with `step NAME COMMAND...`: its exit status,
/// stdout and stderr go to `$ROOT/steps/NAME.{status,out,err}`. Daemons the script
/// started and left running are killed by PID afterwards and reported.
struct PrivateNamespace {
    let root: String
    let binary: String

    struct Step {
        var status: Int32?
        var output: String
        var error: String
        var transcript: String { "status \(status.map(String.init) ?? "none")\n--- stdout ---\n\(output)\n--- stderr ---\n\(error)" }
    }

    static let preamble = """
        set -eu
        mkdir -p "$ROOT/steps"
        step() {
            name=$1; shift
            set +e
            "$@" > "$ROOT/steps/$name.out" 2> "$ROOT/steps/$name.err"
            echo $? > "$ROOT/steps/$name.status"
            set -e
        }
        # offloadfs on mount.fuse3's shell's default PATH, and the mount(8)/umount(8)
        # helper names in /sbin, all pointing at the binary under test.
        mkdir -p "$ROOT/local-sbin" "$ROOT/helpers"
        ln -s "$BIN" "$ROOT/local-sbin/offloadfs"
        ln -s "$BIN" "$ROOT/helpers/mount.offloadfs"
        ln -s "$BIN" "$ROOT/helpers/umount.fuse.offloadfs"
        mount --bind "$ROOT/local-sbin" /usr/local/sbin
        mount -t overlay overlay -o "lowerdir=$ROOT/helpers:/usr/sbin" /usr/sbin

        """

    func run(_ script: String, timeout: TimeInterval = 120) throws -> BoundedResult {
        let scriptPath = root + "/script.sh"
        try (Self.preamble + script).write(toFile: scriptPath, atomically: true, encoding: .utf8)
        return try BoundedRun.program("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", scriptPath],
                                      environment: ["BIN": binary, "ROOT": root], timeout: timeout)
    }

    func step(_ name: String) -> Step {
        func read(_ suffix: String) -> String {
            (try? String(contentsOfFile: "\(root)/steps/\(name).\(suffix)", encoding: .utf8)) ?? ""
        }
        return Step(status: Int32(read("status").trimmingCharacters(in: .whitespacesAndNewlines)),
                    output: read("out"), error: read("err"))
    }

    /// Kills (by PID) any process still running with `root` in its command line (a
    /// daemon the script left behind), and says which.
    func killLeftovers() -> [String] {
        var problems: [String] = []
        for pid in processes(mentioning: root) {
            problems.append("process \(pid) was still running: \(commandLine(of: pid))")
            kill(pid, SIGKILL)
        }
        return problems
    }

    /// Waits up to `timeout` for processes mentioning `root` to end; true if none is left.
    func waitForLeftovers(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !processes(mentioning: root).isEmpty && Date() < deadline { usleep(20_000) }
        return processes(mentioning: root).isEmpty
    }

    private func processes(mentioning text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            pid != getpid() && commandLine(of: pid).contains(text) && !isZombie(pid)
        }
    }

    private func commandLine(of pid: Int32) -> String {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
    }

    private func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}

/// Throws XCTSkip (or, under CI, an error) when there is no /dev/fuse to mount with.
func requireFuseDevice() throws {
    guard FileManager.default.fileExists(atPath: "/dev/fuse") else {
        if MountFixture.isCI { throw MountTestError("/dev/fuse is missing under CI") }
        throw XCTSkip("/dev/fuse is missing")
    }
}

/// A test case whose tests each run one script in a fresh `PrivateNamespace`, then check
/// its steps; daemons the script left running fail the test and are killed.
class PrivateNamespaceTestCase: XCTestCase {
    var namespace: PrivateNamespace!

    override func setUpWithError() throws {
        try super.setUpWithError()
        try requireFuseDevice()
        namespace = PrivateNamespace(root: try makeTemporaryDirectory(),
                                     binary: try XCTUnwrap(DaemonBinary.path, "the offloadfs binary"))
    }

    override func tearDown() {
        if let namespace {
            // Daemons exit once their mount is gone (the scripts unmount on exit).
            if !namespace.waitForLeftovers(timeout: 15) {
                for problem in namespace.killLeftovers() { XCTFail(problem) }
            }
            try? FileManager.default.removeItem(atPath: namespace.root)
        }
        super.tearDown()
    }

    /// Step `name` of the last script, asserted to have ended with `status`.
    func check(_ name: String, status expected: Int32 = 0, file: StaticString = #filePath,
               line: UInt = #line) -> PrivateNamespace.Step {
        let step = namespace.step(name)
        XCTAssertEqual(step.status, expected, "\(name): \(step.transcript)", file: file, line: line)
        return step
    }
}
