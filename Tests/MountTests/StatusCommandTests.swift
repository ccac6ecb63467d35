import Foundation
import XCTest

/// `offloadfs status`: what a mount holds and has served, read from the daemon's status
/// socket, checked against what the test itself wrote.
final class StatusCommandTests: MountedTestCase {
    override var mountArguments: [String] { ["--size", "256M", "--memory-limit", "1M"] }
    /// What the three files of 100 bytes hold of the memory limit: their bytes and each
    /// piece's overhead (96 bytes, `Extent.memoryPieceOverhead`).
    static let heldBytes = 3 * (100 + 96)

    private func status(_ arguments: [String]) throws -> BoundedResult {
        try BoundedRun.offloadfs(["status"] + arguments, timeout: 30)
    }

    /// Writes a known tree: 2 MiB to the image, three 100-byte files held in RAM, one
    /// 4 KiB file fsync'ed; reads the 2 MiB back with O_DIRECT (a plain read would be
    /// answered from the page cache the writes filled).
    private func writeKnownTree() throws {
        try sh("""
            mkdir d
            dd if=/dev/urandom of=d/big bs=1M count=2 status=none
            for i in 1 2 3; do head -c 100 /dev/urandom > d/small$i; done
            dd if=/dev/zero of=d/synced bs=4k count=1 conv=fsync status=none
            dd if=d/big of=/dev/null bs=1M iflag=direct status=none
            """)
    }

    func testJSONMatchesWhatWasWritten() throws {
        try writeKnownTree()
        // The shell keeps one file open while it asks.
        let binary = try XCTUnwrap(DaemonBinary.path)
        let result = try fixture.sh("exec 3< d/small1; '\(binary)' status --json '\(mountPoint)'")
        XCTAssertTrue(result.succeeded, result.transcript)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any],
                                 result.output)
        func number(_ path: String) -> Int? {
            var value: Any? = json
            for key in path.split(separator: ".") { value = (value as? [String: Any])?[String(key)] }
            return (value as? NSNumber)?.intValue
        }
        XCTAssertEqual(json["mountpoint"] as? String, mountPoint)
        XCTAssertEqual((json["image"] as? [String: Any])?["path"] as? String, fixture.image)
        XCTAssertEqual(json["state"] as? String, "serving")
        XCTAssertNil(json["progress"], "no start-up or shutdown progress while serving")
        XCTAssertEqual(number("pid"), Int(try XCTUnwrap(fixture.pid)))
        XCTAssertEqual(number("owner_uid"), Int(getuid()))
        XCTAssertEqual(number("capacity_bytes"), 256 << 20)
        XCTAssertEqual(number("inodes"), 7, "root, d, big, small1-3, synced")
        XCTAssertGreaterThanOrEqual(number("open_handles") ?? 0, 1, "the shell's open file")
        XCTAssertEqual(number("memory.held_bytes"), Self.heldBytes, "the three small files are held in RAM")
        XCTAssertEqual(number("memory.limit_bytes"), 1 << 20)
        XCTAssertEqual(number("requests.bytes_written"), 2 << 20 + 300 + 4096)
        XCTAssertGreaterThanOrEqual(number("requests.bytes_read") ?? 0, 2 << 20)
        XCTAssertGreaterThanOrEqual(number("requests.fsyncs") ?? 0, 1)
        XCTAssertEqual(number("requests.operations.mkdir"), 1)
        XCTAssertEqual(number("requests.operations.create"), 5)
        XCTAssertGreaterThanOrEqual(number("image.live_bytes") ?? 0, 2 << 20 + 4096, "the 2 MiB and 4 KiB in the image")
        XCTAssertGreaterThanOrEqual(number("used_bytes") ?? 0, number("image.live_bytes") ?? .max)
        XCTAssertEqual((number("used_bytes") ?? 0) + (number("available_bytes") ?? 0), 256 << 20)
        XCTAssertGreaterThan(number("journal.bytes_since_checkpoint") ?? 0, 0)
        XCTAssertGreaterThanOrEqual(number("uptime_seconds") ?? -1, 0)
        XCTAssertTrue((json["options"] as? [String])?.contains("memory_limit=1M") == true, "\(json["options"] ?? "")")
        // The daemon's own memory, as the kernel counts it at about the same moment.
        let statusFile = try String(contentsOfFile: "/proc/\(try XCTUnwrap(fixture.pid))/status", encoding: .utf8)
        let anonKiB = try XCTUnwrap(statusFile.split(separator: "\n").first { $0.hasPrefix("RssAnon:") }
            .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) })
        let daemon = try XCTUnwrap(number("memory.daemon_bytes"), "no memory.daemon_bytes")
        XCTAssertGreaterThan(daemon, anonKiB * 1024 / 2, "RssAnon now: \(anonKiB) KiB")
        XCTAssertLessThan(daemon, anonKiB * 1024 * 2, "RssAnon now: \(anonKiB) KiB")
        if MountTestFormat.isTwo {
            XCTAssertGreaterThan(number("memory.node_cache_bytes") ?? 0, 0, "the readers' lookups kept nodes")
            // The kernel looked up the files the shell wrote (and the root): it may have
            // forgotten some since, never more than it saw.
            let referenced = try XCTUnwrap(number("referenced_inodes"), "no referenced_inodes")
            XCTAssertGreaterThan(referenced, 0)
            XCTAssertLessThanOrEqual(referenced, 7)
        } else {
            XCTAssertNil(json["referenced_inodes"], "format 1 keeps every inode")
        }
    }

    /// The generation is the last checkpoint's (format 1) or commit's (format 2) number:
    /// it grows as the maintenance writes them (here every 0.05 s, after any journal).
    func testTheGenerationFollowsCheckpointsAndCommits() throws {
        for problem in fixture.stop(removingFiles: false) { XCTFail(problem) }
        try fixture.start(arguments: mountArguments, skipIfCannotMount: false,
                          environment: ["OFFLOADFS_MAINTENANCE_INTERVAL": "0.05", "OFFLOADFS_CHECKPOINT_AFTER": "1"])
        func generation() throws -> UInt64? {
            let result = try status([mountPoint])
            XCTAssertTrue(result.succeeded, result.transcript)
            return result.output.split(separator: "\n").first { $0.hasPrefix("generation: ") }
                .flatMap { UInt64($0.dropFirst("generation: ".count)) }
        }
        let first = try XCTUnwrap(try generation(), "no generation line")
        var seen = first
        for round in 0..<3 {
            try sh("mkdir round\(round)")
            let deadline = Date().addingTimeInterval(20)
            var now = seen
            while now <= seen && Date() < deadline {
                usleep(50_000)
                now = try XCTUnwrap(try generation())
            }
            XCTAssertGreaterThan(now, seen, "no checkpoint or commit after a mkdir in 20 s")
            seen = now
        }
        let prometheus = try status(["--prometheus", mountPoint])
        XCTAssertTrue(prometheus.output.contains("# TYPE offloadfs_generation gauge"), prometheus.output)
    }

    func testPrometheusLinesParseAndAgree() throws {
        try writeKnownTree()
        let result = try status(["--prometheus", mountPoint])
        XCTAssertTrue(result.succeeded, result.transcript)
        var typed: Set<String> = []
        var samples: [String: Double] = [:]
        let sample = try NSRegularExpression(pattern: #"^([a-z_]+)\{([^}]*)\} (-?[0-9.e+]+)$"#)
        for line in result.output.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# HELP ") { continue }
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                XCTAssertEqual(parts.count, 4, line)
                XCTAssertTrue(["gauge", "counter"].contains(parts[3]), line)
                typed.insert(String(parts[2]))
                continue
            }
            let range = NSRange(line.startIndex..., in: line)
            let match = try XCTUnwrap(sample.firstMatch(in: line, range: range), "not a sample line: \(line)")
            let name = String(line[Range(match.range(at: 1), in: line)!])
            let labels = String(line[Range(match.range(at: 2), in: line)!])
            XCTAssertTrue(typed.contains(name), "TYPE comes before \(name)'s samples")
            XCTAssertTrue(labels.hasPrefix("mountpoint=\"\(mountPoint)\",image=\"\(fixture.image)\""), line)
            let extra = labels.split(separator: ",").dropFirst(2).joined(separator: ",")
            samples[name + (extra.isEmpty ? "" : "{\(extra)}")] = Double(line[Range(match.range(at: 3), in: line)!])
        }
        XCTAssertEqual(samples["offloadfs_up"], 1)
        XCTAssertEqual(samples["offloadfs_inodes"], 7)
        XCTAssertEqual(samples["offloadfs_memory_held_bytes"], Double(Self.heldBytes))
        XCTAssertGreaterThan(samples["offloadfs_daemon_bytes"] ?? 0, 0)
        XCTAssertEqual(samples["offloadfs_capacity_bytes"], Double(256 << 20))
        XCTAssertEqual(samples["offloadfs_written_bytes_total"], Double(2 << 20 + 300 + 4096))
        XCTAssertEqual(samples["offloadfs_requests_total{operation=\"mkdir\"}"], 1)
        XCTAssertEqual(samples["offloadfs_requests_total{operation=\"create\"}"], 5)
    }

    func testLinesWhenPipedAndATableOnATerminal() throws {
        try writeKnownTree()
        let piped = try status([mountPoint])
        XCTAssertTrue(piped.succeeded, piped.transcript)
        let lines = Set(piped.output.split(separator: "\n").map(String.init))
        for expected in ["mountpoint: \(mountPoint)", "state: serving", "inodes: 7", "memory held bytes: \(Self.heldBytes)",
                         "capacity bytes: \(256 << 20)"] {
            XCTAssertTrue(lines.contains(expected), "'\(expected)' in:\n\(piped.output)")
        }
        // Every mount when none is named (other tests' mounts may be listed too).
        let all = try status([])
        XCTAssertTrue(all.succeeded, all.transcript)
        XCTAssertTrue(all.output.contains("mountpoint: \(mountPoint)"), all.output)

        // script(1) gives the command a terminal.
        let binary = try XCTUnwrap(DaemonBinary.path)
        let table = try BoundedRun.program("/usr/bin/script", ["-qec", "'\(binary)' status '\(mountPoint)'", "/dev/null"],
                                           timeout: 30)
        XCTAssertTrue(table.succeeded, table.transcript)
        XCTAssertTrue(table.output.contains("\(mountPoint)  serving, up "), table.output)
        XCTAssertNotNil(table.output.range(of: #"space +\[[#.]{30}\] +[0-9]+%"#, options: .regularExpression),
                        "a usage bar: \(table.output)")
        XCTAssertTrue(table.output.contains("\(Self.heldBytes) B of 1.0 MiB held in RAM"), table.output)
        XCTAssertNotNil(table.output.range(of: #"daemon +[0-9.]+ [KM]iB resident"#, options: .regularExpression), table.output)
        XCTAssertNotNil(piped.output.range(of: #"(?m)^daemon bytes: [0-9]+$"#, options: .regularExpression), piped.output)
    }

    func testNotAnOffloadfsMountIsOneLine() throws {
        let result = try status([fixture.root])
        XCTAssertEqual(result.status, 1, result.transcript)
        XCTAssertEqual(result.errorLines.count, 1, result.transcript)
        XCTAssertTrue(result.error.contains("is not an offloadfs mount"), result.transcript)
    }
}
