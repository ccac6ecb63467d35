import XCTest
@testable import OffloadCore

/// Named behaviours of `OffloadedFile`, each a contract the FUSE layer relies on.
final class OffloadedFileTests: XCTestCase {
    var image: TemporaryImage!
    var store: BackingStore!
    var limiter: MemoryLimiter!

    override func setUpWithError() throws {
        image = TemporaryImage()
        store = try image.makeStore(capacityBytes: 256 << 20)
        limiter = MemoryLimiter(limitBytes: 0)
    }

    override func tearDownWithError() throws {
        try store.checkInvariants()
        store = nil
        image = nil
    }

    func makeFile(memoryLimit: Int? = nil) -> OffloadedFile {
        OffloadedFile(store: store, limiter: memoryLimit.map { MemoryLimiter(limitBytes: $0) } ?? limiter)
    }

    func testZeroLengthWritePastEndChangesNothing() throws {
        let file = makeFile()
        XCTAssertEqual(try file.write(at: 1 << 40, bytes: []), 0)
        XCTAssertEqual(file.size, 0)
        XCTAssertEqual(file.extentCount, 0)
    }

    func testWritePastEndLeavesAHoleThatStoresNothing() throws {
        let file = makeFile()
        let offset: UInt64 = 5 << 30  // past 4 GiB
        try file.write(at: offset, bytes: [1, 2, 3])
        XCTAssertEqual(file.size, offset + 3)
        XCTAssertEqual(try file.read(at: offset - 2, count: 10), [0, 0, 1, 2, 3])
        XCTAssertEqual(file.allocatedByteCount, 3)
        XCTAssertEqual(try file.nextData(from: 0), offset)
        XCTAssertEqual(try file.nextHole(from: 0), 0)
        XCTAssertEqual(try file.nextHole(from: offset), offset + 3)
        XCTAssertEqual(store.statistics.liveBytes, 4096)
    }

    func testOffsetsPastTheMaximumSizeAreRefusedWithoutOverflow() throws {
        let file = makeFile()
        let max = OffloadedFile.maximumSize
        XCTAssertThrowsError(try file.write(at: max, bytes: [1])) { XCTAssertEqual($0 as? FSError, .fileTooLarge) }
        XCTAssertThrowsError(try file.write(at: .max, bytes: [1])) { XCTAssertEqual($0 as? FSError, .fileTooLarge) }
        XCTAssertThrowsError(try file.write(at: .max - 1, bytes: [1, 2, 3])) { XCTAssertEqual($0 as? FSError, .fileTooLarge) }
        XCTAssertThrowsError(try file.resize(to: max + 1)) { XCTAssertEqual($0 as? FSError, .fileTooLarge) }
        XCTAssertThrowsError(try file.punchHole(.max - 10 ..< .max)) { XCTAssertEqual($0 as? FSError, .fileTooLarge) }
        XCTAssertThrowsError(try file.cloneRange(from: file, sourceOffset: .max - 1, count: 5, to: 0)) {
            XCTAssertEqual($0 as? FSError, .fileTooLarge)
        }
        try file.write(at: max - 1, bytes: [9])
        XCTAssertEqual(file.size, max)
        XCTAssertEqual(try file.read(at: max - 1, count: 100), [9])
        XCTAssertEqual(try file.read(at: .max, count: 100), [])
        XCTAssertEqual(file.allocatedByteCount, 1)
    }

    func testImageRangesOutsideTheStoreAreRefused() throws {
        let file = makeFile()
        XCTAssertThrowsError(try file.write(at: 0, imageRange: 0..<100)) {
            guard case .invalidArgument = $0 as? FSError else { return XCTFail("\($0)") }
        }
        let granted = try store.allocate(byteCount: 4096)
        store.release(granted)
        XCTAssertThrowsError(try file.write(at: 0, imageRange: granted)) {
            guard case .invalidArgument = $0 as? FSError else { return XCTFail("freed range accepted: \($0)") }
        }
        XCTAssertThrowsError(try file.write(at: 0, imageRange: (1 << 40)..<(1 << 40) + 1))
        XCTAssertEqual(file.size, 0, "a refused write changes nothing")
    }

    func testSequentialAppendsMergeIntoOneExtent() throws {
        let file = makeFile()
        let block = [UInt8](repeating: 7, count: 4096)
        for i in 0..<1000 { try file.write(at: UInt64(i) * 4096, bytes: block) }
        XCTAssertEqual(file.extentCount, 1)
        XCTAssertEqual(file.size, 4096 * 1000)
    }

    func testSmallAppendsShareBlocksWhenRAMIsOff() throws {
        let file = makeFile()
        for i in 0..<1000 { try file.write(at: UInt64(i) * 100, bytes: [UInt8](repeating: UInt8(i % 251), count: 100)) }
        XCTAssertEqual(file.extentCount, 1, "appends fill the last block and continue contiguously")
        XCTAssertEqual(store.statistics.liveBytes, 25 * 4096, "100,000 bytes take 25 blocks")
        XCTAssertEqual(try file.read(at: 99_900, count: 100), [UInt8](repeating: UInt8(999 % 251), count: 100))
    }

    func testOverwriteOfExclusiveDataHappensInPlace() throws {
        let file = makeFile()
        try file.write(at: 0, bytes: [UInt8](repeating: 1, count: 64 << 10))
        let before = file.extentList
        try file.write(at: 8192, bytes: [UInt8](repeating: 2, count: 4096))
        XCTAssertEqual(file.extentList.map(\.extent), before.map(\.extent), "no new extent for an in-place overwrite")
        XCTAssertEqual(try file.read(at: 8190, count: 4), [1, 1, 2, 2])
    }

    func testPunchHoleAndTruncateGiveSpaceBack() throws {
        let file = makeFile()
        try file.write(at: 0, bytes: [UInt8](repeating: 3, count: 1 << 20))
        XCTAssertEqual(store.statistics.liveBytes, 1 << 20)
        try file.punchHole(4096..<(1 << 19))
        XCTAssertEqual(store.statistics.liveBytes, (1 << 20) - (1 << 19) + 4096)
        XCTAssertEqual(file.size, 1 << 20)
        XCTAssertEqual(try file.read(at: 4095, count: 2), [3, 0])
        try file.resize(to: 10)
        XCTAssertEqual(store.statistics.liveBytes, 4096)
        try file.truncate()
        XCTAssertEqual(store.statistics.liveBytes, 0)
        // Only the image's growth step (disk reserved ahead of use) may remain.
        let reservedAhead = BackingStore.growthStepBlocks * UInt64(BackingStore.blockSize)
        XCTAssertLessThanOrEqual(store.statistics.diskBytes, reservedAhead, "freed blocks are punched out of the image file")
    }

    func testCloneSharesBlocksAndCopiesOnWrite() throws {
        let a = makeFile(), b = makeFile()
        let data = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try a.write(at: 0, bytes: data)
        let live = store.statistics.liveBytes
        XCTAssertEqual(try b.cloneRange(from: a, sourceOffset: 0, count: 1 << 30, to: 0), UInt64(data.count))
        XCTAssertEqual(store.statistics.liveBytes, live, "a clone shares blocks, it copies no bytes")
        XCTAssertEqual(try b.contents(), data)
        try a.write(at: 100, bytes: [0xFF, 0xFF])
        XCTAssertEqual(try b.read(at: 100, count: 2), [data[100], data[101]], "writing the source leaves the clone alone")
        try b.write(at: 5000, bytes: [0xEE])
        XCTAssertEqual(try a.read(at: 5000, count: 1), [data[5000]], "writing the clone leaves the source alone")
        XCTAssertEqual(store.statistics.liveBytes, live + 2 * 4096, "only the written blocks were copied")
        a.releaseAll()
        XCTAssertEqual(try b.read(at: 0, count: 200), Array(data[0..<200]))
        b.releaseAll()
        XCTAssertEqual(store.statistics.liveBytes, 0)
    }

    func testMemoryLimiterIsChargedAndRefunded() throws {
        let file = makeFile(memoryLimit: 10_000)
        try file.write(at: 0, bytes: [UInt8](repeating: 1, count: 3000))
        let overhead = Extent.memoryPieceOverhead
        XCTAssertEqual(file.limiter.usedBytes, 3000 + overhead, "a RAM piece is charged its bytes and its overhead")
        XCTAssertEqual(store.statistics.liveBytes, 0, "small writes stay in RAM while the budget lasts")
        try file.write(at: 3000, bytes: [UInt8](repeating: 2, count: 3000))
        try file.write(at: 6000, bytes: [UInt8](repeating: 3, count: 3000))
        try file.write(at: 9000, bytes: [UInt8](repeating: 4, count: 3000))
        XCTAssertEqual(file.limiter.usedBytes, 9000 + 3 * overhead, "past the budget, data goes to the image instead of failing")
        XCTAssertEqual(store.statistics.liveBytes, 4096)
        try file.write(at: 0, bytes: [UInt8](repeating: 5, count: 8192))
        XCTAssertLessThan(file.limiter.usedBytes, 9000 + 3 * overhead, "overwriting RAM data refunds it")
        try file.resize(to: 100)
        XCTAssertLessThanOrEqual(file.limiter.usedBytes, 100 + overhead)
        try file.truncate()
        XCTAssertEqual(file.limiter.usedBytes, 0)
        XCTAssertEqual(try file.contents(), [])
    }

    /// A RAM piece is charged its overhead with its bytes, so scattered tiny writes fill
    /// the budget by what they cost the daemon, not by their length: a budget of ten
    /// one-byte pieces holds ten, and the rest go to the image. Charged its length alone,
    /// the budget held all 100 here, and a million such writes took 231 MiB of the daemon
    /// under the default 64 MiB limit while holding 1 MB of it.
    func testScatteredTinyWritesAreChargedWhatTheyCost() throws {
        let perPiece = 1 + Extent.memoryPieceOverhead
        let file = makeFile(memoryLimit: 10 * perPiece)
        for i in 0..<100 { try file.write(at: UInt64(i) * 8192, bytes: [UInt8(i)]) }
        let inRAM = file.extentList.filter { if case .inMemory = $0.extent { return true } else { return false } }
        XCTAssertEqual(inRAM.count, 10, "the budget holds ten pieces of one byte")
        XCTAssertEqual(file.limiter.usedBytes, 10 * perPiece)
        for i in 0..<100 { XCTAssertEqual(try file.read(at: UInt64(i) * 8192, count: 1), [UInt8(i)]) }
        // Pieces that merge are charged one overhead.
        try file.resize(to: 0)
        try file.write(at: 0, bytes: [UInt8](repeating: 7, count: 300))
        try file.write(at: 300, bytes: [UInt8](repeating: 8, count: 300))
        XCTAssertEqual(file.extentCount, 1)
        XCTAssertEqual(file.limiter.usedBytes, 600 + Extent.memoryPieceOverhead)
        try file.truncate()
        XCTAssertEqual(file.limiter.usedBytes, 0)
    }

    /// A change strictly inside one RAM piece changes it in place: a hole punched there
    /// zeroes its bytes, as ext4 zeroes a hole inside a block, and a small write needs no
    /// budget. Before, each cut the piece in two, charged a second overhead past the limit
    /// (2,000 one-byte holes a byte apart in a piece of 4,000 bytes: 47 times a 64 KiB
    /// limit, the review's finding), and a write past the budget went to an image block.
    func testChangesInsideARamPieceKeepItOnePieceWithinTheBudget() throws {
        let charge = 4000 + Extent.memoryPieceOverhead
        let file = makeFile(memoryLimit: charge)
        var model = [UInt8](repeating: 0x79, count: 4000)
        try file.write(at: 0, bytes: model)
        XCTAssertEqual(file.limiter.usedBytes, charge, "setup: the piece is in RAM and the budget is spent")
        for offset in stride(from: 1, to: 3999, by: 2) {
            try file.punchHole(UInt64(offset)..<UInt64(offset) + 1)
            model[offset] = 0
        }
        try file.zeroRange(100..<200, keepSize: true)
        for offset in 100..<200 { model[offset] = 0 }
        try file.write(at: 1000, bytes: [1, 2, 3])
        model[1000...1002] = [1, 2, 3]
        XCTAssertEqual(try file.contents(), model)
        XCTAssertEqual(file.extentCount, 1, "one piece still")
        XCTAssertEqual(file.limiter.usedBytes, charge, "charged as it was")
        XCTAssertEqual(store.statistics.liveBytes, 0, "the write inside the piece took no image block")
        XCTAssertEqual(file.allocatedByteCount, 4000, "holes inside a piece free nothing, as inside an ext4 block")
        // A hole that reaches the piece's end frees its bytes.
        try file.punchHole(3000..<4000)
        XCTAssertEqual(file.limiter.usedBytes, 3000 + Extent.memoryPieceOverhead)
        XCTAssertEqual(try file.read(at: 2990, count: 1010), Array(model[2990..<3000]) + [UInt8](repeating: 0, count: 1000))
    }

    func testZeroBudgetKeepsEveryByteInTheImage() throws {
        let file = makeFile(memoryLimit: 0)
        for i in 0..<50 { try file.write(at: UInt64(i * 37), bytes: [UInt8](repeating: UInt8(i), count: 13)) }
        XCTAssertEqual(file.limiter.usedBytes, 0)
        XCTAssertFalse(file.extentList.contains { if case .inMemory = $0.extent { return true } else { return false } })
    }

    func testPreallocateReservesZeroedBlocksAndZeroRangeFreesThem() throws {
        let file = makeFile()
        try file.preallocate(0..<(1 << 20), keepSize: false)
        XCTAssertEqual(file.size, 1 << 20)
        XCTAssertEqual(store.statistics.liveBytes, 1 << 20)
        XCTAssertEqual(try file.read(at: 0, count: 1 << 20), [UInt8](repeating: 0, count: 1 << 20))
        try file.zeroRange(0..<(1 << 20), keepSize: true)
        XCTAssertEqual(store.statistics.liveBytes, 0)
        XCTAssertThrowsError(try file.nextData(from: 0)) { XCTAssertEqual($0 as? FSError, .noSuchOffset) }
        try file.zeroRange((2 << 20)..<(3 << 20), keepSize: false)
        XCTAssertEqual(file.size, 3 << 20)
    }

    func testRunningOutOfSpaceFailsTheWriteAndChangesNothing() throws {
        let small = try TemporaryImage().makeStore(capacityBytes: 64 << 10)
        let file = OffloadedFile(store: small, limiter: limiter)
        try file.write(at: 0, bytes: [UInt8](repeating: 1, count: 60 << 10))
        XCTAssertThrowsError(try file.write(at: 60 << 10, bytes: [UInt8](repeating: 2, count: 8192))) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertEqual(file.size, 60 << 10)
        XCTAssertEqual(try file.contents(), [UInt8](repeating: 1, count: 60 << 10))
        XCTAssertEqual(small.statistics.liveBytes, 60 << 10)
        try file.truncate()
        try file.write(at: 0, bytes: [UInt8](repeating: 3, count: 64 << 10))
        XCTAssertEqual(small.statistics.liveBytes, 64 << 10, "after freeing, the space can be used again")
        try small.checkInvariants()
    }

    /// A fallocate of a range with no hole takes nothing, so it asks no room: on a full
    /// image (format 2 with more blocks held for commits than are free, where the check
    /// of 0 bytes says no) it succeeds, as ext4 answers it (the review of the thirty-fourth
    /// session: the check of 0 bytes refused it). One with a hole asks.
    func testAFallocateOfARangeWithNoHoleAsksNoRoom() throws {
        let full = NoRoomStore(store)
        let file = OffloadedFile(store: full, limiter: limiter)
        _ = try file.write(at: 0, bytes: [UInt8](repeating: 9, count: 8192))
        try file.preallocate(0..<8192, keepSize: false)
        try file.preallocate(100..<4000, keepSize: true)
        XCTAssertEqual(file.size, 8192)
        XCTAssertThrowsError(try file.preallocate(0..<8193, keepSize: false)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertEqual(file.size, 8192)
        _ = try file.truncate()
    }

    /// A file of 2,200 RAM pieces of 4,095 bytes with a hole after each (9 MB of RAM bytes,
    /// more than a change's record may carry): a fallocate over all of it is made in
    /// parts, each a change whose record stays under `changeRecordLimit`, and a clone of
    /// all of it is shorter than asked, as copy_file_range(2) may be; the caller's loop
    /// clones the rest. Before, each was one change whose record carried every RAM byte:
    /// past a journal frame's 64 MiB (the hunt's 16,400 pieces) the namespace failed.
    func testAFallocateOrACloneOverMoreRamBytesThanOneRecordMayHoldIsMadeInParts() throws {
        let shared = MemoryLimiter(limitBytes: 64 << 20)
        let file = OffloadedFile(store: store, limiter: shared)
        let piece = [UInt8](repeating: 0x61, count: 4095)
        let count = 2_200
        for i in 0..<count { try file.write(at: UInt64(i) * 8192, bytes: piece) }
        XCTAssertEqual(file.limiter.usedBytes, count * (piece.count + Extent.memoryPieceOverhead), "setup: every piece is in RAM")
        let recorder = RecordingObserver()
        file.attach(recorder)
        try file.preallocate(0..<UInt64(count) * 8192, keepSize: false)
        XCTAssertGreaterThan(recorder.changes.count, 1, "one change carried every piece")
        for change in recorder.changes {
            let bound = MetadataRecord.fileRangeBound(pieces: change.pieces.count,
                                                      memoryBytes: change.pieces.reduce(0) { $0 + $1.extent.memoryBytes })
            XCTAssertLessThanOrEqual(bound, OffloadedFile.changeRecordLimit)
        }
        XCTAssertEqual(recorder.changes.last?.size, UInt64(count) * 8192)
        XCTAssertEqual(file.allocatedByteCount, UInt64(count) * 8192, "a hole was left")
        for i in [0, 1, count / 2, count - 1] {
            let read = try file.read(at: UInt64(i) * 8192, count: 8192)
            XCTAssertTrue(read == piece + [UInt8](repeating: 0, count: 8192 - piece.count), "piece \(i): \(read.count) bytes read")
        }
        // A clone of it all, as copy_file_range's callers loop.
        let copy = OffloadedFile(store: store, limiter: shared)
        let copyRecorder = RecordingObserver()
        copy.attach(copyRecorder)
        var done: UInt64 = 0, calls = 0
        while done < file.size {
            let cloned = try copy.cloneRange(from: file, sourceOffset: done, count: file.size - done, to: done)
            XCTAssertGreaterThan(cloned, 0)
            done += cloned
            calls += 1
        }
        XCTAssertGreaterThan(calls, 1, "one clone carried every piece")
        for change in copyRecorder.changes {
            let bound = MetadataRecord.fileRangeBound(pieces: change.pieces.count,
                                                      memoryBytes: change.pieces.reduce(0) { $0 + $1.extent.memoryBytes })
            XCTAssertLessThanOrEqual(bound, OffloadedFile.changeRecordLimit)
        }
        XCTAssertTrue(try copy.read(at: 0, count: Int(file.size)) == (try file.read(at: 0, count: Int(file.size))))
        _ = try copy.truncate()
        _ = try file.truncate()
    }

    /// Keeps every change made.
    private final class RecordingObserver: FileChangeObserver, @unchecked Sendable {
        var changes: [FileChange] = []
        func fileChanged(_ change: FileChange) { changes.append(change) }
    }

    /// A store whose check says there is no room for data, whatever is asked.
    private final class NoRoomStore: FileBlockStore, @unchecked Sendable {
        let base: BackingStore
        init(_ base: BackingStore) { self.base = base }
        var image: ImageMapping { base.image }
        var availableBytes: UInt64 { base.availableBytes }
        func hasRoom(forDataBytes byteCount: UInt64) -> Bool { false }
        func allocate(byteCount: Int, hint: UInt64?) throws(FSError) -> Range<UInt64> { try base.allocate(byteCount: byteCount, hint: hint) }
        func retain(_ range: Range<UInt64>) throws(FSError) { try base.retain(range) }
        func retainOwned(_ range: Range<UInt64>) { base.retainOwned(range) }
        func release(_ ranges: [Range<UInt64>], unsharing dropped: [Range<UInt64>]) { base.release(ranges, unsharing: dropped) }
        func isExclusive(_ range: Range<UInt64>) -> Bool { base.isExclusive(range) }
        func isInUse(byte offset: UInt64) -> Bool { base.isInUse(byte: offset) }
    }
}

final class ReadRegionTests: XCTestCase {
    func testRegionsConcatenateToTheSameBytesAsRead() throws {
        let image = TemporaryImage()
        let store = try image.makeStore()
        let file = OffloadedFile(store: store, limiter: MemoryLimiter(limitBytes: 1 << 20))
        try file.write(at: 0, bytes: [UInt8](repeating: 1, count: 10_000))   // image
        try file.write(at: 12_000, bytes: [2, 3, 4])                          // RAM after a hole
        try file.resize(to: 13_000, fill: 9)                                   // fill
        for (offset, count) in [(0, 13_000), (9_000, 3_500), (12_001, 5_000), (13_000, 10), (20_000, 1)] {
            let gathered = try file.withReadRegions(at: UInt64(offset), count: count) { regions -> [UInt8] in
                regions.flatMap { region -> [UInt8] in
                    switch region {
                    case .image(let buffer): return Array(buffer)
                    case .fill(let value, let n): return [UInt8](repeating: value, count: n)
                    case .memory(let bytes): return Array(bytes)
                    }
                }
            }
            XCTAssertEqual(gathered, try file.read(at: UInt64(offset), count: count), "at \(offset) count \(count)")
        }
    }
}
