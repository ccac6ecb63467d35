import Foundation
import Glibc
import XCTest
@testable import OffloadCore
import CLinuxShims
import OffloadSimulation
import SplitMix

/// `ImageStorage.zero`, what a file's fallocate does to the blocks it maps unwritten
/// (docs/ARCHITECTURE.md, "What a crash leaves in the free space"): the range reads as
/// zeros, through the mapping and `read`, keeps its disk space, and nothing around it
/// changes; where the file system has no zero range, a punch and a reservation; where it
/// cannot punch either, written zeros.
final class ImageStorageZeroTests: XCTestCase {
    static let pattern = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) | 1 }

    static func put(_ bytes: [UInt8], at offset: UInt64, on storage: any ImageStorage) throws {
        try bytes.withUnsafeBytes { buffer in
            try Result { () throws(FSError) in try storage.write(buffer, at: offset) }.get()
        }
    }

    /// Writes the pattern over the first 256 KiB, zeroes 64..<192 KiB, and checks the bytes.
    func zeroTheMiddle(of storage: any ImageStorage, mapping: UnsafeMutableRawPointer) throws {
        try Self.put(Self.pattern, at: 0, on: storage)
        try storage.zero(65_536..<196_608)
        var read = [UInt8](repeating: 0xFF, count: 256 << 10)
        let n = try read.withUnsafeMutableBytes { try storage.read(into: $0, at: 0) }
        XCTAssertEqual(n, 256 << 10)
        let mapped = [UInt8](UnsafeRawBufferPointer(start: mapping, count: 256 << 10))
        for bytes in [read, mapped] {
            XCTAssertTrue(bytes[0..<65_536] == Self.pattern[0..<65_536], "bytes before the range changed")
            XCTAssertTrue(bytes[65_536..<196_608].allSatisfy { $0 == 0 }, "the range does not read as zeros")
            XCTAssertTrue(bytes[196_608...] == Self.pattern[196_608...], "bytes after the range changed")
        }
    }

    func testAFileOnThisFileSystemZeroesTheRangeAndKeepsItsDiskSpace() throws {
        let image = TemporaryImage()
        do {
            let storage = try FileImageStorage(path: image.path)
            try storage.reserve(0..<(1 << 20))
            let mapping = try storage.map(byteCount: 1 << 20)
            try storage.sync()
            let before = storage.diskBytes
            try zeroTheMiddle(of: storage, mapping: mapping)
            XCTAssertGreaterThanOrEqual(storage.diskBytes, before, "the zeroed range gave its disk space back")
            XCTAssertEqual(storage.length, 1 << 20)
            try storage.sync()
        }
        // Reopened (the writer closed): the zeros are the file's, not only the page cache's.
        let again = try FileImageStorage(path: image.path, readOnly: true)
        var read = [UInt8](repeating: 0xFF, count: 131_072)
        _ = try read.withUnsafeMutableBytes { try again.read(into: $0, at: 65_536) }
        XCTAssertTrue(read.allSatisfy { $0 == 0 })
        XCTAssertThrowsError(try again.zero(0..<4096)) { XCTAssertEqual($0 as? FSError, .readOnly) }
    }

    /// `mayHoldData` on this file system: false for a reserved range never written, also
    /// with its pages read into the page cache (which SEEK_DATA counts as data); true once
    /// a byte is written back; after a zero range or a punch, true until a sync makes it
    /// durable, then false.
    func testAFileTellsWhichRangesMayHoldData() throws {
        let image = TemporaryImage()
        var type = 0
        guard offloadfs_filesystem_type(image.directory.path, &type) == 0,
              [0xEF53, 0x5846_5342, 0x9123_683E].contains(type) else {
            throw XCTSkip("the temporary directory is not on ext4, XFS or btrfs (SEEK_DATA, FIEMAP, zero range)")
        }
        let storage = try FileImageStorage(path: image.path)
        try storage.reserve(0..<(1 << 20))
        let mapping = try storage.map(byteCount: 1 << 20)
        XCTAssertFalse(storage.mayHoldData(0..<(1 << 20)))
        // Every page read through the mapping: cached, all zeros. (SEEK_DATA now finds
        // data at 0: the pages and the extents are asked.)
        let sum = (0..<256).reduce(0) { $0 + Int(mapping.load(fromByteOffset: $1 * 4096, as: UInt8.self)) }
        XCTAssertEqual(sum, 0)
        XCTAssertFalse(storage.mayHoldData(0..<(1 << 20)))
        // One byte through the mapping, written back: written data on disk.
        mapping.storeBytes(of: 1, toByteOffset: 200_000, as: UInt8.self)
        try storage.sync()
        XCTAssertTrue(storage.mayHoldData(0..<(1 << 20)))
        XCTAssertTrue(storage.mayHoldData(196_608..<200_704))
        XCTAssertFalse(storage.mayHoldData(0..<196_608))
        XCTAssertFalse(storage.mayHoldData(200_704..<(1 << 20)))
        try storage.zero(196_608..<200_704)
        XCTAssertTrue(storage.mayHoldData(196_608..<200_704), "a zero range no sync made durable")
        XCTAssertFalse(storage.mayHoldData(200_704..<(1 << 20)))
        try storage.sync()
        XCTAssertFalse(storage.mayHoldData(0..<(1 << 20)))
        let page = [UInt8](repeating: 1, count: 4096)
        try page.withUnsafeBytes { bytes in try Result { () throws(FSError) in try storage.writeFresh(bytes, at: 299_008) }.get() }
        try storage.sync()
        XCTAssertTrue(storage.mayHoldData(0..<(1 << 20)))
        try storage.punch(299_008..<303_104)
        XCTAssertTrue(storage.mayHoldData(299_008..<303_104), "a punch no sync made durable")
        try storage.sync()
        XCTAssertFalse(storage.mayHoldData(0..<(1 << 20)))
    }

    /// Punch and reserve (the simulated disks of the tests, tmpfs): zeros, and the length
    /// grows to cover a range past it, as `reserve` does.
    func testWithoutAZeroRangeAPunchAndAReservation() throws {
        let storage = CrashSimulatingStorage(maximumBytes: 1 << 20)
        try storage.reserve(0..<(256 << 10))
        let mapping = try storage.map(byteCount: 1 << 20)
        try zeroTheMiddle(of: storage, mapping: mapping)
        try storage.zero((512 << 10)..<(576 << 10))
        XCTAssertEqual(storage.length, 576 << 10)
    }

    /// A file system that can neither zero nor punch a range: zeros written over it.
    final class NoPunchStorage: ForwardingImageStorage, @unchecked Sendable {
        override func punch(_ range: Range<UInt64>) throws(FSError) { throw .notSupported }
        override func zero(_ range: Range<UInt64>) throws(FSError) { try zeroByPunching(range) }
    }

    func testWithoutAPunchZerosAreWritten() throws {
        let storage = NoPunchStorage(MemoryImageStorage(maximumBytes: 1 << 20))
        try storage.reserve(0..<(256 << 10))
        let mapping = try storage.map(byteCount: 1 << 20)
        try zeroTheMiddle(of: storage, mapping: mapping)
    }

    /// A zeroing that fails fails the fallocate (the free space holds bytes a crash could
    /// have left): the file is as it was, and once committed
    /// every file reads as its model and the block tree's data runs hold exactly the
    /// references the extents take (no block of the failed call is kept).
    func testAFailedZeroingFailsThePreallocationAndKeepsNoBlock() throws {
        let disk = FaultInjectingStorage(MemoryImageStorage(maximumBytes: Int(VolumeFileBlocksTests.capacity)))
        let volume = try TreeVolume.format(disk, capacityBytes: VolumeFileBlocksTests.capacity, imageID: 3,
                                           nameHashKey: SipHash24(key0: 3, key1: 4))
        try volume.perform((2...5).map { .attributes(inode: $0, NamespaceChangeScript.inode(type: 8, links: 1)) })
        let (files, _) = try VolumeFileBlocksTests.openFiles(volume, models: nil)
        let bytes = [UInt8](repeating: 0x5A, count: 10_000)
        try files[0].write(at: 0, bytes: bytes)
        // What a crash may leave: bytes in every free block.
        var free = RangeSet(try volume.space.blockTree.freeRanges(in: volume.space.firstBlock..<volume.space.endBlock))
        free.subtract(volume.space.taken)
        for blocks in free.ranges {
            try Self.put([UInt8](repeating: 0xEE, count: blocks.count << 12), at: blocks.lowerBound << 12, on: disk)
        }
        disk.inject(.init(.zero, error: .io("injected")))
        XCTAssertThrowsError(try files[0].preallocate(0..<(1 << 20), keepSize: false)) {
            XCTAssertEqual($0 as? FSError, .io("injected"))
        }
        XCTAssertEqual(disk.failures(of: .zero), 1)
        XCTAssertEqual(files[0].size, 10_000)
        XCTAssertTrue(try files[0].read(at: 0, count: 20_000) == bytes)
        try files[0].preallocate(0..<(1 << 20), keepSize: false)
        XCTAssertTrue(try files[0].read(at: 10_000, count: 1 << 20) == [UInt8](repeating: 0, count: (1 << 20) - 10_000))
        try volume.commit()
        try VolumeFileBlocksTests.check(volume, [bytes + [UInt8](repeating: 0, count: (1 << 20) - 10_000), [], [], []],
                                        "after the fallocate")
    }

    /// With bytes in the free space, a preallocation zeroes the blocks it takes and syncs
    /// before anything else is written (its journal frame): no power cut keeps the frame
    /// without the zeros. With none, it neither zeroes nor syncs.
    func testAPreallocationSyncsItsZerosBeforeItsFrame() throws {
        for leftovers in [true, false] {
            let disk = CallRecordingStorage(maximumBytes: Int(VolumeFileBlocksTests.capacity))
            let volume = try TreeVolume.format(disk, capacityBytes: VolumeFileBlocksTests.capacity, imageID: 9,
                                               nameHashKey: SipHash24(key0: 9, key1: 9))
            try volume.perform((2...5).map { .attributes(inode: $0, NamespaceChangeScript.inode(type: 8, links: 1)) })
            let (files, _) = try VolumeFileBlocksTests.openFiles(volume, models: nil)
            if leftovers {
                var free = RangeSet(try volume.space.blockTree.freeRanges(in: volume.space.firstBlock..<volume.space.endBlock))
                free.subtract(volume.space.taken)
                for blocks in free.ranges {
                    try Self.put([UInt8](repeating: 0xEE, count: blocks.count << 12), at: blocks.lowerBound << 12, on: disk)
                }
            }
            disk.reset()
            try files[1].preallocate(0..<(1 << 20), keepSize: false)
            let calls = disk.calls.map { $0 == .writeFresh ? .write : $0 }
            XCTAssertTrue(try files[1].read(at: 0, count: 1 << 20) == [UInt8](repeating: 0, count: 1 << 20))
            if leftovers {
                let zero = try XCTUnwrap(calls.firstIndex(of: .zero), "\(calls)")
                let sync = try XCTUnwrap(calls[zero...].firstIndex(of: .sync), "no sync after the zeroing: \(calls)")
                XCTAssertFalse(calls[zero..<sync].contains(.write), "written between the zeroing and its sync: \(calls)")
                XCTAssertTrue(calls[sync...].contains(.write), "no frame after the sync: \(calls)")
                XCTAssertEqual(calls.filter { $0 == .sync }.count, 1, "\(calls)")
            } else {
                XCTAssertFalse(calls.contains(.zero) || calls.contains(.sync), "\(calls)")
                XCTAssertTrue(calls.contains(.write), "no frame: \(calls)")
            }
        }
    }
}
