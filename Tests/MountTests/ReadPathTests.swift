import Foundation
import XCTest

/// READ answered without a copy (`ReadReply`): image bytes, holes and RAM pieces, and the
/// fallback for reads made of more pieces than one reply vector should carry. Reads use
/// O_DIRECT, so each one reaches the daemon instead of the kernel's page cache.
final class ReadPathTests: MountedTestCase {
    func testDirectReadsOfImageHolesAndSmallPiecesMatchAReferenceFile() throws {
        // Layout (MiB): [0,1) hole, [1,3) random bytes, [3,4) 50 ten-byte pieces between holes
        // (about 100 pieces in one READ: one iovec each), [4,5) 300 pieces (about 600 in one
        // READ: gathered into one buffer). The pieces are written with O_DIRECT so they reach
        // the daemon as 10-byte writes, which stay in RAM.
        try sh("""
            set -e
            : > f; : > ../ref
            head -c 2097152 /dev/urandom > ../data
            dd if=../data of=f bs=1M seek=1 conv=notrunc status=none
            dd if=../data of=../ref bs=1M seek=1 conv=notrunc status=none
            piece() {  # piece NUMBER OFFSET_IN_UNITS_OF_10_BYTES
                printf 'piece%05d' "$1" > ../p
                dd if=../p of=f bs=10 seek="$2" oflag=direct conv=notrunc status=none
                dd if=../p of=../ref bs=10 seek="$2" conv=notrunc status=none
            }
            i=0; while [ $i -lt 50 ]; do piece $i $((314573 + i * 1000)); i=$((i + 1)); done
            i=0; while [ $i -lt 300 ]; do piece $i $((419430 + i * 100)); i=$((i + 1)); done
            """)
        let sizes = try sh("stat -c %s f ../ref")
        XCTAssertEqual(sizes, "4493310\n4493310\n")
        // Whole MiB reads (each one READ), then reads that start and end inside pieces.
        try sh("dd if=f bs=1M iflag=direct status=none | cmp - ../ref")
        try sh("dd if=f bs=4096 iflag=direct status=none | cmp - ../ref")
        try sh("""
            set -e
            for skip in 767 1023 1100; do
                dd if=f bs=4096 skip=$skip count=70 iflag=direct status=none > ../a
                dd if=../ref bs=4096 skip=$skip count=70 status=none > ../b
                cmp ../a ../b
            done
            """)
        // Buffered reads (page cache filled through readahead) agree as well.
        try sh("cmp f ../ref")
    }

    /// The daemon raises the mount's readahead window to 1 MiB once the mount is live, so
    /// buffered sequential reads arrive as 1 MiB READs (only root may write sysfs).
    func testReadaheadWindowIsRaisedForTheMount() throws {
        guard geteuid() == 0 else { throw XCTSkip("only root may change read_ahead_kb") }
        let path = "/sys/class/bdi/" + (try sh("mountpoint -d .")).trimmingCharacters(in: .whitespacesAndNewlines)
            + "/read_ahead_kb"
        var value = ""
        for _ in 0..<500 {
            value = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if value == "1024\n" { break }
            usleep(10_000)
        }
        XCTAssertEqual(value, "1024\n", path)
    }

    func testReadsOfAHoleOnlyFileAreZeros() throws {
        try sh("truncate -s 3M sparse && dd if=sparse bs=1M iflag=direct status=none | cmp -n 3145728 - /dev/zero")
        XCTAssertEqual(try sh("dd if=sparse bs=1M iflag=direct status=none | wc -c"), "3145728\n")
    }
}
