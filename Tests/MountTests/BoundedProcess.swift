import Foundation
import XCTest

/// How a program run with a deadline ended.
struct BoundedResult {
    enum Ending: Equatable {
        case exited(Int32)
        case signalled(Int32)
        case timedOut
    }
    var ending: Ending
    var output: String
    var error: String
    var seconds: Double

    var status: Int32? { if case .exited(let status) = ending { status } else { nil } }
    var succeeded: Bool { ending == .exited(0) }
    var summary: String {
        switch ending {
        case .exited(let status): "exit \(status)"
        case .signalled(let signal): "killed by signal \(signal)"
        case .timedOut: "timed out"
        }
    }
    var transcript: String {
        "\(summary) after \(String(format: "%.2f", seconds)) s\n--- stdout ---\n\(output.suffix(4000))\n"
            + "--- stderr ---\n\(error.suffix(4000))"
    }
    /// stderr's lines, without the empty one after the last newline.
    var errorLines: [Substring] { error.split(separator: "\n", omittingEmptySubsequences: true) }
}

/// Runs programs with a deadline: a program that outlives it is killed (SIGKILL) and
/// reported as timed out, never waited on forever.
enum BoundedRun {
    static func program(_ path: String, _ arguments: [String], in directory: String? = nil,
                        environment: [String: String] = [:], timeout: TimeInterval) throws -> BoundedResult {
        let scratch = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let outPath = scratch + "/out", errPath = scratch + "/err"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer { try? out.close(); try? err.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let start = Date()
        try process.run()
        let deadline = start.addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        var ending: BoundedResult.Ending
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            ending = .timedOut
        } else {
            process.waitUntilExit()
            ending = process.terminationReason == .exit ? .exited(process.terminationStatus)
                : .signalled(process.terminationStatus)
        }
        return BoundedResult(ending: ending,
                             output: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                             error: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "",
                             seconds: Date().timeIntervalSince(start))
    }

    /// `/bin/sh -c script`, with a deadline.
    static func shell(_ script: String, in directory: String? = nil, timeout: TimeInterval) throws -> BoundedResult {
        try program("/bin/sh", ["-c", script], in: directory, timeout: timeout)
    }

    /// `offloadfs ARGUMENTS`, with a deadline.
    static func offloadfs(_ arguments: [String], timeout: TimeInterval) throws -> BoundedResult {
        guard let binary = DaemonBinary.path else {
            throw MountTestError("the offloadfs binary was not found next to the test bundle")
        }
        return try program(binary, arguments, timeout: timeout)
    }
}

/// One `offloadfs mount ... --foreground` child whose outcome is observed from outside:
/// it either mounts (and must later unmount cleanly and exit 0), or exits by itself
/// (a refusal, reported with its stderr), or crashes or hangs (both reported).
final class DaemonUnderTest {
    enum Start {
        case mounted
        case exited(BoundedResult)
    }

    let mountPoint: String
    let image: String
    private let process = Process()
    private let logPath: String
    private var started = Date()

    init(mountPoint: String, image: String, logPath: String) {
        self.mountPoint = mountPoint
        self.image = image
        self.logPath = logPath
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }
    var pid: Int32 { process.processIdentifier }

    /// Starts the daemon and waits up to `timeout` for the mount to appear or the daemon
    /// to exit. A daemon that does neither is killed and reported as a hang (thrown).
    func start(arguments: [String], timeout: TimeInterval = 20) throws -> Start {
        guard let binary = DaemonBinary.path else {
            throw MountTestError("the offloadfs binary was not found next to the test bundle")
        }
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        defer { try? log.close() }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["mount", mountPoint, "--backing", image, "--foreground"] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        started = Date()
        try process.run()
        let deadline = started.addingTimeInterval(timeout)
        while Date() < deadline {
            if MountTable.isMounted(mountPoint) { return .mounted }
            if !process.isRunning {
                process.waitUntilExit()
                // The mount may have appeared and gone in between; either way it exited.
                return .exited(ended())
            }
            usleep(5_000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        Self.forceUnmount(mountPoint)
        throw MountTestError("offloadfs mount hung: neither mounted nor exited within \(Int(timeout)) s: \(self.log)")
    }

    private func ended() -> BoundedResult {
        BoundedResult(ending: process.terminationReason == .exit ? .exited(process.terminationStatus)
                          : .signalled(process.terminationStatus),
                      output: "", error: log, seconds: Date().timeIntervalSince(started))
    }

    /// Unmounts (fusermount3 -u, retried while busy) and waits for the daemon to exit.
    /// Returns the problems seen; empty means the daemon unmounted and exited 0.
    @discardableResult
    func stop(timeout: TimeInterval = 15) -> [String] {
        var problems: [String] = []
        if MountTable.isMounted(mountPoint) {
            var unmounted = false
            for _ in 0..<50 {
                let result = try? BoundedRun.program("/usr/bin/env", ["fusermount3", "-u", mountPoint], timeout: 10)
                if result?.succeeded == true || !MountTable.isMounted(mountPoint) { unmounted = true; break }
                usleep(100_000)
            }
            if !unmounted {
                problems.append("fusermount3 -u kept failing; unmounting lazily")
                Self.forceUnmount(mountPoint)
            }
        }
        if process.isRunning || process.processIdentifier != 0 {
            problems += reapDaemon(process, timeout: timeout, log: { String(log.suffix(2000)) })
        }
        if MountTable.isMounted(mountPoint) { problems.append("\(mountPoint) is still mounted") }
        return problems
    }

    /// Waits up to `timeout` for a daemon that was unmounted by other means (e.g.
    /// `offloadfs unmount`) to exit, and returns how it ended; nil if it is still running.
    func waitForExit(timeout: TimeInterval = 15) -> BoundedResult.Ending? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        guard !process.isRunning else { return nil }
        process.waitUntilExit()
        return process.terminationReason == .exit ? .exited(process.terminationStatus) : .signalled(process.terminationStatus)
    }

    /// Last resort for a mount whose daemon is gone or stuck.
    static func forceUnmount(_ mountPoint: String) {
        guard MountTable.isMounted(mountPoint) else { return }
        _ = try? BoundedRun.program("/usr/bin/env", ["fusermount3", "-uz", mountPoint], timeout: 10)
        if MountTable.isMounted(mountPoint) {
            _ = try? BoundedRun.program("/usr/bin/env", ["umount", "-l", mountPoint], timeout: 10)
        }
    }
}

/// SplitMix64: a small deterministic generator, so every damage case replays from its seed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Whether the mount command documents `option` (so tests can pass options that are
/// still being implemented only once they exist).
func mountCommandSupports(_ option: String) -> Bool {
    guard let help = try? BoundedRun.offloadfs(["mount", "--help"], timeout: 30) else { return false }
    return help.output.contains(option)
}
