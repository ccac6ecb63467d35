import Foundation
import Glibc
import XCTest
@testable import OffloadCore
import OffloadSimulation

/// `ImageStorage.prepareForWrite` (the journal's pages made writable before the namespace
/// lock, docs/ARCHITECTURE.md) and the range `MetadataLog.upcomingBytes` hands it.
final class PrepareForWriteTests: XCTestCase {
    /// The call faults the pages in writable (resident afterwards, where the page cache had
    /// let them go, and a write to them then takes no page fault) and changes no byte;
    /// past the file's end it does nothing, with no SIGBUS.
    func testPreparedPagesAreWritableWithTheirBytesUnchanged() throws {
        let image = TemporaryImage()
        let storage = try FileImageStorage(path: image.path)
        let fileBytes: UInt64 = 1 << 20
        try storage.setLength(fileBytes)
        let mapping = try storage.map(byteCount: 2 << 20)
        let pattern = (0..<12_288).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        try pattern.withUnsafeBytes { bytes in
            try Result { () throws(FSError) in try storage.write(bytes, at: 65_536) }.get()
        }
        try storage.sync()
        // Written back and clean: unmapped from this process, the page cache may let the
        // pages go.
        XCTAssertEqual(madvise(mapping + 65_536, 3 * 4096, MADV_DONTNEED), 0)
        let fd = open(image.path, O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertEqual(posix_fadvise(fd, 0, off_t(fileBytes), POSIX_FADV_DONTNEED), 0)
        let pages = 3
        func resident() -> Int {
            var vector = [UInt8](repeating: 0, count: pages)
            XCTAssertEqual(mincore(mapping + 65_536, pages * 4096, &vector), 0)
            return vector.filter { $0 & 1 == 1 }.count
        }
        guard resident() == 0 else {
            throw XCTSkip("the page cache kept the pages (tmpfs?): the test would show nothing")
        }
        // A kernel before 5.14 has no MADV_POPULATE_WRITE.
        guard madvise(mapping + 1_048_576 - 4096, 4096, FileImageStorage.populateWrite) == 0 else {
            throw XCTSkip("madvise(MADV_POPULATE_WRITE) is refused here (errno \(errno))")
        }

        storage.prepareForWrite(65_536 + 100..<65_536 + 9_000)
        XCTAssertEqual(resident(), 3, "every page the range touches is faulted in")
        var back = [UInt8](repeating: 0, count: pattern.count)
        let read = try back.withUnsafeMutableBytes { buffer in
            try Result { () throws(FSError) in try storage.read(into: buffer, at: 65_536) }.get()
        }
        XCTAssertEqual(read, pattern.count)
        XCTAssertEqual(back, pattern)
        // Writable already: a store into each page takes no fault (a read-only population,
        // MADV_POPULATE_READ or WILLNEED, would leave a write fault each).
        var before = rusage(), after = rusage()  // RUSAGE_THREAD is 1 (not in the Glibc module)
        getrusage(__rusage_who_t(1), &before)
        for page in 0..<pages {
            let byte = (mapping + 65_536 + page * 4096).assumingMemoryBound(to: UInt8.self)
            byte.pointee ^= 0xFF
            byte.pointee ^= 0xFF
        }
        getrusage(__rusage_who_t(1), &after)
        XCTAssertEqual(after.ru_minflt - before.ru_minflt, 0, "a write to a prepared page faulted")

        // Past the file's end (inside the mapping, and beyond it): nothing, no signal.
        storage.prepareForWrite(fileBytes - 100..<fileBytes + 8192)
        storage.prepareForWrite(4 << 20..<(4 << 20) + 4096)
        XCTAssertEqual(storage.length, fileBytes)
    }

    /// Both of a commit's syncs (its nodes', then its slot's) count as finished syncs: the
    /// slot's writeback cleans journal pages too, which an operation coming between the two
    /// would otherwise take for still prepared.
    func testACommitCountsBothItsSyncs() throws {
        let storage = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 64 << 20, imageID: 3,
                                           nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 2, NamespaceChangeScript.inode(type: 8, links: 1))])
        let before = volume.syncLatch.finishedSyncs
        try volume.commit()
        XCTAssertEqual(volume.syncLatch.finishedSyncs - before, 2)
    }

    /// The range starts at the next frame's position, stays inside the current segment,
    /// and is empty once the chain continues in a new log.
    func testUpcomingBytesFollowTheWritePosition() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let log = try MetadataLog(store: store, imageID: 5, stream: 0, firstSequence: 1, segmentBytes: 16_384,
                                  firstSegmentBytes: 16_384)
        let head = log.head.range
        XCTAssertEqual(log.upcomingBytes(8192), UpcomingBytes(current: head.lowerBound..<head.lowerBound + 8192))
        try log.append(payload: [UInt8](repeating: 1, count: 100))
        let frame = UInt64(FrameHeader.size + 100)
        XCTAssertEqual(log.upcomingBytes(8192), UpcomingBytes(current: head.lowerBound + frame..<head.lowerBound + frame + 8192))
        // Near the segment's end: the rest of it, and the start of the spare that follows.
        XCTAssertEqual(log.upcomingBytes(1 << 20), UpcomingBytes(current: head.lowerBound + frame..<head.upperBound), "clipped, no spare yet")
        try log.ensureRoom(total: 32_768, largestFrame: 4096)
        let upcoming = log.upcomingBytes(1 << 20)
        XCTAssertNotNil(upcoming.spare, "the spare's start too")
        XCTAssertEqual(upcoming.current, head.lowerBound + frame..<head.upperBound)
        // The spare is where the chain continues once the segment is full.
        while log.segments.count == 1 { try log.append(payload: [UInt8](repeating: 2, count: 1000)) }
        XCTAssertEqual(log.segments[1].start, upcoming.spare?.lowerBound)
        let next = try log.continueInNewLog()
        XCTAssertTrue(log.upcomingBytes(8192).isEmpty)
        XCTAssertEqual(next.upcomingBytes(4096).current?.lowerBound, next.head.range.lowerBound)
    }

    /// The ranges widen to whole blocks, empty ones are left out, and a range counts as
    /// covered when either held range holds all of it.
    func testUpcomingBytesWidenToBlocksAndCoverWhatTheyHold() {
        let upcoming = UpcomingBytes(current: 5000..<9000, spare: 20_000..<20_100).wholeBlocks()
        XCTAssertEqual(upcoming, UpcomingBytes(current: 4096..<12_288, spare: 16_384..<20_480))
        XCTAssertEqual(UpcomingBytes(current: 10..<10).wholeBlocks(), UpcomingBytes())
        XCTAssertTrue(upcoming.covers(UpcomingBytes(current: 8192..<12_288)))
        XCTAssertTrue(upcoming.covers(UpcomingBytes(current: 16_384..<20_480, spare: 4096..<8192)))
        XCTAssertFalse(upcoming.covers(UpcomingBytes(current: 8192..<16_384)), "across the gap")
        XCTAssertFalse(upcoming.covers(UpcomingBytes(current: 4096..<8192, spare: 0..<4096)))
        XCTAssertTrue(upcoming.covers(UpcomingBytes()))
        XCTAssertFalse(UpcomingBytes().covers(UpcomingBytes(current: 0..<4096)))
        XCTAssertTrue(UpcomingBytes().isEmpty)
        XCTAssertFalse(upcoming.isEmpty)
    }
}
