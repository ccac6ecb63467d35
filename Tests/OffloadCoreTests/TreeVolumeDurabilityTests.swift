import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Durability rules of `TreeVolume` found broken by review (2026-12-01), each a test
/// that failed before its fix: journal chains are released in the generation of the
/// commit that stops naming them (released later, a crash leaked them); pending frees
/// are punched while still pending, after the next commit (punched after their items
/// were deleted, a crash between the slot and the punch left them unpunched for good);
/// a file system that cannot punch gets zeros written, and a punch that fails does not
/// fail a durable commit; a journal chain named over blocks that are not the journal's
/// is damage, not a release of someone else's blocks.
final class TreeVolumeDurabilityTests: XCTestCase {
    static let capacity: UInt64 = 8 << 20

    /// `/f` (inode 2) of `size` bytes of 0xAB, placed in the image by a commit.
    static func makeFile(_ size: UInt64, in volume: TreeVolume) throws {
        var root = NamespaceChangeScript.inode(type: 4, links: 2, parent: 1, nextIndex: 3)
        try volume.perform([.attributes(inode: 1, root)])
        root.nextIndex = 4
        try volume.perform([.attributes(inode: 2, NamespaceChangeScript.inode(type: 8, links: 1, size: size)),
                            .link(directory: 1, NamedEntry(name: Array("f".utf8), child: 2, type: 8, index: 3)),
                            .attributes(inode: 1, root)])
        try volume.perform([.fileRange(inode: 2, size: size, range: 0..<size,
                                       pieces: [FilePiece(offset: 0, extent: .inMemory([UInt8](repeating: 0xAB, count: Int(size))))])])
        try volume.commit()
    }

    static func journalBlocks(_ volume: TreeVolume) throws -> Int {
        try volume.space.blockTree.allRuns().filter { $0.use == .journal }.reduce(0) { $0 + $1.blocks.count }
    }

    /// Killed after commits, five times: the journal runs in the block tree stay what
    /// the named chain takes (they grew by 16 blocks or more per crash before the fix).
    func testCrashesBetweenCommitsDoNotLeakJournalBlocks() throws {
        var disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        var volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        for _ in 0..<4 { try volume.commit() }
        let steady = try Self.journalBlocks(volume)
        var rng = SplitMix64(seed: 3)
        for _ in 0..<5 {
            // Process killed after a commit (everything written survives: keep 1, no tears).
            let image = disk.crashImage(using: &rng, keep: 1, torn: 0)
            disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image)
            volume = try TreeVolume.open(disk)
            for _ in 0..<4 { try volume.commit() }
        }
        XCTAssertEqual(try Self.journalBlocks(volume), steady, "journal runs no chain names any more stay in the block tree")
    }

    /// A crash at the first punch after a commit: no block the block tree holds free may
    /// keep the bytes of the file that freed it (208 of 275 did before the fix).
    func testACrashBeforeThePunchLeavesNoFreeBlockUnpunched() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        let size: UInt64 = 512 << 10
        try Self.makeFile(size, in: volume)
        try volume.perform([.fileRange(inode: 2, size: 0, range: 0..<0, pieces: [])])
        try volume.commit()
        final class Box: @unchecked Sendable { var image: [UInt8]?; var ranges: [Range<UInt64>] = [] }
        let box = Box()
        disk.beforeChange { change in
            guard case .punch(let range) = change else { return }
            if box.image == nil {
                var r = SplitMix64(seed: 9)
                box.image = disk.crashImage(using: &r, keep: 1, torn: 0)
            }
            box.ranges.append(range)
        }
        try volume.commit()
        volume.waitForPunches()  // the punch runs after the commit returns
        disk.beforeChange(nil)
        let image = try XCTUnwrap(box.image)
        let blocks = box.ranges.flatMap { Array(($0.lowerBound >> 12)..<($0.upperBound >> 12)) }
        XCTAssertGreaterThan(blocks.count, 100)
        let reopened = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image))
        for _ in 0..<3 { try reopened.commit() }
        let pending = try reopened.space.blockTree.pendingFrees(through: BlockReferenceTree.maximumPendingGeneration)
        var stale: [UInt64] = []
        for block in blocks {
            let used = try !reopened.space.blockTree.runs(overlapping: block..<block + 1).isEmpty
            let isPending = pending.contains { $0.blocks.contains(block) }
            var page = [UInt8](repeating: 0, count: 4096)
            _ = try page.withUnsafeMutableBytes { try reopened.storage.read(into: $0, at: block << 12) }
            if !used && !isPending && page.contains(where: { $0 != 0 }) { stale.append(block) }
        }
        XCTAssertEqual(stale.count, 0, "\(stale.count) of \(blocks.count) retired blocks are free in the block tree and still hold their old bytes (never punched): \(stale.prefix(4))...")
    }

    /// ImageStorage's contract: punch may throw .notSupported, and the caller then writes
    /// zeros; commits go on (the volume failed on the first punch before the fix).
    func testAFileSystemWithoutPunchDoesNotFailTheVolume() throws {
        let inner = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let disk = FaultInjectingStorage(inner)
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        disk.inject(.init(.punch, error: .notSupported, times: 1000))
        for _ in 0..<6 {
            do { try volume.commit() } catch {
                let onDisk = try CommitSlots.read(inner).current.generation
                return XCTFail("commit threw \(error) with its slot durable (current on disk \(onDisk), volume's \(volume.current.generation)); volume failed: \(volume.failure != nil)")
            }
        }
    }

    /// A failed fdatasync before the image is mapped is latched, as `ImageMapping` latches
    /// it once mapped: every later sync of the volume fails, mapped or not. Linux reports
    /// a writeback error once per open file, and fsyncs run outside the namespace lock, so
    /// of two at once the one that saw 0 must not report success, nor any later one
    /// (before, only the mapped path latched, and the second sync here succeeded).
    func testAFailedSyncBeforeTheImageIsMappedFailsEveryLaterSync() throws {
        let disk = FaultInjectingStorage(CrashSimulatingStorage(maximumBytes: Int(Self.capacity)))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.sync()
        disk.inject(.init(.sync, error: .io("injected EIO")))
        XCTAssertThrowsError(try volume.sync())
        XCTAssertThrowsError(try volume.sync(), "the fault was injected once: the second sync saw 0 from the disk")
        _ = try volume.fileBlocks()
        XCTAssertThrowsError(try volume.sync(), "mapped now: the latch still holds")
    }

    /// A slot (crafted, or naming a chain through a stale link) whose journal head lies on
    /// a live file's data blocks is refused, or at least never frees the file's blocks
    /// (before the fix they were released, punched and free while the extent named them).
    func testAJournalHeadOnLiveDataIsRefusedNotReleased() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        let size: UInt64 = 64 << 10
        try Self.makeFile(size, in: volume)
        let extents = try volume.filesystem.extents(2, overlapping: 0..<size)
        guard case .image(let at, _) = try XCTUnwrap(extents.first).1 else { return XCTFail("no image extent") }
        var slot = volume.current
        slot.journal = LogSegment(start: at, length: 4096)
        try CommitSlots.write(slot, to: disk)
        let opened: TreeVolume
        do { opened = try TreeVolume.open(disk) } catch { return }  // refused: fine
        for _ in 0..<3 { try opened.commit() }
        var page = [UInt8](repeating: 0, count: 4096)
        _ = try page.withUnsafeMutableBytes { try opened.storage.read(into: $0, at: at) }
        let runs = try opened.space.blockTree.runs(overlapping: (at >> 12)..<(at >> 12) + 1)
        XCTAssertEqual(page.first, 0xAB, "a live file's block was freed and punched; runs there now: \(runs)")
    }


    /// A reader kept across commits reads its commit whole: the nodes later commits
    /// replace are not punched or reused while it lives, and are once it is gone (a
    /// reader of an older root read a punched node before readers had epochs: the scale
    /// benchmark's auto-commits found it).
    func testAReaderKeptAcrossCommitsReadsItsCommitAndHoldsBackOnlyItsFrees() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 7, nameHashKey: SipHash24(key0: 1, key1: 2))
        let files = 400
        var root = NamespaceChangeScript.inode(type: 4, links: 2, parent: 1, nextIndex: 3 + UInt64(files))
        try volume.perform([.attributes(inode: 1, root)])
        for i in 0..<files {
            try volume.perform([.attributes(inode: 2 + UInt64(i), NamespaceChangeScript.inode(type: 8, links: 1)),
                                .link(directory: 1, NamedEntry(name: Array("file\(i)".utf8), child: 2 + UInt64(i), type: 8, index: 3 + UInt64(i)))])
        }
        try volume.commit()
        let old = try volume.reader()
        for round in 0..<6 {
            for i in 0..<files {
                var item = NamespaceChangeScript.inode(type: 8, links: 1)
                item.permissions = 0o600 + UInt32(round)
                try volume.perform([.attributes(inode: 2 + UInt64(i), item)])
            }
            try volume.commit()
        }
        volume.waitForPunches()
        XCTAssertLessThan(volume.punchedThrough, old.generation + 1, "frees of commits after the reader's were punched")
        // Its committed tree reads as at its commit (its layer list holds the generation
        // that was open then, which round 0 changed: that layer is live).
        for i in stride(from: 0, to: files, by: 7) {
            XCTAssertEqual(try old.view.tree.inode(2 + UInt64(i))?.permissions, 0o644)
            XCTAssertEqual(try old.view.tree.lookup(directory: 1, name: Array("file\(i)".utf8))?.child, 2 + UInt64(i))
            XCTAssertEqual(try old.inode(2 + UInt64(i))?.permissions, 0o600)
        }
        _ = try old.view.tree.tree.check()
        XCTAssertEqual(try volume.reader().inode(2)?.permissions, 0o605)
        let held = old.generation
        _ = consume old
        root.permissions = 0o700
        try volume.perform([.attributes(inode: 1, root)])
        try volume.commit()
        volume.waitForPunches()
        XCTAssertGreaterThan(volume.punchedThrough, held, "the frees stayed held after the reader was gone")
    }

    /// A replayed frame whose image extent names blocks of a tree node (a damaged or hostile
    /// journal): replay's claim treats every block some run holds as recorded data, so the
    /// commit after replay makes a file extent over the filesystem tree's node. Opening
    /// should refuse it as damage, as it does for a pending block or a chain over blocks
    /// that are not the journal's.
    func testAReplayedExtentOverATreeNodeIsDamage() throws {
        let capacity: UInt64 = 8 << 20
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 2, NamespaceChangeScript.inode(type: 8, links: 1, size: 4096))])
        try volume.commit()
        let node = try XCTUnwrap(volume.current.filesystemTree).block
        try volume.perform([.fileRange(inode: 2, size: 4096, range: 0..<4096,
                                       pieces: [FilePiece(offset: 0, extent: .mmapOffload(offset: node << 12, size: 4096))])])
        try volume.sync()
        var rng = SplitMix64(seed: 1)
        let image = disk.crashImage(using: &rng, keep: 0, torn: 0)
        let cut = CrashSimulatingStorage(maximumBytes: Int(capacity), initial: image)
        do {
            _ = try TreeVolume.open(cut)
            let report = try VolumeCheck.run(cut)
            XCTFail("replay made a file extent over tree node \(node); fsck after it: \(report.problems.prefix(3))")
        } catch {
            // refused: what it should do
        }
    }
}
