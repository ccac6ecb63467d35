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
    final class RecordingStorage: ImageStorage, @unchecked Sendable {
        let inner: MemoryImageStorage
        let events = PthreadMutex<[(prepared: Bool, range: Range<UInt64>)]>([])
        let onPrepare = PthreadMutex<(@Sendable () -> Void)?>(nil)

        init(maximumBytes: Int) { inner = MemoryImageStorage(maximumBytes: maximumBytes) }

        var name: String { inner.name }
        var length: UInt64 { inner.length }
        var diskBytes: UInt64 { inner.diskBytes }
        func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer { try inner.map(byteCount: byteCount) }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
            try inner.read(into: buffer, at: offset)
        }
        func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
            events.withLock { $0.append((false, offset..<offset + UInt64(bytes.count))) }
            try inner.write(bytes, at: offset)
        }
        func reserve(_ range: Range<UInt64>) throws(FSError) { try inner.reserve(range) }
        func punch(_ range: Range<UInt64>) throws(FSError) { try inner.punch(range) }
        func setLength(_ length: UInt64) throws(FSError) { try inner.setLength(length) }
        func sync() throws(FSError) { try inner.sync() }
        func prepareForWrite(_ range: Range<UInt64>) {
            events.withLock { $0.append((true, range)) }
            onPrepare.withLock { $0 }?()
        }
    }

    func testEveryFrameWriteFallsInsideAPreparationMadeWithoutTheLock() throws {
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
        }

        let events = storage.events.withLock { $0 }
        let writes = events.enumerated().filter { !$0.element.prepared }
        XCTAssertGreaterThan(writes.count, 268, "every operation writes a frame")
        // The preparations made since the write before this one cover it (a frame that
        // goes to a segment allocated by its own operation is the exception: its
        // preparation came before the segment existed).
        var uncovered = 0
        for (position, write) in writes {
            let since = events[..<position].reversed().prefix { $0.prepared }
            if !since.contains(where: { $0.range.contains(write.range.lowerBound) && write.range.upperBound <= $0.range.upperBound }) {
                uncovered += 1
            }
        }
        XCTAssertLessThanOrEqual(uncovered, 3, "frames written outside their preparation: \(uncovered) of \(writes.count)")
        let free = lockFree.withLock { $0 }
        XCTAssertGreaterThanOrEqual(free.count, 268, "one preparation an operation at least")
        XCTAssertTrue(free.allSatisfy { $0 }, "a preparation ran with the namespace lock held alone")
    }
}
