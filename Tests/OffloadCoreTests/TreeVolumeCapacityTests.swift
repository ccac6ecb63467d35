import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// A format 2 image's capacity follows the mount's `--size` and default
/// (`TreeVolume+Capacity.swift`), as format 1's does: a larger one is free space that
/// files fill and later mounts keep; a smaller one is refused, the image not written,
/// while blocks in use lie past it, and allowed once none do (the file then cut to it); a
/// default follows each mount, down to what the image holds; a power cut while the
/// capacity grows leaves the old capacity or the new one, either checking clean.
final class TreeVolumeCapacityTests: XCTestCase {
    static let key = SipHash24(key0: 5, key1: 6)
    static let mebibyte: UInt64 = 1 << 20

    func testAGrownCapacityIsFreeSpaceThatFilesFillAndLaterMountsKeep() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(64 * Self.mebibyte))
        let files = BlockFiles(try TreeVolume.format(disk, capacityBytes: 4 * Self.mebibyte, imageID: 3, nameHashKey: Self.key))
        try files.makeRoot()
        let before = try files.fill()
        XCTAssertLessThanOrEqual(try files.volume.space.usedEnd(), 1024)
        try files.volume.close()

        let grown = try TreeVolume.open(disk, capacity: .set(64 * Self.mebibyte))
        XCTAssertNil(grown.failure)
        XCTAssertEqual(grown.current.capacityBytes, 64 * Self.mebibyte, "the opening commit's slot names the new capacity")
        XCTAssertTrue(grown.current.capacityIsSet)
        XCTAssertEqual(disk.length, 64 * Self.mebibyte, "the file grew to the capacity")
        XCTAssertEqual(grown.space.reserveTarget, 255, "the reserve follows the capacity (a 64th of it)")
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
        files.volume = grown
        let added = try files.fill()
        // Everything past the old end but the reserve and the metadata of a thousand
        // files (under 2 MiB) went to files.
        XCTAssertGreaterThan(added, (64 - 4) * 256 - 255 - 512, "blocks the new space gave files")
        XCTAssertGreaterThan(try grown.space.usedEnd(), 15_000)
        try grown.close()
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")

        // Kept: a later mount's default does not change a capacity set by --size.
        let reopened = try TreeVolume.open(disk, capacity: .kept(default: 8 * Self.mebibyte))
        XCTAssertEqual(reopened.current.capacityBytes, 64 * Self.mebibyte)
        XCTAssertTrue(reopened.current.capacityIsSet)
        try files.verify(in: reopened)
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
        print("capacity: 4 MiB held \(before) file blocks; grown to 64 MiB, files took \(added) more")
    }

    func testASmallerCapacityIsRefusedWhileBlocksInUseLiePastItAndAllowedWhenNoneDo() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(64 * Self.mebibyte))
        let files = BlockFiles(try TreeVolume.format(disk, capacityBytes: 64 * Self.mebibyte, imageID: 3, nameHashKey: Self.key))
        try files.makeRoot()
        let first = try files.write(blocks: 1024)
        let second = try files.write(blocks: 1024)
        XCTAssertGreaterThanOrEqual(second.blocks.lowerBound, first.blocks.upperBound, "files are placed from the bottom up")
        // The first file goes: a hole below the second, which stays.
        try files.remove(first)
        for _ in 0..<4 { try files.volume.commit(); files.volume.waitForPunches() }
        try files.volume.close()
        let live = UInt64(1024 + 64) << 12

        // 6 MiB would hold what is in use (4 MiB and metadata), but not where it lies.
        let image = Self.contents(of: disk)
        final class Changes: @unchecked Sendable { var seen: [String] = [] }
        let changes = Changes()
        disk.beforeChange { changes.seen.append("\($0)") }
        var needed: UInt64 = 0
        XCTAssertThrowsError(try TreeVolume.open(disk, capacity: .set(6 * Self.mebibyte))) { error in
            guard case .capacityTooSmall(let capacity, let smallest, let held) = error as? FSError else {
                return XCTFail("refused with \(error)")
            }
            XCTAssertEqual(capacity, 6 * Self.mebibyte)
            XCTAssertLessThan(held, live, "what is in use fits in 6 MiB")
            XCTAssertGreaterThanOrEqual(smallest, second.blocks.upperBound << 12, "the smallest capacity keeps the second file")
            XCTAssertLessThan(smallest, 10 * Self.mebibyte)
            needed = smallest
        }
        disk.beforeChange(nil)
        XCTAssertEqual(changes.seen, [], "a refused capacity wrote to the image")
        XCTAssertEqual(Self.contents(of: disk), image, "a refused capacity changed the image")

        // The smallest capacity that would do is allowed, and the file is cut to it.
        let shrunk = try TreeVolume.open(disk, capacity: .set(needed))
        XCTAssertNil(shrunk.failure)
        XCTAssertEqual(shrunk.current.capacityBytes, needed)
        XCTAssertEqual(disk.length, needed, "the file is cut to the smaller capacity")
        XCTAssertEqual(shrunk.space.endBlock, needed >> 12)
        files.volume = shrunk
        try files.verify(in: shrunk)
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
        // The space ends there: files get no block past it.
        let more = try files.fill()
        XCTAssertLessThanOrEqual(try shrunk.space.usedEnd(), needed >> 12)
        try shrunk.close()
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
        XCTAssertEqual(try TreeVolume.open(disk).current.capacityBytes, needed, "kept for later mounts")
        print("capacity: 6 MiB refused (\(needed) bytes needed for \(second.blocks) in use); \(more) blocks filled below the new end")
    }

    func testADefaultCapacityFollowsEachMountDownToWhatTheImageHolds() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(64 * Self.mebibyte))
        let files = BlockFiles(try TreeVolume.format(disk, capacityBytes: 8 * Self.mebibyte, capacityIsSet: false, imageID: 3,
                                                     nameHashKey: Self.key))
        try files.makeRoot()
        _ = try files.write(blocks: 1024)
        try files.volume.close()
        for (asked, expected) in [(32, 32), (16, 16), (5, 5)] as [(UInt64, UInt64)] {
            let volume = try TreeVolume.open(disk, capacity: .kept(default: asked * Self.mebibyte))
            XCTAssertEqual(volume.current.capacityBytes, expected * Self.mebibyte, "default \(asked) MiB")
            XCTAssertFalse(volume.current.capacityIsSet)
            XCTAssertEqual(disk.length, expected * Self.mebibyte)
            try volume.close()
            XCTAssertTrue(try VolumeCheck.run(disk).isClean)
        }
        // A default below what the image holds (the disk under it filled up) is not refused:
        // the capacity goes as low as it can, never below what it holds.
        let low = try TreeVolume.open(disk, capacity: .kept(default: 1 * Self.mebibyte))
        XCTAssertNil(low.failure)
        XCTAssertGreaterThan(low.current.capacityBytes, UInt64(1024) << 12)
        XCTAssertLessThanOrEqual(low.current.capacityBytes, 5 * Self.mebibyte)
        XCTAssertFalse(low.current.capacityIsSet)
        files.volume = low
        try files.verify(in: low)
        try low.close()
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
        // --size turns it into a kept capacity.
        try TreeVolume.open(disk, capacity: .set(24 * Self.mebibyte)).close()
        let kept = try TreeVolume.open(disk, capacity: .kept(default: 48 * Self.mebibyte))
        XCTAssertEqual(kept.current.capacityBytes, 24 * Self.mebibyte)
        XCTAssertTrue(kept.current.capacityIsSet)
    }

    /// Power cuts at every change while an opening grows the capacity and files take
    /// blocks of the new space: each image left opens at the old capacity or the new one,
    /// never names a capacity its file does not reach, checks clean, and keeps the files
    /// written before.
    func testAPowerCutWhileGrowingLeavesTheOldCapacityOrTheNewOne() throws {
        let small = 4 * Self.mebibyte, large = 8 * Self.mebibyte
        let disk = CrashSimulatingStorage(maximumBytes: Int(large))
        let files = BlockFiles(try TreeVolume.format(disk, capacityBytes: small, imageID: 3, nameHashKey: Self.key))
        try files.makeRoot()
        _ = try files.fill()
        try files.volume.close()
        let written = files.written

        final class Cuts: @unchecked Sendable {
            var rng = SplitMix64(seed: 4)
            var capacities: [UInt64: Int] = [:]
            var problems: [String] = []
        }
        let cuts = Cuts()
        disk.beforeChange { change in
            let image = disk.crashImage(using: &cuts.rng)
            let cut = CrashSimulatingStorage(maximumBytes: Int(large), initial: image)
            do {
                let slot = try CommitSlots.read(cut).current
                let report = try VolumeCheck.run(cut)
                if !report.isClean { cuts.problems.append("cut before \(change): \(report.problems.prefix(2))") }
                let volume = try TreeVolume.open(cut)
                let check = BlockFiles(volume)
                check.written = written
                try check.verify(in: volume)
                cuts.capacities[slot.capacityBytes, default: 0] += 1
            } catch {
                cuts.problems.append("cut before \(change): \(error)")
            }
        }
        let grown = try TreeVolume.open(disk, capacity: .set(large))
        files.volume = grown
        // The old space was full but for its reserve's blocks (free again at the close):
        // these files fill those, then lie in the new space.
        var highest: UInt64 = 0
        for _ in 0..<24 { highest = max(highest, try files.write(blocks: 16).blocks.upperBound) }
        XCTAssertGreaterThan(highest, (small >> 12) + 128, "files in the new space")
        try grown.commit()
        disk.beforeChange(nil)
        XCTAssertEqual(cuts.problems, [])
        XCTAssertEqual(Set(cuts.capacities.keys), [small, large], "cuts landed before and after the slot of the new capacity")
        print("capacity power cuts: \(cuts.capacities.sorted { $0.key < $1.key }.map { "\($0.value) at \($0.key >> 20) MiB" })")
    }

    /// The bytes of `disk` now.
    static func contents(of disk: any ImageStorage) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(disk.length))
        _ = bytes.withUnsafeMutableBytes { (try? disk.read(into: $0, at: 0)) ?? 0 }
        return bytes
    }
}

/// Files of whole blocks in the root of a volume, written as the namespace writes them:
/// blocks from the volume's file store, bytes written there, then one operation that
/// names the file and states its extent (the commit records the blocks).
final class BlockFiles {
    var volume: TreeVolume
    var root = NamespaceChangeScript.inode(type: 4, links: 2, parent: 1, nextIndex: 3)
    /// The files written, by inode: their entry and blocks.
    var written: [UInt64: (entry: NamedEntry, blocks: Range<UInt64>)] = [:]
    var nextInode: UInt64 = 2

    init(_ volume: TreeVolume) {
        self.volume = volume
    }

    func makeRoot() throws {
        try volume.perform([.attributes(inode: 1, root)])
    }

    /// A new file of up to `blocks` blocks (what the file store gives in one run).
    /// `.noSpace` when it has none.
    @discardableResult
    func write(blocks: UInt64) throws -> (inode: UInt64, blocks: Range<UInt64>) {
        let bytes = try volume.fileBlocks().allocate(byteCount: Int(blocks) << 12, hint: nil)
        let inode = nextInode
        nextInode += 1
        let size = UInt64(bytes.count)
        try [UInt8](repeating: UInt8(truncatingIfNeeded: inode), count: bytes.count).withUnsafeBytes { raw in
            try volume.storage.write(raw, at: bytes.lowerBound)
        }
        let entry = NamedEntry(name: Array("f\(inode)".utf8), child: inode, type: 8, index: root.nextIndex)
        root.nextIndex += 1
        try volume.perform([
            .attributes(inode: inode, NamespaceChangeScript.inode(type: 8, links: 1, size: size)),
            .link(directory: 1, entry), .attributes(inode: 1, root),
            .fileRange(inode: inode, size: size, range: 0..<size,
                       pieces: [FilePiece(offset: 0, extent: .mmapOffload(offset: bytes.lowerBound, size: size))]),
        ])
        let range = (bytes.lowerBound >> 12)..<(bytes.upperBound >> 12)
        written[inode] = (entry, range)
        return (inode, range)
    }

    /// Files of 16 blocks until the file store has no block left (committing every 32,
    /// so the journal stays small); returns the blocks they took.
    func fill() throws -> UInt64 {
        var blocks: UInt64 = 0
        var count = 0
        while true {
            do {
                blocks += UInt64(try write(blocks: 16).blocks.count)
            } catch FSError.noSpace {
                try volume.commit()
                return blocks
            }
            count += 1
            if count % 32 == 0 { try volume.commit() }
        }
    }

    /// Unlinks and drops the file.
    func remove(_ file: (inode: UInt64, blocks: Range<UInt64>)) throws {
        let entry = try XCTUnwrap(written[file.inode]).entry
        try volume.perform([.unlink(directory: 1, entry), .drop(inode: file.inode)])
        written[file.inode] = nil
    }

    /// Every file written reads back, named in the root, with its bytes.
    func verify(in volume: TreeVolume) throws {
        let reader = try volume.reader()
        var contents = VolumeFileContents()
        for (inode, file) in written {
            XCTAssertEqual(try reader.lookup(directory: 1, name: file.entry.name)?.child, inode)
            let bytes = try contents.bytes(of: inode, size: file.blocks.count << 12, in: volume)
            XCTAssertEqual(bytes, [UInt8](repeating: UInt8(truncatingIfNeeded: inode), count: file.blocks.count << 12),
                           "file \(inode)")
        }
    }
}
