import Foundation
import XCTest

/// kill -9 of the daemon in the middle of a random journaled workload, then fsck, remount
/// and check that every durable state survived (scripts/crash-workload has the rules).
///
/// One image serves every iteration (the first mount is --fresh), so recovery after
/// recovery is exercised; a canary directory written in the first iteration must survive
/// all of them. OFFLOADFS_CRASH_ITERATIONS=N sets the number of iterations (default 4);
/// scripts/crash-soak runs the same loop for long runs outside XCTest.
final class CrashRecoveryTests: XCTestCase {
    static var iterations: Int {
        ProcessInfo.processInfo.environment["OFFLOADFS_CRASH_ITERATIONS"].flatMap { Int($0) }.map { max(1, $0) } ?? 4
    }

    private var fixture: MountFixture!
    private var workload: Process?

    override func setUpWithError() throws {
        try super.setUpWithError()
        guard FileManager.default.isExecutableFile(atPath: PackageLayout.crashWorkload) else {
            throw MountTestError("\(PackageLayout.crashWorkload) is missing or not executable")
        }
        fixture = try MountFixture()
    }

    override func tearDown() {
        stopWorkload()
        if let fixture {
            // Unmounts a live daemon cleanly; a dead mount left by a failed iteration is detached.
            for problem in fixture.stop() { XCTFail(problem) }
        }
        fixture = nil
        super.tearDown()
    }

    /// Kills the workload by its PID (if it is still running) and reaps it.
    private func stopWorkload() {
        guard let workload else { return }
        if workload.isRunning { kill(workload.processIdentifier, SIGKILL) }
        workload.waitUntilExit()
        self.workload = nil
    }

    private func startWorkload(seed: Int, journal: String, log: String) throws -> Process {
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: PackageLayout.crashWorkload)
        process.arguments = ["--dir", fixture.mountPoint + "/work", "--seed", "\(seed)", "--journal", journal]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return process
    }

    private func contents(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// The checker must be able to fail: its self-test corrupts, truncates, removes and adds
    /// files in a finished workload's tree, here on the mount, and expects a failure each time.
    func testCheckerCatchesDamageOnTheMount() throws {
        try fixture.start(arguments: ["--size", "8G"])
        let result = try Shell.runProgram(PackageLayout.crashWorkload, ["selftest", "--dir", fixture.mountPoint + "/selftest"])
        XCTAssertEqual(result.status, 0, result.transcript)
        XCTAssertTrue(result.output.contains("selftest: passed"), result.transcript)
        XCTAssertEqual(try fixture.sh("ls -A selftest").output, "", "the self-test removes its trees")
    }

    func testKillNineDuringWorkloadRecovers() throws {
        let binary = try XCTUnwrap(DaemonBinary.path)
        // A first plain mount shows whether mounting works here at all (skip otherwise);
        // from then on a mount that fails is a test failure.
        try fixture.start(arguments: ["--size", "8G"])
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }

        let canarySums = fixture.root + "/canary.sha256"
        var durableRecords = 0
        for seed in 1...Self.iterations {
            let context = "iteration \(seed) of \(Self.iterations)"
            // Even iterations: the daemon checkpoints whenever 16 KiB of journal pile up and
            // syncs every 50 ms (test knobs, inherited by the daemon), so the kill is likely
            // to land in the middle of a checkpoint.
            if seed % 2 == 0 {
                setenv("OFFLOADFS_MAINTENANCE_INTERVAL", "0.05", 1)
                setenv("OFFLOADFS_CHECKPOINT_AFTER", "16384", 1)
            }
            defer {
                unsetenv("OFFLOADFS_MAINTENANCE_INTERVAL")
                unsetenv("OFFLOADFS_CHECKPOINT_AFTER")
            }
            try fixture.start(arguments: ["--size", "8G"] + (seed == 1 ? ["--fresh"] : []), skipIfCannotMount: false)
            if seed == 1 {
                let canary = try fixture.sh("""
                    set -e
                    test -z "$(ls -A)"
                    mkdir canary && head -c 300K /dev/urandom > canary/big && echo small > canary/small
                    ln -s small canary/link && setfattr -n user.canary -v yes canary/small
                    sha256sum canary/big canary/small > '\(canarySums)'
                    sync
                    """)
                XCTAssertTrue(canary.succeeded, "\(context): \(canary.transcript)")
            }

            let journal = fixture.root + "/journal-\(seed)", log = fixture.root + "/workload-\(seed).log"
            workload = try startWorkload(seed: seed, journal: journal, log: log)
            let seconds = 0.3 + 1.7 * seededFraction(UInt64(seed))
            usleep(UInt32(seconds * 1_000_000))
            let stillRunning = workload?.isRunning == true
            XCTAssertTrue(stillRunning, "\(context): the workload stopped before the crash:\n\(contents(log))")

            let daemonAlive = fixture.daemon?.isRunning == true
            XCTAssertTrue(daemonAlive, "\(context): the daemon died during the workload:\n\(fixture.daemonLog)")

            // The crash: kill -9 the daemon (by its PID), then the workload; detach the dead mount.
            fixture.killDaemon()
            stopWorkload()
            XCTAssertTrue(fixture.detachDeadMount(), "\(context): the dead mount does not detach")
            durableRecords += contents(journal).components(separatedBy: "\"t\":\"done\"").count - 1
            if !stillRunning || !daemonAlive { throw MountTestError("\(context): the workload or the daemon failed on its own") }

            let fsck = try Shell.runProgram(binary, ["fsck", fixture.image])
            XCTAssertEqual(fsck.status, 0, "\(context): fsck after kill -9 (seed \(seed), \(seconds) s):\n\(fsck.transcript)")

            try fixture.start(arguments: ["--size", "8G"], skipIfCannotMount: false)
            let canary = try fixture.sh("sha256sum -c --quiet '\(canarySums)' && readlink canary/link && getfattr -n user.canary --only-values canary/small")
            XCTAssertEqual(canary.output, "small\nyes", "\(context): the canary from iteration 1:\n\(canary.transcript)")
            let check = try Shell.runProgram(PackageLayout.crashWorkload,
                                             ["check", "--dir", fixture.mountPoint + "/work", "--journal", journal])
            XCTAssertEqual(check.status, 0, "\(context): crash-workload check (seed \(seed), killed after \(seconds) s):\n"
                           + check.transcript)
            XCTAssertFalse(FileManager.default.fileExists(atPath: fixture.mountPoint + "/work"),
                           "\(context): the checked tree is removed")
            let problems = fixture.stop(removingFiles: false)
            for problem in problems { XCTFail("\(context): \(problem)") }
            if fsck.status != 0 || check.status != 0 || !problems.isEmpty {
                throw MountTestError("\(context) (workload seed \(seed)) failed; stopping here")
            }
        }
        XCTAssertGreaterThan(durableRecords, 0, "the workloads made nothing durable before the crashes: the check proved nothing")
    }
}
