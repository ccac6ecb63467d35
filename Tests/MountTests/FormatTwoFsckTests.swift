import Foundation
import XCTest

/// `offloadfs fsck` on a format 2 image (in development: `offloadfs-genimage --format 2`
/// makes them; mount does not yet), as a person types it: `info` names its format, a
/// made image checks clean
/// (exit 0), one with damaged tree nodes reports problems (exit 1), and `--repair` says
/// it cannot repair format 2 yet (exit 2) without writing.
final class FormatTwoFsckTests: CommandLineTestCase {
    func testFsckChecksAFormatTwoImage() throws {
        let generator = URL(fileURLWithPath: DaemonBinary.path!).deletingLastPathComponent()
            .appendingPathComponent("offloadfs-genimage").path
        let image = scratch + "/two.img"
        let made = try Shell.runProgram(generator, [image, "--files", "3000", "--format", "2"])
        XCTAssertEqual(made.status, 0, made.transcript)

        let info = try offloadfs(["info", image])
        XCTAssertEqual(info.status, 0, info.transcript)
        XCTAssertTrue(info.output.contains("format version: 2 (in development"), info.transcript)
        XCTAssertTrue(info.output.contains("capacity bytes: "), info.transcript)

        let clean = try offloadfs(["fsck", image])
        XCTAssertEqual(clean.status, 0, clean.transcript)
        XCTAssertTrue(clean.output.contains("format 2, 3004 inodes"), clean.transcript)
        XCTAssertTrue(clean.output.contains("clean"), clean.transcript)

        // Blocks 2 to 299 zeroed: the journal's first segment and the trees' nodes.
        let damaged = scratch + "/damaged.img"
        let copied = try Shell.run("cp '\(image)' '\(damaged)' && dd if=/dev/zero of='\(damaged)' bs=4096 seek=2 count=298 conv=notrunc status=none")
        XCTAssertTrue(copied.succeeded, copied.transcript)
        let before = try Data(contentsOf: URL(fileURLWithPath: damaged))
        let check = try offloadfs(["fsck", damaged])
        XCTAssertEqual(check.status, 1, check.transcript)
        XCTAssertTrue(check.output.contains("problem: "), check.transcript)

        let repair = try offloadfs(["fsck", "--repair", damaged])
        XCTAssertEqual(repair.status, 2, repair.transcript)
        XCTAssertTrue(repair.transcript.contains("does not repair format 2 yet"), repair.transcript)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: damaged)), before, "fsck wrote to the image")
    }
}
