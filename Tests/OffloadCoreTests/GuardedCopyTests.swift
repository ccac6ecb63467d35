import Foundation
import Glibc
import XCTest
@testable import OffloadCore

/// A page of the image the kernel cannot give back (here: the file cut short under the
/// mapping) is an `.io` error, not a SIGBUS that kills the process.
final class GuardedCopyTests: XCTestCase {
    func testReadsAndWritesOfAnImageCutShortAreErrors() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let range = try store.allocate(byteCount: 256 << 10)
        try store.copyIn([UInt8](repeating: 5, count: 256 << 10), to: range.lowerBound)
        XCTAssertEqual(truncate(image.path, 8192), 0)
        var buffer = [UInt8](repeating: 0, count: 4096)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { out in
            try Result { () throws(FSError) in
                try store.copyOut(from: range.lowerBound + 4096, into: out.baseAddress!, count: 4096)
            }.get()
        }) { error in
            guard case .io = error as? FSError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try store.checkReadable(store.bytes(at: range.lowerBound, count: 8192)))
        XCTAssertThrowsError(try store.copyIn([UInt8](repeating: 6, count: 100), to: range.lowerBound + 100))
    }

    /// The guard is C, and an optimiser may drop a store it cannot see read (the
    /// signal handler's): compile the shim as a release build does (-O2) and cut a file
    /// short under a guarded copy. The test target itself is a debug build, which
    /// would not show it.
    func testTheGuardSurvivesOptimisation() throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let shims = repo.appendingPathComponent("Sources/CLinuxShims")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-guard-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let harness = scratch.appendingPathComponent("harness.c")
        try """
            #include <fcntl.h>
            #include <stdio.h>
            #include <sys/mman.h>
            #include <unistd.h>
            #include "linux_shims.h"
            int main(int argc, char **argv) {
                int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
                if (fd < 0 || ftruncate(fd, 1 << 20) != 0) return 2;
                char *map = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (map == MAP_FAILED) return 2;
                char buffer[4096];
                if (ftruncate(fd, 4096) != 0) return 2;
                int read = offloadfs_guarded_copy(buffer, map + 65536, sizeof buffer);
                int probe = offloadfs_guarded_probe(map + 65536, 4096);
                int write = offloadfs_guarded_copy(map + 131072, buffer, sizeof buffer);
                printf("%d %d %d\\n", read, probe, write);
                return 0;
            }
            """.write(to: harness, atomically: true, encoding: .utf8)
        let binary = scratch.appendingPathComponent("harness").path
        let compile = try run("/usr/bin/cc", ["-O2", "-I", shims.appendingPathComponent("include").path,
                                              shims.appendingPathComponent("linux_shims.c").path, harness.path,
                                              "-lpthread", "-o", binary])
        XCTAssertEqual(compile.status, 0, compile.output)
        let result = try run(binary, [scratch.appendingPathComponent("mapped").path])
        XCTAssertEqual(result.status, 0, "the process died (signal?): \(result.output)")
        XCTAssertEqual(result.output, "-1 -1 -1\n", "each guarded access past the end of the file fails")
    }

    private func run(_ program: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus, output)
    }
}
