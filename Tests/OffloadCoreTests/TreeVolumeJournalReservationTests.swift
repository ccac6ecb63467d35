import XCTest
@testable import OffloadCore
import OffloadSimulation

/// Journal room reserved before a change (`TreeVolume.reserveRoom`) stays the change's:
/// operations that share the namespace lock (writes to different files) make their room
/// and append their frames at once, and a file change cannot be refused once its data
/// changed, so a frame that found its room taken by another's would fail the namespace.
final class TreeVolumeJournalReservationTests: XCTestCase {
    static let capacity: UInt64 = 2 << 20

    func testAReservedFrameFindsItsRoomAfterOtherOperationsFilledTheImage() throws {
        let disk = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        volume.space.setReserveTarget(0)
        let time = RecordTime(seconds: 0, nanoseconds: 0)
        let root = InodeItem(type: 4, permissions: 0o755, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0,
                             accessTime: time, modificationTime: time, changeTime: time, birthTime: time, parent: 1, nextIndex: 3)
        try volume.perform([.attributes(inode: 1, root)])
        let value = [UInt8](repeating: 0xA5, count: 8_000)
        let reserved = try volume.reserveRoom(changeBytes: value.count + 64)
        XCTAssertEqual(volume.claimedJournalRoom, reserved)
        // Other operations until the image has no room for them: they leave the reserved
        // room alone.
        var performed = 0
        var refusal: FSError?
        while refusal == nil && performed < 1_000_000 {
            do throws(FSError) {
                try volume.perform([.setXattr(inode: 1, name: Array("user.n\(performed % 50)".utf8),
                                              value: [UInt8](repeating: UInt8(truncatingIfNeeded: performed), count: 200))])
                performed += 1
            } catch {
                refusal = error
            }
        }
        guard case .noSpace = refusal else { return XCTFail("operations ended with \(String(describing: refusal))") }
        XCTAssertNil(volume.failure)
        // The same change without a reservation is refused; with it, its frame is written.
        XCTAssertThrowsError(try volume.perform([.setXattr(inode: 1, name: Array("user.big".utf8), value: value)])) {
            guard case .noSpace = $0 as? FSError else { return XCTFail("refused with \($0)") }
        }
        try volume.perform([.setXattr(inode: 1, name: Array("user.big".utf8), value: value)], reserved: reserved)
        XCTAssertNil(volume.failure)
        XCTAssertEqual(volume.claimedJournalRoom, 0, "the frame did not end its reservation")
        XCTAssertEqual(try volume.reader().xattr(1, name: Array("user.big".utf8)), value)
        // A reservation no frame uses is given back.
        let unused = try volume.reserveRoom(changeBytes: 100)
        volume.releaseRoom(unused)
        XCTAssertEqual(volume.claimedJournalRoom, 0)
        print("journal reservation: \(performed) operations before the image had no room beside \(reserved) reserved bytes")
    }
}
