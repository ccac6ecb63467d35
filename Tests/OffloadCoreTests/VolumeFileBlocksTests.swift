import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Files on format 2: `OffloadedFile`s keep their data in a `TreeVolume`'s block space
/// (`VolumeFileBlocks`) and journal every change as a `fileRange` frame, against plain
/// byte arrays. Random writes (small ones stay in RAM, larger ones take blocks), overwrites
/// (in place where the blocks are exclusive), appends, truncations, punched holes and
/// clones between the files, with commits, syncs and power cuts among them:
/// - every file always reads as its model (a write in place into a block another file
///   shares shows up here);
/// - after every commit the committed tree reads as the models, and the block tree's data
///   runs hold exactly the references its extents take (an unclaimed block counted twice,
///   or left out, or a block released that an extent still names, shows up here);
/// - a power cut right after a sync opens (replay claims the blocks the crashed mount
///   took) to exactly the models, with the same references, and takes more changes;
/// - a power cut at any other moment (the last sync's image plus any subset of the pages
///   written since, some torn) opens with exact references, and every byte no operation
///   changed since the last sync or commit reads as it did then.
/// Replay one seed with `OFFLOADFS_VOLUME_FILES_SEED=N`.
final class VolumeFileBlocksTests: XCTestCase {
    static let capacity: UInt64 = 24 << 20
    static let fileCount = 4

    /// Journals a file's changes into the volume, as format 2's namespace will: one frame
    /// holding the inode (its new size) and the range.
    final class Journal: FileChangeObserver, @unchecked Sendable {
        let volume: TreeVolume
        let inode: UInt64
        var item = NamespaceChangeScript.inode(type: 8, links: 1)
        /// The first change the volume refused (under the file's lock).
        var failure: FSError?

        init(volume: TreeVolume, inode: UInt64) {
            self.volume = volume
            self.inode = inode
        }

        func fileChanged(_ change: FileChange) {
            do throws(FSError) {
                item.size = change.size
                try volume.perform([.attributes(inode: inode, item), .fileRange(inode: inode, change)])
            } catch {
                if failure == nil { failure = error }
            }
        }
    }

    struct Totals {
        var operations = 0, commits = 0, cuts = 0, unsyncedCuts = 0, claimedAtReplay = 0, inPlace = 0, clones = 0
        var preallocations = 0
    }

    func testFilesOnTheBlockSpaceReadAsTheirModelsThroughCommitsAndPowerCuts() throws {
        var totals = Totals()
        let seeds = crashTestSeeds(replay: "OFFLOADFS_VOLUME_FILES_SEED", count: 4)
        for seed in seeds {
            do {
                try runSeed(seed, &totals)
            } catch {
                return XCTFail("seed \(seed) failed: \(error)\nreplay with OFFLOADFS_VOLUME_FILES_SEED=\(seed)")
            }
        }
        print("volume files test: \(totals.operations) operations, \(totals.commits) commits, \(totals.cuts) cuts (\(totals.unsyncedCuts) without a sync), \(totals.claimedAtReplay) blocks claimed at replay, \(totals.inPlace) overwrites in place, \(totals.clones) clones, \(totals.preallocations) preallocations")
        guard seeds.count > 1 else { return }
        XCTAssertGreaterThan(totals.unsyncedCuts, 0)
        XCTAssertGreaterThan(totals.cuts, totals.unsyncedCuts, "no power cut followed a sync")
        XCTAssertGreaterThan(totals.claimedAtReplay, 0, "no replay had to claim a block the crashed mount took")
        XCTAssertGreaterThan(totals.inPlace, 0, "no overwrite went in place")
        XCTAssertGreaterThan(totals.clones, 0)
        XCTAssertGreaterThan(totals.preallocations, 0)
    }

    /// Two files on a fresh volume (inodes 2 and 3), the first holding `bytes` in blocks.
    func twoFiles(_ bytes: [UInt8]) throws -> (CrashSimulatingStorage, TreeVolume, OffloadedFile, OffloadedFile) {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform((2...3).map { .attributes(inode: $0, NamespaceChangeScript.inode(type: 8, links: 1)) })
        let (files, _) = try Self.openFiles(volume, models: nil)
        try files[0].write(at: 0, bytes: bytes)
        return (disk, volume, files[0], files[1])
    }

    /// A commit that covers a file's blocks but not a clone made of them since (in the next
    /// generation) must not let the file overwrite them in place: the block tree counts
    /// one reference until the next commit.
    func testBlocksACommitClaimsStaySharedWithAClonesMadeInTheNextGeneration() throws {
        let original = [UInt8](repeating: 0x11, count: 3 * 4096)
        let (_, volume, x, y) = try twoFiles(original)
        _ = volume.delta.close()  // the write's generation closes; the clone joins the next
        try y.cloneRange(from: x, sourceOffset: 0, count: UInt64(original.count), to: 0)
        try volume.commit()       // commits the write's generation only
        XCTAssertEqual(volume.delta.layers().first?.objectCount, 1, "the clone waits in the open generation")
        try x.write(at: 4096, bytes: [UInt8](repeating: 0x22, count: 4096))
        XCTAssertTrue(try y.read(at: 0, count: original.count) == original, "the clone's bytes changed under it")
    }

    /// Blocks a commit claims that one file alone holds stay that file's to overwrite in
    /// place: before, every claimed block was marked touched until the next commit, so
    /// each write after a commit copied its block (random writes into a file laid out just
    /// before a commit ran at a fifth of format 1's rate). A block a clone and a release
    /// passed between holders since (an unshared mark) still copies.
    func testBlocksACommitClaimsForOneHolderAreOverwrittenInPlaceAtOnce() throws {
        let original = [UInt8](repeating: 0x66, count: 4 * 4096)
        let (_, volume, x, y) = try twoFiles(original)
        _ = volume.delta.close()  // the write's generation closes
        // In the next generation, before the commit: y clones x's last block, x lets go of it.
        try y.cloneRange(from: x, sourceOffset: 3 * 4096, count: 4096, to: 0)
        _ = try x.resize(to: 3 * 4096)
        try volume.commit()       // claims x's blocks (the write's generation only)
        let before = x.extentList.map(\.extent)
        try x.write(at: 4096, bytes: [UInt8](repeating: 0x77, count: 4096))
        XCTAssertEqual(x.extentList.map(\.extent), before, "a block the commit claimed for x alone was copied")
        let yBefore = y.extentList.map(\.extent)
        try y.write(at: 0, bytes: [UInt8](repeating: 0x88, count: 4096))
        XCTAssertNotEqual(y.extentList.map(\.extent), yBefore,
                          "a block that changed holders in a change not yet durable was overwritten in place")
        XCTAssertTrue(try x.read(at: 0, count: 3 * 4096) == original[0..<4096] + [UInt8](repeating: 0x77, count: 4096) + original[8192..<12288])
    }

    /// A write that copies one block of a committed extent changes the references of that
    /// block only: its neighbours in the extent stay the file's to overwrite in place.
    /// Before, cutting the extent dropped its references whole and took the kept parts'
    /// again, marking every block of it touched, so each later write into the extent
    /// copied too until the next commit was published (random 4 KiB writes on format 2 ran
    /// at half of format 1's rate).
    func testCopyingOneBlockOfAnExtentLeavesItsNeighboursExclusive() throws {
        let original = [UInt8](repeating: 0x55, count: 4 * 4096)
        let (_, volume, x, y) = try twoFiles(original)
        try volume.commit()   // x's four blocks are committed, one extent
        guard case .mmapOffload(let image, let size)? = x.extentList.first?.extent, size == 4 * 4096 else {
            return XCTFail("x is not one image extent: \(x.extentList)")
        }
        // y clones block 1: x's next write there must copy it.
        try y.cloneRange(from: x, sourceOffset: 4096, count: 4096, to: 0)
        try x.write(at: 4096, bytes: [UInt8](repeating: 0x66, count: 4096))
        XCTAssertNotEqual(x.extentList.map(\.extent).dropFirst().first, .mmapOffload(offset: image + 4096, size: 4096),
                          "a block shared with a clone was overwritten in place")
        XCTAssertGreaterThan(x.extentList.count, 1, "a block shared with a clone was overwritten in place")
        let store = try volume.fileBlocks()
        XCTAssertTrue(store.isExclusive(image + 2 * 4096..<image + 4 * 4096), "the copy marked the extent's other blocks")
        let before = x.extentList.map(\.extent)
        try x.write(at: 2 * 4096, bytes: [UInt8](repeating: 0x77, count: 4096))
        XCTAssertEqual(x.extentList.map(\.extent), before, "a block x alone holds was copied")
        XCTAssertTrue(try x.read(at: 0, count: original.count) == [UInt8](repeating: 0x55, count: 4096)
                      + [UInt8](repeating: 0x66, count: 4096) + [UInt8](repeating: 0x77, count: 4096)
                      + [UInt8](repeating: 0x55, count: 4096))
        XCTAssertTrue(try y.read(at: 0, count: 4096) == [UInt8](repeating: 0x55, count: 4096), "the clone changed")
        try volume.commit()
    }

    /// A block found exclusive in the block tree stays so across commits without asking
    /// the tree again (each random write asked it once a commit), except when a commit
    /// changed its count: a clone made in the committed generation marked it touched, and
    /// the next write copies it.
    func testExclusiveVerdictsOutliveCommitsThatDidNotCloneTheirBlocks() throws {
        let original = [UInt8](repeating: 0x31, count: 4 * 4096)
        let (_, volume, x, y) = try twoFiles(original)
        try volume.commit()   // x's four blocks are committed
        let store = try volume.fileBlocks()
        let extents = x.extentList.map(\.extent)
        for block in 0..<4 { try x.write(at: UInt64(block) * 4096, bytes: [UInt8](repeating: 0x32, count: 4096)) }
        XCTAssertEqual(x.extentList.map(\.extent), extents, "x's own blocks were copied")
        let asked = store.lock.withLock { store.treeExclusivityLookups }
        XCTAssertGreaterThan(asked, 0)

        // A commit with another file's change only: x's verdicts stand.
        try y.write(at: 0, bytes: [UInt8](repeating: 0x33, count: 100))
        try volume.commit()
        for block in 0..<4 { try x.write(at: UInt64(block) * 4096, bytes: [UInt8](repeating: 0x34, count: 4096)) }
        XCTAssertEqual(x.extentList.map(\.extent), extents)
        XCTAssertEqual(store.lock.withLock { store.treeExclusivityLookups }, asked, "the tree was asked again after the commit")

        // y clones x's block 2, and that generation commits: the block's count is two.
        try y.cloneRange(from: x, sourceOffset: 2 * 4096, count: 4096, to: 0)
        try volume.commit()
        try x.write(at: 2 * 4096, bytes: [UInt8](repeating: 0x35, count: 4096))
        XCTAssertTrue(try y.read(at: 0, count: 4096) == [UInt8](repeating: 0x34, count: 4096),
                      "a block shared with a clone was overwritten in place")
        XCTAssertNotEqual(x.extentList.map(\.extent), extents)
        try volume.commit()
    }

    /// A files' store first made while a settled commit waits for its sync starts held as
    /// one made before would be: the block tree then counts what the durable slot does
    /// not, and must not be asked whether a committed block is exclusive (review of
    /// 2026-12-02: the store is made lazily, and a made-late one asked the settled tree).
    func testAStoreMadeWhileACommitSyncsStartsHeldUntilItsPublication() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 2, NamespaceChangeScript.inode(type: 8, links: 1))])
        let gate = ChangeGate(disk, holding: ChangeGate.sync)
        final class Commit: @unchecked Sendable {
            let volume: TreeVolume
            var result: Result<VolumeCommitReport, Error>?
            init(_ volume: TreeVolume) { self.volume = volume }
        }
        let commit = Commit(volume), finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            commit.result = Result { try commit.volume.commit() }
            finished.signal()
        }
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "the commit never synced")
        let store = try volume.fileBlocks()
        let heldInWindow = store.lock.withLock { store.settledUnpublished }
        gate.open()
        XCTAssertEqual(finished.wait(timeout: .now() + 20), .success)
        XCTAssertNoThrow(try XCTUnwrap(commit.result).get())
        XCTAssertTrue(heldInWindow, "a store made during the sync asks the unpublished tree")
        XCTAssertFalse(store.lock.withLock { store.settledUnpublished }, "the publication did not let the store go")
    }

    /// RAM bytes admitted in the next generation while a commit of the previous one runs
    /// (the maintenance commits outside the namespace lock) stay promised after that
    /// commit: it did not write them out. Before, every commit reset the count, and such
    /// bytes could be admitted past the free space.
    func testRamBytesOfTheNextGenerationStayPromisedAfterACommit() throws {
        let (_, volume, x, y) = try twoFiles([UInt8](repeating: 0x21, count: 300))
        let store = try volume.fileBlocks()
        XCTAssertEqual(store.lock.withLock { store.admittedMemoryBytes }, 300, "the first write is held in RAM")
        _ = volume.delta.close()   // the first write's generation closes
        try y.write(at: 0, bytes: [UInt8](repeating: 0x22, count: 200))   // in the next one
        try volume.commit()        // the first generation only
        XCTAssertEqual(store.lock.withLock { store.admittedMemoryBytes }, 200, "the next generation's RAM bytes were forgotten")
        try volume.commit()
        XCTAssertEqual(store.lock.withLock { store.admittedMemoryBytes }, 0)
        XCTAssertTrue(try x.read(at: 0, count: 300) == [UInt8](repeating: 0x21, count: 300))
    }

    /// A RAM piece's blocks are taken out of the free space when it is admitted, with
    /// disk space (`promiseBacking`), a step ahead only where the room is ample: on a
    /// nearly full image exactly what it is promised. So a fallocate of every free byte
    /// left takes none of them, and the commit places the piece in them. (Before the
    /// promise was backed, the fallocate's check compared with the free blocks, which
    /// still held the promised ones, took them and was refused; the review of the
    /// twenty-fourth session made it give them back free. Since the thirty-fourth
    /// session the check asks what data may take:
    /// `testAFallocateThatCannotFitIsRefusedBeforeItTakesABlock`.)
    func testARamPiecesBlocksAreTakenAtAdmissionAndAFallocateOfTheRestFits() throws {
        let (_, volume, x, _) = try twoFiles([1])
        let files = try volume.fileBlocks()
        XCTAssertEqual(files.lock.withLock { files.promiseBackingBlocks }, PlacementBlocks.chunkBlocks,
                       "a step ahead where the room is ample")
        try volume.commit()
        XCTAssertEqual(files.lock.withLock { files.promiseBackingBlocks }, 0, "the commit gave back what it did not use")
        _ = fillLeavingFortyBlocks(files)
        let before = files.availableBytes
        XCTAssertTrue(files.admitsMemoryPiece(byteCount: 10_000), "setup: a RAM piece's blocks promised")
        let backed = files.lock.withLock { files.promiseBackingBlocks }
        XCTAssertEqual(backed, VolumeFileBlocks.blocks(forMemoryBytes: 10_000), "no step ahead on a nearly full image")
        XCTAssertEqual(files.availableBytes + (backed << BackingStore.blockShift), before, "the promise's blocks are taken")
        let free = files.availableBytes, releases = volume.releaseCount
        try x.preallocate(4096..<4096 + free, keepSize: false)
        XCTAssertEqual(files.availableBytes, 0)
        XCTAssertEqual(volume.releaseCount, releases)
        try volume.commit()
        XCTAssertNil(volume.failure)
        XCTAssertEqual(files.lock.withLock { files.admittedMemoryBytes }, 0)
        XCTAssertEqual(files.lock.withLock { files.promiseBackingBlocks }, 0)
    }

    /// A fallocate that cannot fit is refused before it takes a block: its check asks what
    /// data may take (`hasRoom(forDataBytes:)`: here the free blocks less those held for
    /// the commit of the changes waiting, `heldForCommits`). Asked against the free blocks,
    /// it took them all, zeroed them and gave them back before its refusal (the
    /// twenty-fourth session's review found the pieces going back as a release; since
    /// then they went back free, still taken and zeroed first).
    func testAFallocateThatCannotFitIsRefusedBeforeItTakesABlock() throws {
        let (_, volume, x, _) = try twoFiles([1])
        let files = try volume.fileBlocks()
        try volume.commit()
        try volume.perform((10..<1_010).map { .attributes(inode: UInt64($0), NamespaceChangeScript.inode(type: 8, links: 1)) })
        XCTAssertGreaterThan(files.lock.withLock { files.heldForCommits }, 40, "setup: blocks held for the changes' commit")
        let given = fillLeavingFortyBlocks(files)
        let free = files.availableBytes, releases = volume.releaseCount, givenBack = volume.givenBackCount
        XCTAssertGreaterThanOrEqual(free, given, "setup: the blocks given back are free")
        XCTAssertFalse(files.hasRoom(forDataBytes: free), "the free blocks are not all data's")
        XCTAssertThrowsError(try x.preallocate(4096..<4096 + free, keepSize: false)) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertEqual(volume.givenBackCount, givenBack, "the refused fallocate took blocks and gave them back")
        XCTAssertEqual(files.availableBytes, free)
        XCTAssertEqual(volume.releaseCount, releases, "the refused fallocate counted a release")
        XCTAssertEqual(x.size, 1)
        // What data may take, it gets.
        let room = files.lock.withLock {
            (files.space.freeEstimate - files.unbackedPromisedBlocks - files.heldForCommits) << BackingStore.blockShift
        }
        XCTAssertTrue(files.hasRoom(forDataBytes: room))
        XCTAssertFalse(files.hasRoom(forDataBytes: room + 1))
        try x.preallocate(4096..<4096 + room, keepSize: false)
        XCTAssertEqual(x.size, 4096 + room)
    }

    /// A fallocate's record carries the RAM pieces that stay in its range again, and the
    /// commit writes each longer than an extent item holds to a data block of its own:
    /// they are promised as a write's pieces are. Before, nothing promised those blocks,
    /// and a full image's commit found no room for them (the defect hunt of the
    /// thirty-fourth session: a file of 2,000 such pieces, a `fallocate --keep-size` over
    /// it, the image filled before the commit). A clone's copies of the source's pieces
    /// are placed as a write's are (`sharedPieces`), promised once.
    func testRamPiecesAFallocateOrACloneRecordsAgainArePromisedBlocks() throws {
        let (_, volume, x, y) = try twoFiles([1])
        let files = try volume.fileBlocks()
        let piece = [UInt8](repeating: 0x5A, count: 3_000)
        try x.write(at: 0, bytes: piece)
        try volume.commit()
        XCTAssertEqual(files.lock.withLock { files.admittedMemoryBytes }, 0, "setup: the commit wrote the piece out")
        XCTAssertEqual(ramBytes(x), 3_000, "setup: the file keeps its piece in RAM")
        // A range with no hole records no piece: nothing to promise.
        try x.preallocate(0..<16_384, keepSize: true)
        XCTAssertEqual(files.lock.withLock { files.admittedMemoryBytes }, 0, "a fallocate with no hole promised its pieces")
        try x.preallocate(0..<16_384, keepSize: false)
        XCTAssertEqual(files.lock.withLock { files.admittedMemoryBytes }, 3_000, "the fallocate's record carries the piece unpromised")
        try volume.commit()
        XCTAssertEqual(files.lock.withLock { files.admittedMemoryBytes }, 0)
        try y.cloneRange(from: x, sourceOffset: 0, count: 3_000, to: 0)
        XCTAssertEqual(files.lock.withLock { files.admittedMemoryBytes }, 3_000, "the clone's copy of the piece is promised once")
        try volume.commit()
        XCTAssertTrue(try y.read(at: 0, count: 3_000) == piece)
        XCTAssertNil(volume.failure)
    }

    /// A fallocate over a range with no hole, on an image with no free block, of a file
    /// whose bytes there are a RAM piece longer than an extent item holds: nothing to
    /// allocate, so it succeeds, as on ext4. Before, its record carried the piece again,
    /// whose block for the commit was promised first: ENOSPC.
    func testAFallocateWithNoHoleOverARamPieceSucceedsOnAFullImage() throws {
        let (_, volume, x, _) = try twoFiles([1])
        let files = try volume.fileBlocks()
        try x.write(at: 0, bytes: [UInt8](repeating: 0x5A, count: 3_000))
        try volume.commit()
        XCTAssertEqual(ramBytes(x), 3_000, "setup: the file keeps its piece in RAM")
        var taken: [Range<UInt64>] = []
        while let range = try? files.allocate(byteCount: 4096, hint: nil) { taken.append(range) }
        XCTAssertFalse(files.admitsMemoryPiece(byteCount: 3_000), "setup: no block is left to promise")
        var changes = 0
        let observer = CountingObserver { changes += 1 }
        x.attach(observer)
        try x.preallocate(0..<3_000, keepSize: false)
        try x.preallocate(100..<16_384, keepSize: true)
        XCTAssertEqual(changes, 2, "each fallocate is still a change (its record states the times)")
        XCTAssertEqual(x.size, 3_000)
        XCTAssertTrue(try x.read(at: 0, count: 3_000) == [UInt8](repeating: 0x5A, count: 3_000))
        files.release(taken, unsharing: [])
    }

    /// Counts the changes made.
    private final class CountingObserver: FileChangeObserver, @unchecked Sendable {
        let changed: () -> Void
        init(_ changed: @escaping () -> Void) { self.changed = changed }
        func fileChanged(_ change: FileChange) {
            XCTAssertTrue(change.range.isEmpty && change.pieces.isEmpty, "a fallocate with no hole recorded \(change)")
            changed()
        }
    }

    /// A fallocate refused after it took its pieces (here its journal record is refused)
    /// gives them back free at once, counted as no release. Before, the pieces went back
    /// as a release, free only after the commits of the reuse rule, and every other writer
    /// was refused until a reclaim's commits (the review of the twenty-fourth session).
    func testAPreallocationRefusedAfterItsAllocationGivesItsBlocksBackFree() throws {
        let (_, volume, x, _) = try twoFiles([1])
        let files = try volume.fileBlocks()
        try volume.commit()
        let free = files.availableBytes, releases = volume.releaseCount, givenBack = volume.givenBackCount
        x.attach(RecordRefusingObserver())
        XCTAssertThrowsError(try x.preallocate(4096..<4096 + 1 << 20, keepSize: false)) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertGreaterThan(volume.givenBackCount, givenBack, "setup: the fallocate took blocks before its refusal")
        XCTAssertEqual(files.availableBytes, free, "the refused fallocate's blocks are not free again")
        XCTAssertEqual(volume.releaseCount, releases, "the refused fallocate counted a release")
        XCTAssertEqual(x.size, 1)
    }

    /// Refuses every change's record, as a journal with no room does.
    private final class RecordRefusingObserver: FileChangeObserver, @unchecked Sendable {
        func willChange(recordBytes: Int) throws(FSError) { throw .noSpace }
        func fileChanged(_ change: FileChange) { XCTFail("a refused change was made") }
    }

    /// The bytes `file` holds in RAM pieces.
    private func ramBytes(_ file: OffloadedFile) -> Int {
        file.lock.withReadLock {
            guard var i = file.extents.floor(0) else { return 0 }
            var total = file.extents.value(at: i).memoryBytes
            while let next = file.extents.index(after: i) {
                i = next
                total += file.extents.value(at: i).memoryBytes
            }
            return total
        }
    }

    /// Takes data blocks until none is admitted, then gives back about 40 of them
    /// unwritten: a nearly full image. Returns the bytes given back.
    private func fillLeavingFortyBlocks(_ files: VolumeFileBlocks) -> UInt64 {
        var taken: [Range<UInt64>] = []
        for size in [1 << 20, 64 << 10, 4 << 10] {
            while let blocks = try? files.allocate(byteCount: size, hint: nil) { taken.append(blocks) }
        }
        var given: UInt64 = 0
        while given < 40 << 12, let blocks = taken.popLast() {
            files.giveBackUnwritten(blocks)
            given += blocks.length
        }
        return given
    }

    /// A file that let go of a shared block in a change not yet durable may get it back
    /// after a power cut: until a sync, the other holder must copy instead of writing in
    /// place.
    func testABlockLetGoOfBeforeASyncIsNotOverwrittenInPlaceUntilTheSync() throws {
        let original = [UInt8](repeating: 0x33, count: 2 * 4096)
        let (disk, volume, x, y) = try twoFiles(original)
        try y.cloneRange(from: x, sourceOffset: 0, count: UInt64(original.count), to: 0)
        guard case .mmapOffload(let shared, _) = x.extentList.first?.extent else { return XCTFail("x holds no blocks") }
        try volume.sync()
        try x.truncate()          // journaled, not durable
        try y.write(at: 0, bytes: [UInt8](repeating: 0x44, count: 4096))
        // The power cut keeps what the sync made durable, and the shared block's page (as
        // if written back), not the truncation's frame: x keeps the block.
        var rng = SplitMix64(seed: 3)
        var image = disk.crashImage(using: &rng, keep: 0, torn: 0)
        let page = disk.readBytes(at: shared, count: 4096)
        image.replaceSubrange(Int(shared)..<Int(shared) + 4096, with: page)
        let recovered = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image))
        var bytes = [UInt8](repeating: 0, count: original.count)
        for (offset, extent) in try recovered.filesystem.extents(2, overlapping: 0..<UInt64.max) {
            guard case .image(let at, let length) = extent else { continue }
            try bytes.withUnsafeMutableBytes { raw in
                _ = try recovered.storage.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset + length)]), at: at)
            }
        }
        XCTAssertTrue(bytes == original, "the file the power cut brought back shows the other file's write")
        // Once the truncation is durable, y owns its second block alone and rewrites it in place.
        try volume.sync()
        let before = y.extentList.map(\.extent)
        try y.write(at: 4096, bytes: [UInt8](repeating: 0x55, count: 4096))
        XCTAssertEqual(y.extentList.map(\.extent), before, "after the sync the overwrite still copied")
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    func runSeed(_ seed: UInt64, _ totals: inout Totals) throws {
        var rng = SplitMix64(seed: seed)
        var disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        var volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: seed + 1,
                                           nameHashKey: SipHash24(key0: seed, key1: ~seed))
        try volume.perform((1...Self.fileCount).map {
            .attributes(inode: UInt64($0) + 1, NamespaceChangeScript.inode(type: 8, links: 1))
        })
        var models = [[UInt8]](repeating: [], count: Self.fileCount)
        // What the last sync or commit made durable, and the bytes changed since (a power
        // cut may keep any part of those changes, and nothing else may differ).
        var durable = models
        var dirty = [RangeSet<Int>](repeating: RangeSet(), count: Self.fileCount)
        var (files, journals) = try Self.openFiles(volume, models: nil)
        for _ in 0..<(150 + rng.next() % 100) {
            let i = Int(rng.next() % UInt64(Self.fileCount))
            let file = files[i]
            let sizeBefore = models[i].count
            // The bytes the operation writes (with those between the old and the new size).
            var written: Range<Int>?
            defer {
                if let written { dirty[i].insert(contentsOf: written) }
                let low = min(sizeBefore, models[i].count), high = max(sizeBefore, models[i].count)
                if low < high { dirty[i].insert(contentsOf: low..<high) }
            }
            switch rng.next() % 15 {
            case 0..<4:
                // A write anywhere up to a little past the end: small ones stay in RAM.
                let count = Int(rng.next() % 3 == 0 ? rng.next() % 2000 + 1 : rng.next() % 40_000 + 1)
                let offset = Int(rng.next() % UInt64(models[i].count + 9000))
                let bytes = (0..<count).map { _ in Self.written(rng.next() | 1) }
                try file.write(at: UInt64(offset), bytes: bytes)
                written = offset..<offset + count
                if models[i].count < offset + count { models[i] += [UInt8](repeating: 0, count: offset + count - models[i].count) }
                models[i].replaceSubrange(offset..<offset + count, with: bytes)
            case 4..<6:
                // An overwrite inside the file: in place when its blocks are exclusive.
                guard models[i].count > 0 else { continue }
                let offset = Int(rng.next() % UInt64(models[i].count))
                let count = min(models[i].count - offset, Int(rng.next() % 9000) + 1)
                let bytes = (0..<count).map { _ in Self.written(rng.next()) }
                let extentsBefore = file.extentList.map(\.extent)
                try file.write(at: UInt64(offset), bytes: bytes)
                written = offset..<offset + count
                if file.extentList.map(\.extent) == extentsBefore { totals.inPlace += 1 }
                models[i].replaceSubrange(offset..<offset + count, with: bytes)
            case 6:
                let size = Int(rng.next() % UInt64(models[i].count + 20_000))
                try file.resize(to: UInt64(size))
                if size < models[i].count { models[i].removeLast(models[i].count - size) } else {
                    models[i] += [UInt8](repeating: 0, count: size - models[i].count)
                }
            case 7:
                guard models[i].count > 0 else { continue }
                let offset = Int(rng.next() % UInt64(models[i].count))
                let count = min(models[i].count - offset, Int(rng.next() % 30_000) + 1)
                try file.punchHole(UInt64(offset)..<UInt64(offset + count))
                written = offset..<offset + count
                models[i].replaceSubrange(offset..<offset + count, with: [UInt8](repeating: 0, count: count))
            case 8..<10:
                // A clone from another file (or this one): shared blocks, copied on write.
                let j = Int(rng.next() % UInt64(Self.fileCount))
                guard models[j].count > 0 else { continue }
                let from = Int(rng.next() % UInt64(models[j].count))
                let count = min(models[j].count - from, Int(rng.next() % 50_000) + 1)
                let to = Int(rng.next() % UInt64(models[i].count + 5000))
                let source = Array(models[j][from..<from + count])
                try file.cloneRange(from: files[j], sourceOffset: UInt64(from), count: UInt64(count), to: UInt64(to))
                written = to..<to + count
                if models[i].count < to + count { models[i] += [UInt8](repeating: 0, count: to + count - models[i].count) }
                models[i].replaceSubrange(to..<to + count, with: source)
                totals.clones += 1
            case 10:
                try volume.commit()
                totals.commits += 1
                try Self.check(volume, models, "after a commit")
                durable = models
                dirty = [RangeSet<Int>](repeating: RangeSet(), count: Self.fileCount)
            case 11:
                // A power cut now, without a sync: what the last sync or commit made durable,
                // plus any subset of the pages written since (some torn). The image opens,
                // its references are exact, and every byte no operation changed since the
                // sync reads as then.
                var image = disk.crashImage(using: &rng)
                try Self.leaveBytesInTheFreeSpace(of: volume, in: &image)
                let recoveredDisk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image)
                let recovered = try TreeVolume.open(recoveredDisk)
                totals.claimedAtReplay += Int(recovered.blocksClaimedAtOpen)
                let found = try Self.committedFiles(recovered)
                for k in 0..<Self.fileCount where found[k].contains(Self.leftover) {
                    throw Failure(description: "after a power cut without a sync: file \(k) shows bytes a crash left in the free space")
                }
                for k in 0..<Self.fileCount {
                    for p in 0..<min(found[k].count, durable[k].count) where found[k][p] != durable[k][p] && !dirty[k].contains(p) {
                        throw Failure(description: "after a power cut without a sync: file \(k) byte \(p), unchanged since the last sync, reads \(found[k][p]), not \(durable[k][p])")
                    }
                }
                totals.cuts += 1
                totals.unsyncedCuts += 1
                if rng.next() % 2 == 0 {
                    volume = recovered
                    disk = recoveredDisk
                    models = found
                    durable = found
                    dirty = [RangeSet<Int>](repeating: RangeSet(), count: Self.fileCount)
                    (files, journals) = try Self.openFiles(volume, models: models)
                }
            case 12:
                try volume.sync()
                // The image a power cut leaves now: what the sync made durable.
                var image = disk.crashImage(using: &rng, keep: 0, torn: 0)
                try Self.leaveBytesInTheFreeSpace(of: volume, in: &image)
                let recoveredDisk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image)
                let recovered = try TreeVolume.open(recoveredDisk)
                totals.claimedAtReplay += Int(recovered.blocksClaimedAtOpen)
                try Self.check(recovered, models, "after a power cut following a sync")
                totals.cuts += 1
                durable = models
                dirty = [RangeSet<Int>](repeating: RangeSet(), count: Self.fileCount)
                // Go on with the recovered image half of the time.
                if rng.next() % 2 == 0 {
                    volume = recovered
                    disk = recoveredDisk
                    (files, journals) = try Self.openFiles(volume, models: models)
                }
            case 13:
                // A preallocation (fallocate mode 0 or KEEP_SIZE): fresh blocks for the holes
                // in the range, reading as zeros whatever a power cut left in the free space.
                let offset = Int(rng.next() % UInt64(models[i].count + 9000))
                let count = Int(rng.next() % 60_000) + 1
                let keepSize = rng.next() % 2 == 0
                try file.preallocate(UInt64(offset)..<UInt64(offset + count), keepSize: keepSize)
                if !keepSize, models[i].count < offset + count {
                    models[i] += [UInt8](repeating: 0, count: offset + count - models[i].count)
                }
                totals.preallocations += 1
            default:
                try file.resize(to: UInt64(models[i].count))  // no change
            }
            totals.operations += 1
            for (k, journal) in journals.enumerated() {
                if let failure = journal.failure { throw Failure(description: "file \(k): the volume refused a change: \(failure)") }
            }
            for (k, file) in files.enumerated() {
                try file.checkInvariants()
                guard try file.read(at: 0, count: models[k].count + 1) == models[k] else {
                    throw Failure(description: "file \(k) reads differently from its model after operation \(totals.operations)")
                }
            }
        }
        try volume.commit()
        try Self.check(volume, models, "at the end")
    }

    /// What the crashed mount left in the free space, in the power cuts' images: a byte no
    /// operation of the test writes (`written`), so that a file showing it shows leftovers.
    static let leftover: UInt8 = 0xEE

    /// A byte to write from a random number: never `leftover`.
    static func written(_ random: UInt64) -> UInt8 {
        let byte = UInt8(truncatingIfNeeded: random)
        return byte == leftover ? leftover &+ 1 : byte
    }

    /// Writes `leftover` into `image` (a power cut's image of `volume`'s disk) over the
    /// blocks the block tree holds free but what `volume` took since (its journal's
    /// segments, files' blocks a replay may claim): what a crashed mount may leave there
    /// (a commit's nodes before its slot, a file's blocks whose frame was lost), as if the
    /// kernel had written it back. The metadata reserve holds nothing and is filled too.
    static func leaveBytesInTheFreeSpace(of volume: TreeVolume, in image: inout [UInt8]) throws {
        let space = volume.space
        var free = RangeSet(try space.blockTree.freeRanges(in: space.firstBlock..<space.endBlock))
        free.subtract(space.taken)
        free.formUnion(space.reserve)
        for blocks in free.ranges {
            let start = Int(blocks.lowerBound) << BackingStore.blockShift
            let end = min(image.count, Int(blocks.upperBound) << BackingStore.blockShift)
            guard start < end else { continue }
            image.withUnsafeMutableBytes { _ = memset($0.baseAddress! + start, Int32(leftover), end - start) }
        }
    }

    /// Files over the volume's blocks, one per model, each journaling into the volume.
    /// With `models` (a recovered volume), each file is loaded from the committed tree.
    static func openFiles(_ volume: TreeVolume, models: [[UInt8]]?) throws -> ([OffloadedFile], [Journal]) {
        let store = try volume.fileBlocks()
        let limiter = MemoryLimiter(limitBytes: 64 << 10)
        var files: [OffloadedFile] = [], journals: [Journal] = []
        for k in 0..<fileCount {
            let inode = UInt64(k) + 2
            let file = OffloadedFile(store: store, limiter: limiter)
            if models != nil {
                // Rebuilt from the tree's extents, each taking its reference as a file does.
                for (offset, extent) in try volume.filesystem.extents(inode, overlapping: 0..<UInt64.max) {
                    switch extent {
                    case .image(let image, let length):
                        try file.write(at: offset, imageRange: image..<image + length)
                    case .fill(let byte, let length):
                        if byte != 0 { try file.write(at: offset, bytes: [UInt8](repeating: byte, count: Int(length))) }
                    case .inline(let bytes):
                        try file.write(at: offset, bytes: bytes)
                    }
                }
                if let size = try volume.filesystem.inode(inode)?.size { try file.resize(to: size) }
            }
            let journal = Journal(volume: volume, inode: inode)
            if let item = try volume.filesystem.inode(inode) { journal.item = item }
            file.attach(journal)
            files.append(file)
            journals.append(journal)
        }
        return (files, journals)
    }

    /// The volume's committed tree reads as `models`, and its data runs hold exactly the
    /// references its extents take.
    static func check(_ volume: TreeVolume, _ models: [[UInt8]], _ when: String) throws {
        let files = try committedFiles(volume)
        for (k, model) in models.enumerated() where files[k] != model {
            let first = zip(files[k], model).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            throw Failure(description: "\(when): file \(k) reads differently from its model (sizes \(files[k].count) and \(model.count), first difference at \(String(describing: first)))")
        }
    }

    /// Every file's bytes in the volume's committed tree, after checking that its data runs
    /// hold exactly the references the extents take.
    static func committedFiles(_ volume: TreeVolume) throws -> [[UInt8]] {
        var contents = VolumeFileContents()
        var files: [[UInt8]] = []
        for k in 0..<fileCount {
            let inode = UInt64(k) + 2
            guard let bytes = try contents.bytes(of: inode, size: Int(try volume.filesystem.inode(inode)?.size ?? 0), in: volume) else {
                throw Failure(description: "file \(k): an extent past its size")
            }
            files.append(bytes)
        }
        if let problem = try contents.dataRunMismatch(in: volume) { throw Failure(description: problem) }
        return files
    }

    /// `VolumeFileBlocks` asks that every block call of a change happen inside the change's
    /// delta ticket, and takes the space lock; a commit takes the space lock first and then
    /// waits (in `nextToCommit`) for the tickets of the generation it closes. A file's block
    /// call inside its ticket while a commit (the maintenance tick's, another thread) runs
    /// therefore deadlocks. (`perform` has the same shape: it appends under the space lock
    /// while holding its ticket.)
    func testABlockCallInsideATicketDoesNotDeadlockWithACommit() throws {
        let capacity: UInt64 = 8 << 20
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        let files = try volume.fileBlocks()
        final class Box: @unchecked Sendable { let volume: TreeVolume; init(_ v: TreeVolume) { volume = v } }
        let box = Box(volume)
        let done = DispatchGroup()
        let ticket = volume.delta.join()   // a change begins (its ticket first, as the duty says)
        done.enter()
        Thread.detachNewThread {           // the maintenance tick commits meanwhile
            _ = try? box.volume.commit()
            done.leave()
        }
        Thread.sleep(forTimeInterval: 0.2) // the commit holds the space lock and waits for the ticket
        done.enter()
        Thread.detachNewThread {           // the change's first block call, then it leaves
            _ = try? files.allocate(byteCount: 4096)
            box.volume.delta.leave(ticket)
            done.leave()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success, "the change and the commit wait for each other")
    }
}
