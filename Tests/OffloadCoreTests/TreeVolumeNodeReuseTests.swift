import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Freed filesystem-tree nodes kept unpunched for later commits' nodes (`ReusableNodes`,
/// docs/ARCHITECTURE.md, "Freed nodes reused without a punch"): they are written again as
/// nodes without a punch and a fallocate, and no block that was not punched ever becomes
/// free (the free space hands out blocks that must read as zeros), through commits, a
/// kill, and a full image's reclaim.
final class TreeVolumeNodeReuseTests: XCTestCase {
    static let capacity: UInt64 = 8 << 20

    /// A volume after 300 random operations committed every 31, its last punch waited for.
    static func busyVolume(seed: UInt64) throws -> (CrashSimulatingStorage, TreeVolume) {
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: seed, nameHashKey: SipHash24(key0: seed, key1: 7))
        let script = VolumeCheckTests.script(on: volume, seed: seed)
        try script.makeRoot()
        for step in 0..<300 {
            try script.step()
            if step % 31 == 30 { try volume.commit() }
        }
        try volume.commit()
        volume.waitForPunches()
        return (disk, volume)
    }

    static func assertChecksClean(_ disk: CrashSimulatingStorage, file: StaticString = #filePath, line: UInt = #line) throws {
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(5))", file: file, line: line)
    }

    /// The blocks of `ranges` that read as zeros (`zeros` true) or do not (false).
    static func blocks(in ranges: [Range<UInt64>], on disk: CrashSimulatingStorage, readingZeros zeros: Bool) throws -> [UInt64] {
        var found: [UInt64] = []
        var page = [UInt8](repeating: 0, count: 4096)
        for range in ranges {
            for block in range {
                _ = try page.withUnsafeMutableBytes { try disk.read(into: $0, at: block << 12) }
                if page.allSatisfy({ $0 == 0 }) == zeros { found.append(block) }
            }
        }
        return found
    }

    /// The blocks the block tree holds free (neither a run nor a pending free), outside
    /// what the allocator holds in memory (the metadata reserve), that do not read as zeros.
    static func freeBlocksNotZero(_ volume: TreeVolume, _ disk: CrashSimulatingStorage) throws -> [UInt64] {
        var free = RangeSet(try volume.space.blockTree.freeRanges(in: volume.space.firstBlock..<volume.space.endBlock))
        free.subtract(volume.space.taken)
        return try blocks(in: Array(free.ranges), on: disk, readingZeros: false)
    }

    /// Kept blocks that read as zeros (punched while kept).
    static func keptBlocksPunched(_ volume: TreeVolume, _ disk: CrashSimulatingStorage) throws -> [UInt64] {
        try blocks(in: volume.space.reusableNodes.kept.ranges, on: disk, readingZeros: true)
    }

    func testFreedNodesAreWrittenAgainUnpunchedAndNoUnpunchedBlockBecomesFree() throws {
        for seed in UInt64(1)...3 {
            let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
            let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: seed + 1,
                                               nameHashKey: SipHash24(key0: seed, key1: 7))
            let script = VolumeCheckTests.script(on: volume, seed: seed)
            try script.makeRoot()
            var reused = 0, commits = 0, keptAtMost = 0
            for step in 0..<600 {
                try script.step()
                guard step % 29 == 28 else { continue }
                reused += try volume.commit().nodesReused
                commits += 1
                volume.waitForPunches()
                keptAtMost = max(keptAtMost, volume.space.reusableNodeCount)
                XCTAssertEqual(try Self.freeBlocksNotZero(volume, disk), [], "seed \(seed), commit \(commits): free blocks hold bytes")
                XCTAssertEqual(try Self.keptBlocksPunched(volume, disk), [], "seed \(seed), commit \(commits): kept nodes were punched")
            }
            print("seed \(seed): \(commits) commits, \(reused) nodes written on kept freed nodes, at most \(keptAtMost) kept")
            XCTAssertGreaterThan(reused, 20, "seed \(seed): freed nodes were not written again")
            try Self.assertChecksClean(disk)
        }
    }

    /// A kill forgets which pending frees are kept nodes: opening punches them all, and
    /// the image checks clean.
    func testAKillForgetsTheKeptNodesAndOpeningPunchesThem() throws {
        let (busyDisk, volume) = try Self.busyVolume(seed: 11)
        var disk = busyDisk
        let kept = volume.space.reusableNodes.kept
        XCTAssertFalse(kept.isEmpty)
        XCTAssertEqual(try Self.keptBlocksPunched(volume, disk), [])
        // Kept blocks freed before the last commit: the opening punches them before it
        // commits. Those the last commit freed: the opening commit's punch, which runs
        // after `open` returns (a test that read them at once raced it).
        let last = volume.current.generation
        var keptBeforeLast = RangeSet(try volume.space.blockTree.pendingFrees(through: last - 1).map(\.blocks))
        keptBeforeLast = keptBeforeLast.intersection(RangeSet(kept.ranges))
        XCTAssertFalse(keptBeforeLast.isEmpty)
        var rng = SplitMix64(seed: 5)
        disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: disk.crashImage(using: &rng, keep: 1, torn: 0))
        let reopened = try TreeVolume.open(disk)
        XCTAssertEqual(reopened.space.reusableNodeCount, 0)
        XCTAssertEqual(try Self.blocks(in: Array(keptBeforeLast.ranges), on: disk, readingZeros: false), [],
                       "kept blocks of commits before the last not punched by the opening")
        reopened.waitForPunches()
        XCTAssertEqual(try Self.blocks(in: kept.ranges, on: disk, readingZeros: false), [],
                       "kept blocks not punched by the opening commit's punch")
        for _ in 0..<3 {
            try reopened.commit()
            reopened.waitForPunches()
        }
        XCTAssertEqual(try Self.freeBlocksNotZero(reopened, disk), [])
        try Self.assertChecksClean(disk)
    }

    /// An unmount lets the kept nodes go: the image it leaves holds no pending free older
    /// than its last two commits (a later mount's capacity counts pending blocks as used).
    func testTheUnmountLetsGoOfTheKeptNodes() throws {
        let (disk, volume) = try Self.busyVolume(seed: 31)
        XCTAssertGreaterThan(volume.space.reusableNodeCount, 0)
        try volume.close()
        XCTAssertTrue(volume.current.cleanlyUnmounted)
        let old = try volume.space.blockTree.pendingFrees(through: volume.current.generation - 2)
        XCTAssertEqual(old.map(\.blocks), [], "pending frees older than the last two commits")
        try Self.assertChecksClean(disk)
    }

    /// A file that finds no free space reclaims what earlier operations freed: the kept
    /// nodes too, punched and retired by the commits of the reclaim.
    func testTheReclaimLetsGoOfTheKeptNodes() throws {
        let (disk, volume) = try Self.busyVolume(seed: 21)
        let kept = volume.space.reusableNodeCount
        XCTAssertGreaterThan(kept, 0)
        let freeBefore = try volume.spaceLock.withLock { try volume.space.freeBlockCount() }
        XCTAssertTrue(try volume.reclaimFreedSpace())
        volume.waitForPunches()
        let freeAfter = try volume.spaceLock.withLock { try volume.space.freeBlockCount() }
        // The reclaim's commits change no tree node: nothing is kept after them.
        XCTAssertEqual(volume.space.reusableNodeCount, 0)
        XCTAssertGreaterThanOrEqual(freeAfter, freeBefore + UInt64(kept))
        XCTAssertEqual(try Self.freeBlocksNotZero(volume, disk), [])
        try Self.assertChecksClean(disk)
    }
}
