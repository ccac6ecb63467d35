import XCTest
import Synchronization
import Dispatch
@testable import OffloadCore
import OffloadSimulation

/// The metadata reserve (`BlockSpace+Reserve.swift`): once file data has taken every free
/// block, operations still journal and commit from it, so a full image stays writable
/// instead of going read-only; operations whose commit would not fit the room left
/// (`TreeVolume.admit`: since 2026-12-05 they commit by themselves before that, and the
/// tree's growth is what ends them) are refused with ENOSPC having changed nothing, and the
/// volume keeps working.
final class TreeVolumeReserveTests: XCTestCase {
    func testAnImageFullOfDataStillJournalsAndCommitsFromTheReserve() throws {
        let capacity: UInt64 = 4 << 20
        let disk = MemoryImageStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        XCTAssertEqual(volume.space.reserveBlocks, 128, "a 4 MiB image reserves 512 KiB")
        let files = try volume.fileBlocks()
        // File data takes every block but the reserve.
        var dataBlocks: UInt64 = 0
        while let bytes = try? files.allocate(byteCount: 64 << 10) { dataBlocks += UInt64(bytes.count) >> 12 }
        XCTAssertEqual(files.availableBytes, 0)
        XCTAssertEqual(volume.space.reserveBlocks, 128, "file data never takes from the reserve")
        XCTAssertGreaterThan(dataBlocks, 800)
        XCTAssertNoThrow(try volume.perform([.attributes(inode: 1, Self.root)]), "the first operation")
        // Operations journal from the reserve until three quarters are left, then are refused.
        var performed = 0
        var refusal: FSError?
        while refusal == nil && performed < 10_000 {
            do {
                try volume.perform([.setXattr(inode: 1, name: Array("user.k\(performed)".utf8), value: [UInt8](repeating: 7, count: 200))])
                performed += 1
            } catch {
                refusal = error
            }
        }
        guard case .noSpace = refusal else { return XCTFail("operations ended with \(String(describing: refusal)) after \(performed)") }
        XCTAssertNil(volume.failure, "a refused operation failed the volume")
        // Refused while the room still holds the commit of what waits.
        let waiting = volume.delta.commitLoad(after: volume.committedGeneration)
        XCTAssertGreaterThanOrEqual(volume.space.metadataRoom,
                                    TreeVolume.commitOverheadBlocks + TreeVolume.commitBlocks(waiting),
                                    "refused only once the room for the waiting commit was gone")
        // Each commits by itself (the room after the overhead the commits keep aside holds
        // one), and each commit's journal chain and the frees it waits for take some of the
        // reserve: a few before the refusal. (Counted by objects alone, the xattrs of one
        // inode were one object's commit: more than a hundred were journaled without one.)
        XCTAssertGreaterThan(performed, 2, "operations journaled and committed from the reserve")
        // The commit fits in what is left, and the volume goes on.
        XCTAssertNoThrow(try volume.commit(), "the commit after the refusal")
        XCTAssertNil(volume.failure)
        try volume.perform([.removeXattr(inode: 1, name: Array("user.k0".utf8))])
        try volume.commit()
        // Everything answered is there after a reopen.
        let reopened = try TreeVolume.open(disk)
        XCTAssertNil(reopened.failure)
        let reader = try reopened.reader()
        XCTAssertNil(try reader.xattr(1, name: Array("user.k0".utf8)))
        XCTAssertEqual(try reader.xattr(1, name: Array("user.k\(performed - 1)".utf8)), [UInt8](repeating: 7, count: 200))
        print("reserve: \(dataBlocks) data blocks, then \(performed) operations journaled from the reserve before a refusal")
    }

    /// Admission is a reservation: the changes of an operation admitted and not yet
    /// recorded in the delta count against the room for the next one, so operations
    /// running at once cannot all pass on the same count (until 2026-12-05, nineteenth
    /// session, the second admission here passed too). It ends with the record, and on
    /// every way out of `perform`.
    func testChangesAdmittedAndNotYetRecordedCountAgainstTheRoom() throws {
        let volume = try Self.volumeFullOfData(capacity: 4 << 20)
        let room = volume.space.metadataRoom
        XCTAssertTrue(volume.isNearlyFull(room))
        let waiting = volume.delta.commitLoad(after: volume.space.settledGeneration)
        XCTAssertEqual(TreeVolume.commitBlocks(waiting), 0)
        // Half the changes the room takes, and one more: one admission fits, two do not.
        let fitting = Int((room - volume.growthAsideBlocks) / TreeVolume.commitBlocksPerObject)
        let half = fitting / 2 + 1
        XCTAssertGreaterThan(half, 2)
        let load = CommitLoad(objects: half)
        var first = try volume.admit(load)
        XCTAssertEqual(first, Int(TreeVolume.commitBlocks(load)))
        XCTAssertThrowsError(try volume.admit(load), "two admissions on the room of one") { error in
            guard case FSError.noSpace = error else { return XCTFail("refused with \(error)") }
        }
        XCTAssertEqual(volume.admittedBlocks.load(ordering: .relaxed), first, "a refusal admits nothing")
        volume.endAdmission(&first)
        XCTAssertEqual(first, 0)
        XCTAssertEqual(volume.admittedBlocks.load(ordering: .relaxed), 0)
        var again = try volume.admit(load)
        volume.endAdmission(&again)
        // perform ends its admission whether it succeeds or not (on the nearly full
        // image, where it admits).
        XCTAssertTrue(volume.isNearlyFull(volume.space.metadataRoom))
        try volume.perform([.attributes(inode: 1, Self.root)])
        XCTAssertEqual(volume.admittedBlocks.load(ordering: .relaxed), 0, "after an operation")
        XCTAssertTrue(volume.isNearlyFull(volume.space.metadataRoom))
        XCTAssertThrowsError(try volume.perform([.drop(inode: 77), .attributes(inode: 77, Self.root)]),
                             "a change of an inode the same frame dropped")
        XCTAssertEqual(volume.admittedBlocks.load(ordering: .relaxed), 0, "after a refused operation")
        XCTAssertNil(volume.failure)
    }

    /// Operations from threads at once on a nearly full image: what they recorded never
    /// needs more than the room takes. The review of admission's first form, a
    /// compare-and-swap on the admitted count, found that an admission ending (its changes
    /// now counted by the delta) and another of the same size starting between a third's
    /// read and its swap let the third through on a count that missed the first's changes.
    func testOperationsAtOnceNeverRecordMoreThanTheRoomTakes() throws {
        let volume = try Self.volumeFullOfData(capacity: 256 << 20)
        let room = volume.space.metadataRoom, aside = volume.growthAsideBlocks
        XCTAssertTrue(volume.isNearlyFull(room))
        let performed = Atomic<Int>(0)
        // The volume's calls are made for threads at once (operations share the namespace
        // lock); the type is not marked Sendable.
        nonisolated(unsafe) let shared = volume
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for k in 0..<10_000 {
                // No commit: every change recorded stays waiting, so admission ends them.
                do {
                    try shared.perform([.attributes(inode: UInt64(1_000 + thread * 100_000 + k), Self.file)],
                                       commitsAtBudget: false)
                    performed.add(1, ordering: .relaxed)
                } catch {
                    if case FSError.noSpace = error { return }
                    return XCTFail("thread \(thread), operation \(k): \(error)")
                }
            }
        }
        let waiting = volume.delta.commitLoad(after: volume.space.settledGeneration).objects
        XCTAssertEqual(waiting, performed.load(ordering: .relaxed), "an inode changed is one object")
        XCTAssertGreaterThan(waiting, 10)
        XCTAssertLessThanOrEqual(aside + TreeVolume.commitBlocksPerObject * UInt64(waiting), room,
                                 "more recorded than the room takes")
        XCTAssertEqual(volume.admittedBlocks.load(ordering: .relaxed), 0)
        XCTAssertNil(volume.failure)
        XCTAssertNoThrow(try volume.commit(), "the commit of what was admitted")
        print("operations at once: \(waiting) recorded on a room of \(room) blocks")
    }

    /// What `TreeVolume.admit` lets through on a nearly full image: an operation with a
    /// removal, or a frame of drops alone; not a change that carries the drops of
    /// forgotten inodes (`VolumeNamespace.writeFrame` adds them to any frame), which the
    /// final review found let every create through that carried one.
    func testReleasesAreOperationsThatRemoveOrFramesOfDropsAlone() {
        let xattr = JournalChange.setXattr(inode: 1, name: Array("user.a".utf8), value: [1])
        let removal = JournalChange.removeXattr(inode: 1, name: Array("user.a".utf8))
        XCTAssertTrue(JournalChange.release([.drop(inode: 7), .drop(inode: 8)]))
        XCTAssertTrue(JournalChange.release([removal, .drop(inode: 7)]))
        XCTAssertFalse(JournalChange.release([xattr, .drop(inode: 7)]))
        XCTAssertFalse(JournalChange.release([xattr]))
        XCTAssertFalse(JournalChange.release([]))
    }

    /// The reserve is taken from the top of the space, file data from the bottom: a
    /// smaller capacity then need not cover the reserve's place (it is recorded nowhere),
    /// nor data pushed above it (`TreeVolume+Capacity.swift`).
    func testTheReserveLiesAboveTheData() throws {
        let capacity: UInt64 = 64 << 20
        let disk = MemoryImageStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        XCTAssertEqual(volume.space.reserveBlocks, 255)
        XCTAssertEqual(volume.space.reserve.ranges.last?.upperBound, volume.space.endBlock, "the reserve is taken from the top")
        let data = try volume.fileBlocks().allocate(byteCount: 1 << 20, hint: nil)
        XCTAssertLessThan(data.upperBound >> 12, 300, "file data starts at the bottom, below the reserve")
        // Refilled from the top after a commit that took some of it.
        volume.space.reserveAccess = .commit
        let used = try XCTUnwrap(volume.space.takeFromReserve(16, .commit))
        volume.space.reserveAccess = .journal
        volume.space.giveBack(used)
        volume.space.refillReserve()
        XCTAssertEqual(volume.space.reserveBlocks, 255)
        XCTAssertGreaterThanOrEqual(volume.space.reserve.ranges.first?.lowerBound ?? 0, volume.space.endBlock - 255 - 16)
    }

    /// A new volume of `capacity` bytes whose free blocks file data took, committed.
    static func volumeFullOfData(capacity: UInt64) throws -> TreeVolume {
        let disk = MemoryImageStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        let files = try volume.fileBlocks()
        while (try? files.allocate(byteCount: 1 << 20)) != nil {}
        while (try? files.allocate(byteCount: 64 << 10)) != nil {}
        try volume.commit()
        return volume
    }

    static let file = InodeItem(type: 8, permissions: 0o644, uid: 0, gid: 0, linkCount: 1, size: 0, rdev: 0,
                                accessTime: .init(seconds: 0, nanoseconds: 0), modificationTime: .init(seconds: 0, nanoseconds: 0),
                                changeTime: .init(seconds: 0, nanoseconds: 0), birthTime: .init(seconds: 0, nanoseconds: 0),
                                parent: 1, nextIndex: 0)
    static let root = InodeItem(type: 4, permissions: 0o755, uid: 0, gid: 0, linkCount: 2, size: 0, rdev: 0,
                                accessTime: .init(seconds: 0, nanoseconds: 0), modificationTime: .init(seconds: 0, nanoseconds: 0),
                                changeTime: .init(seconds: 0, nanoseconds: 0), birthTime: .init(seconds: 0, nanoseconds: 0),
                                parent: 1, nextIndex: 3)
}
