import Foundation
import XCTest

/// Runs commands the way a person types them: `/bin/sh -c SCRIPT`.
struct ShellResult {
    var status: Int32
    var output: String
    var error: String
    var succeeded: Bool { status == 0 }
    /// Both streams, for assertion messages.
    var transcript: String { "status \(status)\n--- stdout ---\n\(output)\n--- stderr ---\n\(error)" }
}

enum Shell {
    /// The longest a single script may run before it is stopped and reported.
    static let timeoutSeconds: TimeInterval = 600

    /// Runs `script` with `/bin/sh -c` in `directory`; stdout and stderr go through files
    /// (no pipe can fill up and stall the child).
    static func run(_ script: String, in directory: String? = nil,
                    environment: [String: String] = [:]) throws -> ShellResult {
        try runProgram("/bin/sh", ["-c", script], in: directory, environment: environment)
    }

    /// Runs `program` with `arguments` directly (no shell).
    static func runProgram(_ program: String, _ arguments: [String], in directory: String? = nil,
                           environment: [String: String] = [:]) throws -> ShellResult {
        let scratch = FileManager.default.temporaryDirectory
            .appendingPathComponent("offloadfs-shell-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("out"), errURL = scratch.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        defer { try? out.close(); try? err.close() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            throw MountTestError("timed out after \(Int(timeoutSeconds)) s: \(program) \(arguments)")
        }
        process.waitUntilExit()
        return ShellResult(status: process.terminationStatus,
                           output: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                           error: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }
}

struct MountTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
