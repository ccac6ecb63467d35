import Foundation
import XCTest
@testable import OffloadCore
@testable import OffloadNamespace

/// What a mount says when the upgrade of a format 1 image fails (`MountedImages.explained`):
/// while the image's bytes are still format 1's, no room (ENOSPC, EDQUOT) says what to do
/// and that the image is still format 1, a refusal of the image adds that `--format 1`
/// mounts it as it is, and other errors pass unchanged; once the image may be format 2
/// (a failure while syncing the second slot), nothing is claimed about it.
final class UpgradeFailureMessageTests: XCTestCase {
    private let path = "/srv/x.img"

    private func message(_ error: FSError) -> String? {
        switch error {
        case .invalidArgument(let why), .damagedImage(let why): return why
        default: return nil
        }
    }

    func testNoRoomSaysWhatToDoAndThatTheImageIsStillFormatOne() throws {
        for error in [FSError.noSpace, .system(errno: ENOSPC, call: "write"), .system(errno: EDQUOT, call: "write")] {
            let explained = MountedImages.explained(error, path: path, stillFormatOne: true)
            let text = try XCTUnwrap(message(explained), "\(error) becomes a sentence: \(explained)")
            XCTAssertTrue(text.hasPrefix("no room to upgrade '/srv/x.img' to format 2"), text)
            XCTAssertTrue(text.contains("larger --size"), text)
            XCTAssertTrue(text.contains("'/srv/x.img' is still a format 1 image; `offloadfs mount --format 1` mounts it"), text)
        }
    }

    func testARefusalKeepsItsReasonAndAddsTheWayToMountAsItIs() throws {
        let damaged = MountedImages.explained(.damagedImage("the format 1 image has problems (x)"), path: path,
                                              stillFormatOne: true)
        guard case .damagedImage(let why) = damaged else { return XCTFail("still damage: \(damaged)") }
        XCTAssertTrue(why.hasPrefix("the format 1 image has problems (x); '/srv/x.img' is still a format 1 image"), why)
        let refused = MountedImages.explained(.invalidArgument("the format 1 image's two superblock copies differ"),
                                              path: path, stillFormatOne: true)
        guard case .invalidArgument(let reason) = refused else { return XCTFail("still refused: \(refused)") }
        XCTAssertTrue(reason.contains("copies differ; '/srv/x.img' is still a format 1 image"), reason)
    }

    func testOtherErrorsAndAnImageNoLongerFormatOnePassUnchanged() {
        XCTAssertEqual(MountedImages.explained(.io("read failed"), path: path, stillFormatOne: true), .io("read failed"))
        XCTAssertEqual(MountedImages.explained(.noSpace, path: path, stillFormatOne: false), .noSpace)
        XCTAssertEqual(MountedImages.explained(.damagedImage("x"), path: path, stillFormatOne: false), .damagedImage("x"))
    }
}
