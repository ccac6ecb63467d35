import Foundation
import XCTest
@testable import OffloadCore
import Synchronization

final class BackingStoreTests: XCTestCase {
    func testANewImageIsCreatedAndGrowsWhileSlicesStayValid() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 1 << 30)
        XCTAssertTrue(FileManager.default.fileExists(atPath: image.path))
        let first = try store.allocate(byteCount: 4096)
        let slice = store.bytes(at: first.lowerBound, count: 4096)
        try store.copyIn([UInt8](repeating: 42, count: 4096), to: first.lowerBound)
        // Grow the image well past its first size; the first slice's address stays valid.
        var ranges: [Range<UInt64>] = []
        for _ in 0..<64 { ranges.append(try store.allocate(byteCount: 1 << 20)) }
        XCTAssertEqual(slice.baseAddress, store.bytes(at: first.lowerBound, count: 1).baseAddress)
        XCTAssertTrue(slice.allSatisfy { $0 == 42 })
        XCTAssertGreaterThanOrEqual(store.statistics.imageBytes, 64 << 20)
        XCTAssertEqual(store.statistics.liveBytes, (64 << 20) + 4096)
        for r in ranges { store.release(r) }
        store.release(first)
        XCTAssertEqual(store.statistics.liveBytes, 0)
        try store.checkInvariants()
    }

    func testFreedRangesAreReusedZeroedAndPunched() throws {
        let image = TemporaryImage()
        let store = try image.makeStore()
        let a = try store.allocate(byteCount: 1 << 20)
        try store.copyIn([UInt8](repeating: 0xAB, count: 1 << 20), to: a.lowerBound)
        let diskBefore = store.statistics.diskBytes
        XCTAssertGreaterThanOrEqual(diskBefore, 1 << 20)
        store.release(a)
        XCTAssertLessThanOrEqual(store.statistics.diskBytes + (1 << 20), diskBefore, "released blocks go back to the disk")
        let b = try store.allocate(byteCount: 8192)
        XCTAssertEqual(b.lowerBound, a.lowerBound, "freed space is reused before the image grows")
        XCTAssertTrue(store.bytes(at: b.lowerBound, count: 8192).allSatisfy { $0 == 0 }, "reused blocks never show old bytes")
        store.release(b)
        try store.checkInvariants()
    }

    func testContiguousAllocationFollowsTheHint() throws {
        let store = try TemporaryImage().makeStore()
        let a = try store.allocate(byteCount: 4096)
        _ = try store.allocate(byteCount: 4096)  // someone else's block right after
        let c = try store.allocate(byteCount: 4096)
        store.release(c)
        let d = try store.allocate(byteCount: 4096, hint: c.lowerBound)
        XCTAssertEqual(d, c)
        let e = try store.allocate(byteCount: 4096, hint: a.upperBound)
        XCTAssertNotEqual(e.lowerBound, a.upperBound, "an occupied hint is not handed out twice")
        try store.checkInvariants()
    }

    func testReferenceCountsAcrossRetainAndRelease() throws {
        let store = try TemporaryImage().makeStore()
        let r = try store.allocate(byteCount: 3 * 4096)
        try store.retain(r.lowerBound + 4000..<r.lowerBound + 4200)  // touches blocks 0 and 1
        XCTAssertEqual(store.referenceCount(atByte: r.lowerBound), 2)
        XCTAssertEqual(store.referenceCount(atByte: r.lowerBound + 4096), 2)
        XCTAssertEqual(store.referenceCount(atByte: r.lowerBound + 8192), 1)
        XCTAssertFalse(store.isExclusive(r))
        XCTAssertTrue(store.isExclusive(r.lowerBound + 8192..<r.upperBound))
        store.release(r)
        XCTAssertEqual(store.statistics.liveBytes, 2 * 4096)
        store.release(r.lowerBound + 4000..<r.lowerBound + 4200)
        XCTAssertEqual(store.statistics.liveBytes, 0)
        XCTAssertThrowsError(try store.retain(r)) { guard case .invalidArgument = $0 as? FSError else { return XCTFail() } }
        try store.checkInvariants()
    }

    func testCapacityIsEnforced() throws {
        let store = try TemporaryImage().makeStore(capacityBytes: 16 << 10)
        let a = try store.allocate(byteCount: 16 << 10)
        XCTAssertThrowsError(try store.allocate(byteCount: 1)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        store.release(a)
        _ = try store.allocate(byteCount: 1)
    }

    func testFragmentedFreeSpaceIsHandedOutInPieces() throws {
        let store = try TemporaryImage().makeStore(capacityBytes: 8 * 4096)
        let blocks = try (0..<8).map { _ in try store.allocate(byteCount: 4096) }
        for (i, b) in blocks.enumerated() where i % 2 == 0 { store.release(b) }
        let piece = try store.allocate(byteCount: 3 * 4096)
        XCTAssertEqual(piece.count, 4096, "no free run of three blocks: one block now, the caller asks again")
        try store.checkInvariants()
    }

    func testPathsThatAreNotImagesGiveClearErrors() throws {
        let image = TemporaryImage()
        XCTAssertThrowsError(try BackingStore(path: image.directory.path, capacityBytes: 1 << 20)) { error in
            XCTAssertTrue("\(error)".contains("Is a directory") || "\(error)".contains("not a regular file"), "\(error)")
        }
        XCTAssertThrowsError(try BackingStore(path: image.directory.path + "/missing/x.img", capacityBytes: 1 << 20)) { error in
            XCTAssertTrue("\(error)".contains("No such file or directory"), "\(error)")
        }
        XCTAssertThrowsError(try BackingStore(path: "/dev/null", capacityBytes: 1 << 20)) { error in
            XCTAssertTrue("\(error)".contains("not a regular file"), "\(error)")
        }
        let foreign = image.directory.appendingPathComponent("photo.png").path
        _ = FileManager.default.createFile(atPath: foreign, contents: Data([0x89, 0x50, 0x4E, 0x47]))
        XCTAssertThrowsError(try BackingStore(path: foreign, capacityBytes: 1 << 20)) {
            XCTAssertTrue("\($0)".contains("is not an offloadfs image"), "\($0)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: foreign)), Data([0x89, 0x50, 0x4E, 0x47]), "a foreign file is left untouched")
        XCTAssertThrowsError(try BackingStore(path: image.path, capacityBytes: 100)) { guard case .invalidArgument = $0 as? FSError else { return XCTFail() } }
    }

    func testAnImageThatCannotBeOpenedReadWriteGivesTheReason() throws {
        // Root may open any file for writing, except an immutable one.
        let image = TemporaryImage()
        XCTAssertTrue(FileManager.default.createFile(atPath: image.path, contents: nil))
        guard run("/usr/bin/chattr", ["+i", image.path]) else {
            throw XCTSkip("chattr +i is not supported where the temporary directory lives")
        }
        defer { _ = run("/usr/bin/chattr", ["-i", image.path]) }
        XCTAssertThrowsError(try image.makeStore()) { error in
            XCTAssertTrue("\(error)".contains("open image") && "\(error)".contains("not permitted"), "\(error)")
        }
    }

    /// A set capacity is kept in the image and wins over a later default; a default one
    /// is not kept. Neither is raised to the file's length.
    func testACapacitySetOnceIsKeptAndNeverRaisedToTheFileLength() throws {
        let image = TemporaryImage()
        do {
            let store = try BackingStore(path: image.path, capacity: .set(64 << 20))
            XCTAssertEqual(store.capacityBytes, 64 << 20)
            XCTAssertTrue(store.capacityIsSet)
            try store.storage.reserve(0..<(96 << 20))  // a file longer than the capacity
        }
        do {
            let store = try BackingStore(path: image.path, capacity: .kept(default: 1 << 30))
            XCTAssertEqual(store.capacityBytes, 64 << 20, "the kept capacity, not the default, nor the file's 96 MiB")
            XCTAssertTrue(store.capacityIsSet)
            XCTAssertEqual(store.statistics.capacityBytes, 64 << 20)
        }
        let other = TemporaryImage()
        _ = try BackingStore(path: other.path, capacity: .kept(default: 32 << 20))
        let reopened = try BackingStore(path: other.path, capacity: .kept(default: 16 << 20))
        XCTAssertEqual(reopened.capacityBytes, 16 << 20, "a default capacity follows the default of each open")
        XCTAssertFalse(reopened.capacityIsSet)
    }

    func testACapacityBeyondWhatCanBeMappedIsRefused() throws {
        XCTAssertThrowsError(try TemporaryImage().makeStore(capacityBytes: 1 << 50)) { error in
            XCTAssertTrue("\(error)".contains("exceeds"), "\(error)")
        }
    }

    func testAnImageFromANewerFormatIsRefusedByVersion() throws {
        let image = TemporaryImage()
        // A valid superblock whose version says 7, with its checksum recomputed.
        var header = Superblock(imageID: 42, generation: 1, cleanlyUnmounted: true,
                                checkpoint: LogSegment(start: 0, length: 0), checkpointFrames: 0,
                                journal: LogSegment(start: 0, length: 0), journalSequence: 0,
                                capacityBytes: 1 << 20).encoded()
        header.replaceSubrange(16..<20, with: [7, 0, 0, 0])
        header.replaceSubrange(24..<28, with: [0, 0, 0, 0])
        let crc = Checksum.crc32c(Array(header[0..<128]))
        header.replaceSubrange(24..<28, with: withUnsafeBytes(of: crc.littleEndian) { Array($0) })
        XCTAssertTrue(FileManager.default.createFile(atPath: image.path, contents: Data(header + header)))
        XCTAssertThrowsError(try image.makeStore()) { XCTAssertTrue("\($0)".contains("format version 7"), "\($0)") }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image.path)), Data(header + header), "left untouched")
    }

    /// A version field as a person reads it: format 2 and later set the top bit (a
    /// defect hunt saw "format version 2147483651; this offloadfs reads version 1").
    func testVersionFieldsAreNamedAsFormats() {
        XCTAssertEqual(Superblock.versionName(7), "format version 7")
        XCTAssertEqual(Superblock.versionName(CommitSlot.version), "format 2, version field 0x80000002")
        XCTAssertEqual(Superblock.versionName(0x8000_0003), "format 3, version field 0x80000003")
    }

    func testAVersionZeroScratchImageStartsAfreshAsVersionOne() throws {
        let image = TemporaryImage()
        // Version 0: magic, version 0, block size 4096, zeros; then some stale data.
        var header = [UInt8](repeating: 0, count: 4096)
        header.replaceSubrange(0..<16, with: Array("OFFLOADFS-IMAGE\n".utf8))
        header.replaceSubrange(16..<24, with: [0, 0, 0, 0, 0, 16, 0, 0])
        XCTAssertTrue(FileManager.default.createFile(atPath: image.path,
                                                    contents: Data(header + [UInt8](repeating: 0xAB, count: 1 << 20))))
        let store = try image.makeStore()
        guard case .new(let superblock) = store.opened else { return XCTFail("\(store.opened)") }
        XCTAssertEqual(superblock.generation, 0)
        XCTAssertEqual(store.statistics.liveBytes, 0)
        XCTAssertEqual(store.statistics.imageBytes, 8192, "only the two superblocks remain")
        let first = try store.allocate(byteCount: 4096)
        XCTAssertEqual(first.lowerBound, 8192, "blocks 0 and 1 are the superblocks, never file data")
        XCTAssertEqual(Array(store.bytes(at: first.lowerBound, count: 4096)), [UInt8](repeating: 0, count: 4096))
    }

    func testOneImageCannotBeOpenedTwice() throws {
        let image = TemporaryImage()
        let store = try image.makeStore()
        XCTAssertThrowsError(try image.makeStore()) { XCTAssertEqual($0 as? FSError, .busy) }
        _ = store
    }

    /// The image on a tiny tmpfs: running the disk out of space gives ENOSPC, never a
    /// SIGBUS, and space comes back after a release.
    func testAFullDiskGivesNoSpaceInsteadOfACrash() throws {
        let mountPoint = TemporaryImage()
        let mounted = run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint.directory.path])
        guard mounted else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { return XCTFail("cannot mount a tmpfs for the full-disk test") }
            throw XCTSkip("mounting a tmpfs needs root")
        }
        defer { _ = run("/bin/umount", [mountPoint.directory.path]) }
        let limiter = MemoryLimiter(limitBytes: 0)
        var failure: FSError?
        do {
            let store = try BackingStore(path: mountPoint.directory.path + "/img", capacityBytes: 64 << 20)
            let file = OffloadedFile(store: store, limiter: limiter)
            let chunk = [UInt8](repeating: 0x5A, count: 64 << 10)
            var written = 0
            do throws(FSError) {
                while written < 4 << 20 { written += try file.write(at: UInt64(written), bytes: chunk) }
            } catch { failure = error }
            XCTAssertEqual(failure, .noSpace)
            XCTAssertGreaterThan(written, 0)
            XCTAssertEqual(try file.contents(), [UInt8](repeating: 0x5A, count: written), "nothing written before is lost")
            try file.resize(to: 0)
            try file.write(at: 0, bytes: chunk)
            try store.checkInvariants()
        }
    }

    private func run(_ tool: String, _ arguments: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }
}

/// Freed blocks wait in quarantine until a sync; when space runs out, allocations sync
/// and reclaim them, also when several threads run out at once.
final class QuarantineTests: XCTestCase {
    func testFreedBlocksWaitForASyncAndComeBackUnderContention() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 4 << 20)  // 1024 blocks
        store.deferReuse()
        var held: [Range<UInt64>] = []
        while let range = try? store.allocate(byteCount: 64 << 10) { held.append(range) }
        XCTAssertEqual(store.availableBytes, 0)
        for range in held { store.release(range) }
        XCTAssertEqual(store.statistics.quarantinedBytes, 4 << 20, "nothing is reusable before a sync")
        XCTAssertEqual(store.statistics.freeBytes, 0)
        try store.checkInvariants()
        // Eight threads want all of it back at once: the first to run out reclaims, the
        // others wait for that reclaim and find the blocks free. Nobody crashes or gets
        // ENOSPC while the space is there.
        let failures = Atomic<Int>(0)
        let granted = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<8 {
                do {
                    let range = try store.allocate(byteCount: 64 << 10)
                    granted.add(Int(range.length), ordering: .relaxed)
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)
        XCTAssertEqual(granted.load(ordering: .relaxed), 4 << 20)
        XCTAssertEqual(store.statistics.quarantinedBytes, 0)
        try store.checkInvariants()
    }
}
