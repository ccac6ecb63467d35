import Foundation
import XCTest

/// Where the daemon's log goes: the journal (stderr that `$JOURNAL_STREAM` names) gets
/// lines with syslog priorities; a daemon in the background logs to syslog instead of
/// throwing its log away.
final class DaemonLoggingTests: ListeningDaemonTestCase {
    /// stderr is the journal when $JOURNAL_STREAM is its "device:inode" (the fixture's
    /// log file stands in for journald's stream): every line starts with its priority.
    func testJournalStreamLinesCarrySyslogPriorities() throws {
        let logPath = fixture.root + "/daemon.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        var info = stat()
        XCTAssertEqual(stat(logPath, &info), 0)
        try fixture.start(arguments: ["--size", "64M", "--log-level", "info"],
                          environment: ["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"])
        _ = try fixture.sh("echo x > f")
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        let lines = fixture.daemonLog.split(separator: "\n").map(String.init)
        XCTAssertFalse(lines.isEmpty)
        for line in lines {
            XCTAssertNotNil(line.range(of: #"^<[0-7]>"#, options: .regularExpression), "every line has a priority: \(line)")
        }
        let starting = try XCTUnwrap(lines.first { $0.hasPrefix("<6>starting ") }, "\(lines)")
        for field in ["version=", "image=\(fixture.image)", "mountpoint=\(fixture.mountPoint)", "options=memory_limit=64M,size=64M"] {
            XCTAssertTrue(starting.contains(field), "the start-up line has \(field): \(starting)")
        }
        XCTAssertTrue(lines.contains { $0.hasPrefix("<6>serving ") && $0.contains("phases=") }, "recovery timings: \(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("<6>\(MountTestFormat.finalLogLine) ") && $0.contains("seconds=") },
                      "the final checkpoint's timing: \(lines)")

        // A mount that fails: its reason is one error line, <3>, and nothing else.
        let failedLog = fixture.root + "/failed.log"
        _ = FileManager.default.createFile(atPath: failedLog, contents: nil)
        XCTAssertEqual(stat(failedLog, &info), 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try XCTUnwrap(DaemonBinary.path))
        process.arguments = ["mount", fixture.mountPoint, "--backing", fixture.root + "/other.img", "--size", "64M",
                             "--foreground", "-o", "no_such_option"]
        process.environment = ProcessInfo.processInfo.environment.merging(["JOURNAL_STREAM": "\(info.st_dev):\(info.st_ino)"]) { $1 }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: failedLog))
        process.standardError = handle
        process.standardOutput = handle
        try process.run()
        process.waitUntilExit()
        try handle.close()
        XCTAssertEqual(process.terminationStatus, 1)
        let failed = (try? String(contentsOfFile: failedLog, encoding: .utf8)) ?? ""
        let errors = failed.split(separator: "\n").filter { $0.hasPrefix("<3>") }
        XCTAssertEqual(errors.count, 1, failed)
        XCTAssertTrue(errors.first?.contains("mount failed: invalid mount options") == true, failed)
        XCTAssertFalse(failed.contains("offloadfs: invalid"), "no second, unprefixed copy: \(failed)")
    }

    /// $JOURNAL_STREAM inherited by a process whose stderr is something else: no prefixes.
    func testJournalStreamOfAnotherStreamIsIgnored() throws {
        try fixture.start(arguments: ["--size", "64M", "--log-level", "info"], environment: ["JOURNAL_STREAM": "1:2"])
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        XCTAssertFalse(fixture.daemonLog.contains("<6>"), fixture.daemonLog)
        XCTAssertTrue(fixture.daemonLog.contains(" info offloadfs: "), "swift-log's own stderr format: \(fixture.daemonLog)")
    }

    /// In the background (stderr is /dev/null) the log goes to syslog: one datagram per
    /// message, `<PRI>TIMESTAMP offloadfs[PID]: MESSAGE`, facility daemon. A failed
    /// mount is one error line there too.
    func testBackgroundDaemonLogsToSyslog() throws {
        let listener = try DatagramListener(name: fixture.root + "/log.sock")
        self.listener = listener
        let environment = ["OFFLOADFS_SYSLOG_SOCKET": listener.name]
        try mountInTheBackgroundWriteAndUnmount(environment: environment)
        let final = listener.wait(timeout: 5) { $0.contains(MountTestFormat.finalLogLine) }
        XCTAssertNotNil(final, "\(listener.messages.map(\.text))")
        let texts = listener.messages.map(\.text)
        let pattern = #"^<(2[4-9]|3[01])>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d offloadfs\[\d+\]: "#
        for text in texts {
            XCTAssertNotNil(text.range(of: pattern, options: .regularExpression), "a syslog datagram: \(text)")
        }
        XCTAssertTrue(texts.contains { $0.hasPrefix("<30>") && $0.contains(": starting ") }, "info = <30>: \(texts)")
        XCTAssertTrue(texts.contains { $0.hasPrefix("<31>") }, "--log-level debug reaches syslog: \(texts)")

        // A background mount that fails says why on the terminal and in the log.
        try refusedBackgroundMount(environment: environment)
        XCTAssertNotNil(listener.wait(timeout: 5) { $0.hasPrefix("<27>") && $0.contains("mount failed") && $0.contains("no_such_option") },
                        "the error as one <27> (daemon.err) line: \(listener.messages.map(\.text))")
    }

    /// With no syslog reader (no `/dev/log`: a container, a machine with no syslog daemon
    /// or journald), a background daemon's warnings and errors go to the kernel's log
    /// (`dmesg`), one `<PRI>offloadfs[PID]: MESSAGE` line each; its informational and
    /// debug lines do not. Before, all of them were lost.
    func testWithoutSyslogWarningsAndErrorsGoToTheKernelLog() throws {
        let kernelLog = fixture.root + "/kmsg"
        XCTAssertTrue(FileManager.default.createFile(atPath: kernelLog, contents: nil))
        let environment = ["OFFLOADFS_SYSLOG_SOCKET": fixture.root + "/no-syslog.sock", "OFFLOADFS_KMSG": kernelLog]
        try mountInTheBackgroundWriteAndUnmount(environment: environment)
        let quiet = try String(contentsOfFile: kernelLog, encoding: .utf8)
        XCTAssertFalse(quiet.contains("<30>") || quiet.contains("<31>"), "no info or debug lines in the kernel's log: \(quiet)")

        try refusedBackgroundMount(environment: environment)
        let lines = try String(contentsOfFile: kernelLog, encoding: .utf8).split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("<27>offloadfs[") && $0.contains("mount failed") && $0.contains("no_such_option") },
                      "the error as one <27> (daemon.err) line: \(lines)")
    }

    /// `offloadfs mount` in the background (`--log-level debug`) with `environment`, a
    /// file written and read, and `offloadfs unmount`.
    private func mountInTheBackgroundWriteAndUnmount(environment: [String: String]) throws {
        let mount = try BoundedRun.program(try XCTUnwrap(DaemonBinary.path), [
            "mount", fixture.mountPoint, "--backing", fixture.image, "--size", "64M", "--log-level", "debug",
        ], environment: environment, timeout: 60)
        XCTAssertTrue(mount.succeeded, mount.transcript)
        XCTAssertTrue(try fixture.sh("echo x > f && cat f").succeeded)
        let unmount = try BoundedRun.offloadfs(["unmount", fixture.mountPoint], timeout: 60)
        XCTAssertTrue(unmount.succeeded, unmount.transcript)
    }

    /// A background mount that libfuse refuses (an unknown `-o` option): status 1.
    private func refusedBackgroundMount(environment: [String: String]) throws {
        let refused = try BoundedRun.program(try XCTUnwrap(DaemonBinary.path), [
            "mount", fixture.mountPoint, "--backing", fixture.root + "/other.img", "--size", "64M", "-o", "no_such_option",
        ], environment: environment, timeout: 60)
        XCTAssertEqual(refused.status, 1, refused.transcript)
    }
}
