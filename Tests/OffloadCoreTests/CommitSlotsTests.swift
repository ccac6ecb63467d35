import XCTest
import OffloadCore
import OffloadSimulation

/// Format 2's commit slots on a storage: each commit goes to the slot that does not hold
/// the current one, with one sync; a torn newest slot leaves the one before; neither slot
/// holding a commit is damage that names both.
final class CommitSlotsTests: XCTestCase {
    func slot(_ generation: UInt64) -> CommitSlot {
        CommitSlot(imageID: 77, generation: generation, cleanlyUnmounted: false, capacityIsSet: false, capacityBytes: 1 << 30,
                   unmountError: 0, nameHashKey: SipHash24(key0: 1, key1: 2), filesystemTree: nil, blockTree: nil,
                   journal: LogSegment(start: 8192, length: 4096), journalSequence: generation, nextInode: 2,
                   inodeCount: 1, usedBlocks: generation)
    }

    func testCommitsAlternateSlotsWithOneSyncAndATornSlotFallsBackToThePreviousCommit() throws {
        let storage = CrashSimulatingStorage(maximumBytes: 1 << 20)
        try storage.setLength(1 << 20)
        for generation in 1...5 as ClosedRange<UInt64> {
            let syncs = storage.syncCount
            try CommitSlots.write(slot(generation), to: storage)
            XCTAssertEqual(storage.syncCount, syncs + 1)
            let read = try CommitSlots.read(storage)
            XCTAssertEqual(read.current, slot(generation))
            XCTAssertEqual(read.previous, generation > 1 ? slot(generation - 1) : nil)
        }
        // Generation 5 is in slot 1: tear it, and generation 4 is the current commit.
        try Array(repeating: UInt8(0xEE), count: 100).withUnsafeBytes { try storage.write($0, at: 4096 + 150) }
        XCTAssertEqual(try CommitSlots.read(storage).current, slot(4))
        XCTAssertNil(try CommitSlots.read(storage).previous)
        try Array(repeating: UInt8(0xEE), count: 100).withUnsafeBytes { try storage.write($0, at: 150) }
        XCTAssertThrowsError(try CommitSlots.read(storage)) { error in
            guard case .damagedImage(let why)? = error as? FSError else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("slot 0") && why.contains("slot 1"), why)
        }
    }
}
