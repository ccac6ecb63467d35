import Foundation
import XCTest

/// What the daemon does when the image under it misbehaves or a request is at a protocol
/// limit: it answers with an error (or a short count) and stays up.
final class ImageFaultMountTests: XCTestCase {
    /// Reading a page of the mapping that the kernel cannot give back (an I/O error, or
    /// here the image cut short under the daemon) raises SIGBUS; it must become EIO for
    /// that request, and the daemon must go on serving.
    func testAnImageCutShortUnderTheDaemonGivesEIONotACrash() throws {
        // On format 1 (on format 2 the cut takes the tree's nodes too, not only data).
        let unpin = MountTestFormat.pinFormatOne()
        defer { unpin() }
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        try fixture.start(arguments: ["--size", "256M", "--memory-limit", "0"])
        let image = fixture.image
        let result = try fixture.sh("""
            head -c 8388608 /dev/urandom > big && sync big
            size=$(stat -c %s '\(image)')
            truncate -s 8192 '\(image)'
            echo 3 > /proc/sys/vm/drop_caches
            cat big > /dev/null; echo "cat exit $?"
            mkdir d && ls
            # Give the daemon its image's length back (the bytes are gone), so that its
            # last checkpoint can be written and it exits cleanly.
            truncate -s "$size" '\(image)'
            """)
        XCTAssertTrue(result.output.contains("cat exit 1"), result.transcript)
        XCTAssertTrue(result.error.contains("Input/output error"), result.transcript)
        XCTAssertTrue(result.output.contains("big\nd\n"), "the daemon serves on: \(result.transcript)")
        XCTAssertTrue(fixture.pid.map { kill($0, 0) == 0 } ?? false, "the daemon is alive")
        XCTAssertTrue(fixture.daemonLog.contains("faulted"), "each failed read is logged with its cause")
    }

    /// The reply to COPY_FILE_RANGE counts bytes in 32 bits: a request of 4 GiB or more
    /// must come back with a count the kernel reads right (not 0, which means end of
    /// file), and the whole copy must arrive. Kernel 6.18 clamps the request itself
    /// (fuse: "prevent overflow in copy_file_range return value", 2025), so this passes
    /// here with or without the daemon's own clamp, which older kernels need.
    func testCopyFileRangeOfFourGiBAndMore() throws {
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        try fixture.start(arguments: ["--size", "1G"])
        let output = try fixture.sh("""
            truncate -s 5G src && printf tail >> src && : > dst
            python3 - <<'PY'
            import os
            src, dst = os.open("src", os.O_RDONLY), os.open("dst", os.O_WRONLY)
            total, calls, first = 0, 0, None
            while True:
                n = os.copy_file_range(src, dst, 6 << 30)
                if first is None: first = n
                if n == 0: break
                total += n; calls += 1
            print("first", first, "total", total, "calls", calls)
            PY
            tail -c 4 dst; echo; stat -c %s dst
            """).output
        XCTAssertTrue(output.contains("first 4294963200 total 5368709124 calls 2"), output)
        XCTAssertTrue(output.hasSuffix("tail\n5368709124\n"), output)
    }
}
