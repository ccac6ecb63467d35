import XCTest
@testable import OffloadCore
import OffloadSimulation

/// The free space scrubbed where allocations go (docs/ARCHITECTURE.md, "The free space
/// scrubbed where allocations go"): what a crashed mount left in blocks the block tree
/// holds free never shows in a file, not even after a later power cut that keeps a
/// write's frame but not its bytes; what replay claims is not scrubbed; a clean image has
/// nothing to scrub.
final class FreeSpaceScrubTests: XCTestCase {
    static let capacity = VolumeFileBlocksTests.capacity
    static let leftover = VolumeFileBlocksTests.leftover

    /// A volume with four empty files (inodes 2 to 5), committed, on a simulated disk.
    func newVolume() throws -> (CrashSimulatingStorage, TreeVolume) {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7,
                                           nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform((2...5).map { .attributes(inode: $0, NamespaceChangeScript.inode(type: 8, links: 1)) })
        try volume.commit()
        return (disk, volume)
    }

    /// The volume the image on `disk` opens to after a kill (its memory gone). With
    /// `leavingBytes`, what a crashed mount may leave in the free space is in it too:
    /// `VolumeFileBlocksTests.leftover` over every block `volume`'s block tree holds free
    /// but what `volume` took for its journal and files (its reserve included), durable.
    func reopenAfterAKill(_ disk: CrashSimulatingStorage, of volume: TreeVolume,
                          leavingBytes: Bool) throws -> (CrashSimulatingStorage, TreeVolume) {
        var image = disk.crashImage { _, _ in true }
        if leavingBytes {
            try VolumeFileBlocksTests.leaveBytesInTheFreeSpace(of: volume, in: &image)
            XCTAssertTrue(image.contains(Self.leftover), "no free block to leave bytes in")
        }
        let reopened = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image)
        return (reopened, try TreeVolume.open(reopened))
    }

    /// File `inode`'s bytes in `volume`'s tree (its journal replayed by the opening).
    func bytes(of inode: UInt64, in volume: TreeVolume) throws -> [UInt8] {
        var contents = VolumeFileContents()
        let size = Int(try XCTUnwrap(volume.filesystem.inode(inode)).size)
        return try XCTUnwrap(contents.bytes(of: inode, size: size, in: volume), "an extent past the size")
    }

    /// The defect: after a kill that left bytes in the free space, a write takes such
    /// blocks; a power cut that writes back the write's frame but not its bytes brings the
    /// file back showing what the crashed mount left there.
    func testAWriteAfterACrashNeverShowsWhatTheCrashLeftInTheFreeSpace() throws {
        let (disk, volume) = try newVolume()
        let (reopenedDisk, reopened) = try reopenAfterAKill(disk, of: volume, leavingBytes: true)
        let (files, journals) = try VolumeFileBlocksTests.openFiles(reopened, models: nil)
        // Large enough to reach past the blocks the opening's commit took and gave back.
        let written = [UInt8](repeating: 0x5A, count: 4 << 20)
        try files[0].write(at: 0, bytes: written)
        XCTAssertNil(journals[0].failure)
        // Every page written since the last sync comes back but the file's bytes.
        let image = reopenedDisk.crashImage { _, bytes in !bytes.allSatisfy { $0 == 0x5A } }
        let recovered = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image))
        let found = try bytes(of: 2, in: recovered)
        XCTAssertEqual(found.count, written.count, "the write's frame was not kept: the case is not the one tested")
        XCTAssertFalse(found.contains(Self.leftover), "the file shows bytes the crashed mount left in the free space")
        XCTAssertTrue(found.allSatisfy { $0 == 0 || $0 == 0x5A })
        XCTAssertGreaterThan(reopened.scrubbedRunCount, 0)
    }

    /// After the reopening, every free block of the groups loaded reads as zeros, now and
    /// after any power cut; later commits find nothing more to punch (a group loaded
    /// again is not scrubbed again: `BlockSpaceScrubTests`).
    func testTheGroupsLoadedReadAsZerosAndLaterCommitsFindNothingToPunch() throws {
        let (disk, volume) = try newVolume()
        let (reopenedDisk, reopened) = try reopenAfterAKill(disk, of: volume, leavingBytes: true)
        let space = reopened.space
        XCTAssertGreaterThan(space.scrubbedGroups.count, 0, "the opening's commit loaded no group")
        let scrubbed = reopened.scrubbedRunCount
        let (files, _) = try VolumeFileBlocksTests.openFiles(reopened, models: nil)
        for k in 0..<3 {
            try files[k].write(at: 0, bytes: [UInt8](repeating: UInt8(k + 1), count: 40_000))
            try reopened.commit()
        }
        XCTAssertEqual(reopened.scrubbedRunCount, scrubbed, "later allocations punched more")
        try reopened.spaceLock.withLock { () throws(FSError) in
            for group in space.scrubbedGroups {
                let blocks = max(space.firstBlock, group * space.blocksPerGroup)..<min(space.endBlock, (group + 1) * space.blocksPerGroup)
                for free in try space.blockTree.freeRanges(in: blocks) where !space.takenBlocks.overlaps(free) {
                    let bytes = (free.lowerBound << BackingStore.blockShift)..<(free.upperBound << BackingStore.blockShift)
                    XCTAssertFalse(reopenedDisk.mayHoldData(bytes), "free blocks \(free) may read as non-zero")
                }
            }
        }
    }

    /// What replay finds in use is claimed before anything is scrubbed: a write the killed
    /// daemon answered, never committed, keeps its bytes though its blocks are free in the
    /// block tree.
    func testBlocksReplayClaimsKeepTheirBytes() throws {
        let (disk, volume) = try newVolume()
        let (files, _) = try VolumeFileBlocksTests.openFiles(volume, models: nil)
        let written = [UInt8](repeating: 0x5A, count: 64 << 10)
        try files[1].write(at: 0, bytes: written)
        let (_, reopened) = try reopenAfterAKill(disk, of: volume, leavingBytes: true)
        XCTAssertGreaterThan(reopened.blocksClaimedAtOpen, 0, "nothing was claimed: the case is not the one tested")
        XCTAssertGreaterThan(reopened.scrubbedRunCount, 0)
        XCTAssertTrue(try bytes(of: 3, in: reopened) == written, "the replayed write lost its bytes")
    }

    /// A cleanly closed volume leaves its free space reading as zeros: reopened, it finds
    /// nothing to scrub.
    func testACleanImageHasNothingToScrub() throws {
        let (disk, volume) = try newVolume()
        let (files, _) = try VolumeFileBlocksTests.openFiles(volume, models: nil)
        for k in 0..<4 { try files[k].write(at: UInt64(k) * 5000, bytes: [UInt8](repeating: 0x21, count: 30_000)) }
        try volume.commit()
        try files[2].truncate()
        try files[3].write(at: 0, bytes: [UInt8](repeating: 0x22, count: 8192))
        try volume.close()
        let (_, reopened) = try reopenAfterAKill(disk, of: volume, leavingBytes: false)
        XCTAssertGreaterThan(reopened.space.scrubbedGroups.count, 0)
        XCTAssertEqual(reopened.scrubbedRunCount, 0)
    }
}
