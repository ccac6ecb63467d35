import Foundation
import XCTest

/// The daemon started as systemd starts a `Type=notify` service (systemd/offloadfs@.service):
/// `--foreground`, with `$NOTIFY_SOCKET` naming a datagram socket this test owns (a path,
/// and an abstract name), and `$WATCHDOG_USEC`.
final class ServiceNotifyTests: ListeningDaemonTestCase {
    /// READY=1 comes only once the mount answers a request, not when the kernel mount
    /// appears: the test knob holds the session loop back for 1.5 s after mounting, and
    /// READY=1 must wait for it. Before it, STATUS= lines with start-up progress and
    /// EXTEND_TIMEOUT_USEC; with it, STATUS=serving and MAINPID; then WATCHDOG=1 every
    /// half $WATCHDOG_USEC; on SIGTERM, STOPPING=1, and the mount is gone.
    func testReadyStatusWatchdogAndStoppingOverAPathSocket() throws {
        let listener = try DatagramListener(name: fixture.root + "/notify.sock")
        self.listener = listener
        try fixture.start(arguments: ["--size", "64M"], environment: [
            "NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "200000",
            "OFFLOADFS_TEST_SLOW_PHASE": "waiting for the kernel:1.5",
        ])
        let mountAppeared = Date()
        let pid = try XCTUnwrap(fixture.pid)
        let ready = try XCTUnwrap(listener.wait(timeout: 20) { $0.split(separator: "\n").contains("READY=1") },
                                  "READY=1 never came: \(listener.messages.map(\.text)) \(fixture.daemonLog)")
        XCTAssertGreaterThan(ready.arrived.timeIntervalSince(mountAppeared), 1.2,
                             "READY=1 must wait until the mount answers (the loop started 1.5 s after mounting)")
        // And once it is there, the mount does answer at once.
        let probe = try BoundedRun.program("/usr/bin/stat", ["-f", "-c", "%T", fixture.mountPoint], timeout: 10)
        XCTAssertTrue(probe.succeeded && probe.seconds < 5, probe.transcript)
        XCTAssertTrue(ready.text.contains("MAINPID=\(pid)"), ready.text)
        XCTAssertTrue(ready.text.contains("STATUS=serving \(fixture.mountPoint)"), ready.text)

        let before = listener.fields.filter { $0.arrived <= ready.arrived }.map(\.field)
        // The phase the knob made long is reported with its progress (the short ones
        // before it may fall between two readings).
        XCTAssertTrue(before.contains { $0.hasPrefix("STATUS=mounting \(fixture.mountPoint): waiting for the kernel ") },
                      "start-up phases as STATUS= lines: \(before)")
        XCTAssertTrue(before.contains("EXTEND_TIMEOUT_USEC=60000000"), "each progress report extends the timeout: \(before)")

        // WATCHDOG=1 every 0.1 s while serving (a few are enough, however loaded the machine).
        func pings() -> Int { listener.fields.filter { $0.field == "WATCHDOG=1" && $0.arrived > ready.arrived }.count }
        let deadline = Date().addingTimeInterval(5)
        while pings() < 4 && Date() < deadline { usleep(50_000) }
        XCTAssertGreaterThanOrEqual(pings(), 4, "WATCHDOG=1 keeps arriving")

        let terminated = Date()
        XCTAssertEqual(kill(pid, SIGTERM), 0)
        fixture.daemon?.waitUntilExit()
        XCTAssertEqual(fixture.daemon?.terminationReason, .exit, fixture.daemonLog)
        XCTAssertEqual(fixture.daemon?.terminationStatus, 0, fixture.daemonLog)
        XCTAssertFalse(MountTable.isMounted(fixture.mountPoint), "SIGTERM unmounts")
        let after = listener.fields.filter { $0.arrived >= terminated }.map(\.field)
        let stopping = try XCTUnwrap(after.firstIndex(of: "STOPPING=1"), "STOPPING=1 after SIGTERM: \(after)")
        XCTAssertTrue(after[stopping...].contains { $0.hasPrefix("STATUS=unmounted \(fixture.mountPoint); writing the final checkpoint") },
                      "\(after)")
        // (One ping already on its way when the timer was cancelled may still land.)
        XCTAssertLessThanOrEqual(after[stopping...].filter { $0 == "WATCHDOG=1" }.count, 1,
                                 "no watchdog pings once stopping: \(after)")
    }

    /// An abstract socket name ("@..."), as systemd may pass; no $WATCHDOG_USEC, no pings.
    func testAbstractSocketName() throws {
        let listener = try DatagramListener(name: "@offloadfs-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        self.listener = listener
        try fixture.start(arguments: ["--size", "64M"], environment: ["NOTIFY_SOCKET": listener.name])
        XCTAssertNotNil(listener.wait(timeout: 20) { $0.split(separator: "\n").contains("READY=1") },
                        "READY=1 over an abstract socket: \(listener.messages.map(\.text)) \(fixture.daemonLog)")
        XCTAssertTrue(try fixture.sh("echo x > f && cat f").succeeded)
        let pid = try XCTUnwrap(fixture.pid)
        XCTAssertEqual(kill(pid, SIGTERM), 0)
        fixture.daemon?.waitUntilExit()
        XCTAssertEqual(fixture.daemon?.terminationStatus, 0, fixture.daemonLog)
        XCTAssertNotNil(listener.wait(timeout: 5) { $0.split(separator: "\n").contains("STOPPING=1") })
        XCTAssertFalse(listener.fields.contains { $0.field == "WATCHDOG=1" }, "no watchdog without WATCHDOG_USEC")
        XCTAssertFalse(MountTable.isMounted(fixture.mountPoint))
    }
}
