import XCTest
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation

/// The pool of readers the shared requests take (`VolumeReaderPool`): a reader comes back
/// while it still reads the current state (the published commit and the open generation),
/// never after either moved on, and a commit's drain lets every idle one go.
final class VolumeReaderPoolTests: XCTestCase {
    private func volume() throws -> TreeVolume {
        let storage = MemoryImageStorage(maximumBytes: 16 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 9,
                                           nameHashKey: SipHash24(key0: 5, key1: 6))
        try volume.perform([.attributes(inode: 1, InodeItem(
            type: 4, permissions: 0o755, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0,
            accessTime: RecordTime(seconds: 0, nanoseconds: 0), modificationTime: RecordTime(seconds: 0, nanoseconds: 0),
            changeTime: RecordTime(seconds: 0, nanoseconds: 0), birthTime: RecordTime(seconds: 0, nanoseconds: 0),
            parent: 1, nextIndex: 3))])
        return volume
    }

    func testAReaderComesBackOnlyWhileItReadsTheCurrentState() throws {
        let volume = try volume()
        let pool = VolumeReaderPool(volume: volume)
        let first = try pool.take(), second = try pool.take()
        XCTAssertFalse(first.reader === second.reader, "one reader handed out twice at once")
        pool.give(first)
        pool.give(second)
        let again = try pool.take()
        XCTAssertTrue(again.reader === second.reader || again.reader === first.reader, "an idle current reader was not reused")
        pool.give(again)

        // A new open generation: both idle readers lack its layer.
        try volume.closeOpenGeneration()
        let afterClose = try pool.take()
        XCTAssertFalse(afterClose.reader === first.reader || afterClose.reader === second.reader,
                       "a reader without the open generation was handed out")
        XCTAssertEqual(afterClose.open, volume.delta.openNumber)
        let alsoAfterClose = try pool.take()
        XCTAssertFalse(alsoAfterClose.reader === first.reader || alsoAfterClose.reader === second.reader,
                       "a stale reader was handed out")
        pool.give(afterClose)
        pool.give(alsoAfterClose)

        // A published commit: readers from before it are not kept, and a drain empties the pool.
        let beforeCommit = try pool.take()
        _ = try volume.commitClosed()
        pool.give(beforeCommit)
        let afterCommit = try pool.take()
        XCTAssertFalse(afterCommit.reader === beforeCommit.reader, "a reader of the previous commit came back")
        XCTAssertEqual(afterCommit.reader.generation, volume.current.generation)
        pool.give(afterCommit)
        pool.drain()
        XCTAssertFalse(try pool.take().reader === afterCommit.reader, "the drain kept an idle reader")
    }
}
