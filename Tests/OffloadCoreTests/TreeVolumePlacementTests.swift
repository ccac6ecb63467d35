import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// A commit's placement of RAM pieces (docs/ARCHITECTURE.md, "Placed bytes written in
/// runs, fresh blocks with pwrite"): blocks taken a chunk at a time with one fallocate
/// each (`PlacementBlocks`), bytes written a run at a time (`PlacedBytesWriter`), every
/// file's bytes where its extents say, the block tree's data runs what the extents
/// reference, and the unused rest of the last chunk free again.
final class TreeVolumePlacementTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20

    /// A disk with room for small fallocates only, once armed: every chunk is refused.
    final class ShortDiskStorage: ForwardingImageStorage, @unchecked Sendable {
        let armed = PthreadMutex(false)
        let refused = PthreadMutex(0)
        init(maximumBytes: Int) { super.init(MemoryImageStorage(maximumBytes: maximumBytes)) }
        override func reserve(_ range: Range<UInt64>) throws(FSError) {
            if armed.withLock({ $0 }), range.count >= Int(PlacementBlocks.chunkBlocks) << BackingStore.blockShift {
                refused.withLock { $0 += 1 }
                throw .noSpace
            }
            try super.reserve(range)
        }
    }

    /// Files `/f0`, `/f1`... (inodes 2, 3...) holding `contents`, as RAM pieces of one
    /// generation; returns them by inode.
    static func makeFiles(_ contents: [[UInt8]], in volume: TreeVolume) throws -> [UInt64: [UInt8]] {
        var root = NamespaceChangeScript.inode(type: 4, links: 2, parent: 1, nextIndex: 3)
        try volume.perform([.attributes(inode: 1, root)])
        var files: [UInt64: [UInt8]] = [:]
        for (i, bytes) in contents.enumerated() {
            let inode = UInt64(i + 2)
            files[inode] = bytes
            root.nextIndex += 1
            try volume.perform([
                .attributes(inode: inode, NamespaceChangeScript.inode(type: 8, links: 1, size: UInt64(bytes.count))),
                .link(directory: 1, NamedEntry(name: Array("f\(i)".utf8), child: inode, type: 8, index: root.nextIndex - 1)),
                .attributes(inode: 1, root),
                .fileRange(inode: inode, size: UInt64(bytes.count), range: 0..<UInt64(bytes.count),
                           pieces: [FilePiece(offset: 0, extent: .inMemory(bytes))]),
            ])
        }
        return files
    }

    /// Reopened, every file reads back, the data runs are the extents' references, and
    /// fsck finds nothing.
    static func assertEveryFileReadsBack(_ files: [UInt64: [UInt8]], reopening storage: any ImageStorage) throws {
        let volume = try TreeVolume.open(storage)
        var contents = VolumeFileContents()
        for (inode, bytes) in files {
            XCTAssertEqual(try contents.bytes(of: inode, size: bytes.count, in: volume), bytes, "inode \(inode)")
        }
        XCTAssertNil(try contents.dataRunMismatch(in: volume))
        let check = try VolumeCheck.run(storage)
        XCTAssertTrue(check.problems.isEmpty, "\(check.problems.prefix(5))")
    }

    /// 600 files of 1,025 to 9,000 bytes in one generation: the commit takes their blocks
    /// in a few chunks (one fallocate each; one a file before) and writes their bytes in a
    /// few runs; reopened, every file reads back, the data runs match the extents, and no
    /// block stays taken but the metadata reserve's.
    func testACommitPlacesManySmallFilesInChunksAndRuns() throws {
        let storage = CallRecordingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(storage, capacityBytes: Self.capacity, imageID: 7,
                                           nameHashKey: SipHash24(key0: 1, key1: 2))
        var rng = SplitMix64(seed: 11)
        let count = 600
        let files = try Self.makeFiles((0..<count).map { _ in
            let size = Int.random(in: (ExtentItem.inlineLimit + 1)...9_000, using: &rng)
            return (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }, in: volume)
        storage.reset()
        let report = try volume.commit()
        XCTAssertEqual(report.placedBytes, files.values.reduce(0) { $0 + $1.count })
        XCTAssertLessThan(storage.count(.reserve), count / 4, "fallocates: a chunk of blocks at a time, not one a file")
        XCTAssertLessThan(storage.count(.writeFresh), count / 20, "writes: a run of consecutive blocks at a time")
        _ = volume.waitForPunches()
        // What the last chunk left went back to the free space: no block is taken but
        // the metadata reserve's and the journal's spare segments' (taken, recorded once
        // linked; the commit may leave some).
        var unaccounted = volume.space.taken
        unaccounted.subtract(volume.space.reserve)
        for spare in try XCTUnwrap(volume.journalLock.withLock { volume.journal?.spareRanges }) {
            unaccounted.remove(contentsOf: spare.lowerBound >> BackingStore.blockShift..<spare.upperBound >> BackingStore.blockShift)
        }
        XCTAssertTrue(unaccounted.isEmpty, "taken and neither recorded, reserved nor a spare: \(unaccounted.ranges.prefix(3))")
        try Self.assertEveryFileReadsBack(files, reopening: storage)
    }

    /// When the disk under the image refuses a chunk, the commit places every piece
    /// through the block space's own allocation (one fallocate a piece, the metadata
    /// reserve behind it) and asks for a chunk once, not once a file; every file reads
    /// back and fsck finds nothing.
    func testADiskThatRefusesAChunkPlacesPieceByPiece() throws {
        let storage = ShortDiskStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(storage, capacityBytes: Self.capacity, imageID: 8,
                                           nameHashKey: SipHash24(key0: 3, key1: 4))
        let files = try Self.makeFiles((0..<50).map { i in
            (0..<(2_000 + 37 * i)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ i) }
        }, in: volume)
        storage.armed.withLock { $0 = true }
        try volume.commit()
        XCTAssertEqual(storage.refused.withLock { $0 }, 1, "a chunk is asked for once a commit")
        _ = volume.waitForPunches()
        try Self.assertEveryFileReadsBack(files, reopening: storage)
    }
}
