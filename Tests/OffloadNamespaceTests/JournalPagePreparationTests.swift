import Dispatch
import Glibc
import OffloadCore
import OffloadSimulation
import XCTest
@testable import OffloadNamespace

/// Format 2's operations make the journal pages their frame goes to writable before they
/// take the namespace lock (`TreeVolume.prepareJournalAppend`), so the page fault of the
/// append, which on ext4 waits for a punch of the image, is not spent holding the lock
/// every request needs (docs/ARCHITECTURE.md, "Journal pages made writable before the
/// lock").
final class JournalPagePreparationTests: XCTestCase {
    /// Forwards to an in-memory image and records prepared and written ranges; `onPrepare`
    /// runs inside each prepare.
    final class RecordingStorage: ForwardingImageStorage, @unchecked Sendable {
        enum Event { case prepared(Range<UInt64>), wrote(Range<UInt64>), synced }
        let events = PthreadMutex<[Event]>([])
        let onPrepare = PthreadMutex<(@Sendable () -> Void)?>(nil)
        /// Off while the test commits: the nodes and the slot are not frames.
        let recordsWrites = PthreadMutex(true)

        init(maximumBytes: Int) { super.init(MemoryImageStorage(maximumBytes: maximumBytes)) }

        override func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
            if recordsWrites.withLock({ $0 }) { events.withLock { $0.append(.wrote(offset..<offset + UInt64(bytes.count))) } }
            try super.write(bytes, at: offset)
        }
        override func sync() throws(FSError) {
            try super.sync()
            events.withLock { $0.append(.synced) }
        }
        override func prepareForWrite(_ range: Range<UInt64>) {
            events.withLock { $0.append(.prepared(range)) }
            onPrepare.withLock { $0 }?()
        }
    }

    func testEveryFrameWriteFallsInPagesPreparedWithoutTheLockSinceTheLastSync() throws {
        let storage = RecordingStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 64 << 20, imageID: 9,
                                           nameHashKey: SipHash24(key0: 5, key1: 6))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        // Inside a preparation, another thread takes the namespace lock shared: it gets it
        // at once unless the preparing thread holds it alone.
        let lockFree = PthreadMutex<[Bool]>([])
        storage.onPrepare.withLock {
            $0 = { [namespace] in
                let got = DispatchSemaphore(value: 0)
                DispatchQueue.global().async {
                    namespace.lock.withReadLock {}
                    got.signal()
                }
                let free = got.wait(timeout: .now() + 2) == .success
                lockFree.withLock { $0.append(free) }
            }
        }
        storage.events.withLock { $0 = [] }

        let directory = try namespace.mkdir(parent: .root, name: try FileName("d"), mode: 0o755, context: .root)
        for index in 0..<200 {
            let name = try FileName("file-\(index)-" + String(repeating: "x", count: index % 50))
            let (file, handle) = try namespace.create(parent: directory.inode, name: name, mode: 0o100644,
                                                      flags: O_RDWR, context: .root)
            namespace.release(inode: file.inode, handle: handle)
            if index % 3 == 0 { try namespace.unlink(parent: directory.inode, name: name) }
            if index % 20 == 7 { try volume.sync() }
            if index % 50 == 25 {
                // A commit syncs twice (the nodes, then the slot): pages prepared before it
                // are prepared again after it.
                storage.recordsWrites.withLock { $0 = false }
                try volume.commit()
                storage.recordsWrites.withLock { $0 = true }
            }
        }

        let events = storage.events.withLock { $0 }
        // Each frame's bytes lie in pages prepared since the last sync (a frame that goes to
        // a segment its own operation allocated is the exception: its preparation came
        // before the segment existed).
        var prepared: [Range<UInt64>] = []
        var writes = 0, uncovered = 0, preparations = 0
        for event in events {
            switch event {
            case .synced: prepared = []
            case .prepared(let range):
                prepared.append(range)
                preparations += 1
            case .wrote(let range):
                writes += 1
                if !prepared.contains(where: { $0.contains(range.lowerBound) && range.upperBound <= $0.upperBound }) {
                    uncovered += 1
                }
            }
        }
        XCTAssertGreaterThanOrEqual(writes, 268, "every operation writes a frame (a mkdir, 200 creates, 67 unlinks)")
        XCTAssertLessThanOrEqual(uncovered, 3, "frames written outside the pages prepared: \(uncovered) of \(writes)")
        print("journal pages: \(writes) frames, \(uncovered) outside the pages prepared, \(preparations) preparations")
        XCTAssertLessThan(preparations, writes / 4, "pages prepared once are not prepared again until a sync")
        XCTAssertTrue(events.contains { if case .synced = $0 { return true } else { return false } }, "no sync: the test shows nothing of it")
        let free = lockFree.withLock { $0 }
        XCTAssertGreaterThan(free.count, 0)
        XCTAssertTrue(free.allSatisfy { $0 }, "a preparation ran with the namespace lock held alone")
    }
}
