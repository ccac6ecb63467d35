import Dispatch
import Foundation
import XCTest
@testable import OffloadCore
import OffloadSimulation

/// The journal chain a generation's close starts has a first segment twice the size of
/// the closed generation's chain (`TreeVolume.firstSegmentBytes`): a frame that needed a
/// new segment took the space lock, and while the commit held it for its tree writes,
/// the frame's operation waited for the whole commit (a chmod every 15,000 at 1,000,000
/// files waited 390-520 ms).
final class TreeVolumeJournalRoomAheadTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20

    /// After a generation of 2,000 frames of about 300 bytes, its commit, and the test
    /// holding the space lock as a commit holds it: 1,500 more frames (about 450 KB, past
    /// a first segment of 64 KiB) are appended on another thread meanwhile. With a 64 KiB
    /// first segment that thread waits at its end.
    func testFramesAfterACommitNeedNoSpaceLockForTheirSegments() throws {
        let disk = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        let time = RecordTime(seconds: 0, nanoseconds: 0)
        let root = InodeItem(type: 4, permissions: 0o755, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0,
                             accessTime: time, modificationTime: time, changeTime: time, birthTime: time, parent: 1, nextIndex: 3)
        try volume.perform([.attributes(inode: 1, root)])
        _ = try volume.fileBlocks()  // as a mount's first request does: the free estimate is kept
        let value = [UInt8](repeating: 0x5A, count: 240)
        final class Frames: @unchecked Sendable {
            let volume: TreeVolume, value: [UInt8]
            init(_ volume: TreeVolume, _ value: [UInt8]) { self.volume = volume; self.value = value }
            func append(_ index: Int) throws(FSError) {
                try volume.perform([.setXattr(inode: 1, name: Array("user.n\(index % 40)".utf8), value: value)])
            }
        }
        let frames = Frames(volume, value)
        for index in 0..<2_000 { try frames.append(index) }
        try volume.commit()

        let appended = DispatchSemaphore(value: 0)
        final class Outcome: @unchecked Sendable { var failure: FSError? }
        let outcome = Outcome()
        let heldWait = volume.spaceLock.withLock { () -> DispatchTimeoutResult in
            Thread {
                do throws(FSError) {
                    for index in 0..<1_500 { try frames.append(index) }
                } catch {
                    outcome.failure = error
                }
                appended.signal()
            }.start()
            let whileHeld = appended.wait(timeout: .now() + 10)
            XCTAssertEqual(whileHeld, .success, "the frames waited for the space lock (a segment allocated on their path)")
            return whileHeld
        }
        if heldWait == .timedOut { XCTAssertEqual(appended.wait(timeout: .now() + 20), .success) }
        XCTAssertNil(outcome.failure)
        XCTAssertGreaterThan(volume.journalBytesSinceCommit, UInt64(MetadataLog.firstJournalSegmentBytes),
                             "the frames stayed in the first segment: the test proves nothing")
        try volume.commit()
        XCTAssertEqual(try volume.reader().xattr(1, name: Array("user.n0".utf8)), value)
    }
}
