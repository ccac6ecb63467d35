import Foundation
import XCTest
import OffloadCore
@testable import OffloadNamespace
import SplitMix

/// A format 1 image opened by a read-write mount (`MountedImages.open`, format 2 by
/// default) is upgraded in place, holding the tree format 1 held. A cleanly unmounted one
/// mounted without `--size` is upgraded from its checkpoint directly; one left by a crash,
/// or mounted with `--size`, is recovered by a format 1 mount and unmount first
/// (`ImageFileSystem.OpenReport.formatOneMountedFirst`). Either way the mount's capacity
/// is the one format 1's open would have given it.
final class UpgradeAtMountTests: XCTestCase {
    private var directory: URL!
    private var image: String { directory.appendingPathComponent("image.bin").path }
    private let memory = MemoryLimiter(limitBytes: 4096)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-upgrade-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A format 1 image with `capacity`, after random operations (every kind of object,
    /// files unlinked while open and closed again), cleanly unmounted unless `crash`
    /// (dropped without `close`, as kill -9 leaves it). Returns its tree.
    private func makeFormatOneImage(capacity: CapacityRequest, crash: Bool, seed: UInt64) throws -> TreeSnapshot {
        let fileSystem = try ImageFileSystem.open(path: image, capacity: capacity, memoryLimiter: memory)
        var workload = PersistenceTests.Workload(fs: fileSystem.namespace, random: SplitMix64(seed: seed))
        for _ in 0..<400 { try workload.step() }
        workload.closeAll()
        let tree = try TreeSnapshot(fileSystem.namespace)
        XCTAssertGreaterThan(tree.nodes.count, 5, "seed \(seed): the workload made few objects")
        if !crash { try fileSystem.close() }
        return tree
    }

    private func mountUpgraded(_ capacity: CapacityRequest) throws -> VolumeFileSystem {
        let mounted = try MountedImages.open(path: image, capacity: capacity, memoryLimiter: memory)
        return try XCTUnwrap(mounted as? VolumeFileSystem, "mounted as \(type(of: mounted)), not format 2")
    }

    func testACleanlyUnmountedImageIsUpgradedFromItsCheckpoint() throws {
        for seed: UInt64 in 1...3 {
            try? FileManager.default.removeItem(atPath: image)
            let expected = try makeFormatOneImage(capacity: .set(256 << 20), crash: false, seed: seed)
            do {
                // Its own scope: the image's lock goes with it.
                let upgraded = try mountUpgraded(.kept(default: 64 << 20))
                XCTAssertTrue(upgraded.report.upgradedFromFormatOne, "seed \(seed)")
                XCTAssertFalse(upgraded.report.formatOneMountedFirst, "seed \(seed): format 1 was mounted first")
                XCTAssertEqual(try PowerCutImage.two(upgraded).snapshot(), expected, "seed \(seed): the upgraded tree")
                XCTAssertEqual(upgraded.capacityBytes, 256 << 20, "seed \(seed): the kept capacity")
                XCTAssertTrue(upgraded.capacityIsSet, "seed \(seed)")
                try upgraded.close(meter: nil)
            }
            let reopened = try mountUpgraded(.kept(default: 64 << 20))
            XCTAssertFalse(reopened.report.upgradedFromFormatOne, "seed \(seed): upgraded twice")
            XCTAssertEqual(try PowerCutImage.two(reopened).snapshot(), expected, "seed \(seed): reopened")
            try reopened.close(meter: nil)
        }
    }

    /// A capacity the image does not keep is the mount's default, as format 1's open gives,
    /// also when the superblock holds 64 TiB (`offloadfs-genimage` without `--size`; a file
    /// that long is more than ext4 allows, and the upgrade sized the file to it).
    func testADefaultCapacityIsTheMountsAfterADirectUpgrade() throws {
        let expected = try makeFormatOneImage(capacity: .kept(default: TreeVolume.maximumCapacity), crash: false, seed: 4)
        let upgraded = try mountUpgraded(.kept(default: 96 << 20))
        XCTAssertFalse(upgraded.report.formatOneMountedFirst)
        XCTAssertEqual(upgraded.capacityBytes, 96 << 20)
        XCTAssertFalse(upgraded.capacityIsSet)
        XCTAssertEqual(try PowerCutImage.two(upgraded).snapshot(), expected)
        try upgraded.close(meter: nil)
    }

    func testAnImageLeftByACrashIsRecoveredByFormatOneFirst() throws {
        for seed: UInt64 in 5...6 {
            try? FileManager.default.removeItem(atPath: image)
            let expected = try makeFormatOneImage(capacity: .set(256 << 20), crash: true, seed: seed)
            let upgraded = try mountUpgraded(.kept(default: 64 << 20))
            XCTAssertTrue(upgraded.report.upgradedFromFormatOne, "seed \(seed)")
            XCTAssertTrue(upgraded.report.formatOneMountedFirst, "seed \(seed): a crashed image upgraded directly")
            XCTAssertGreaterThan(upgraded.report.journalFrames, 0, "seed \(seed): format 1's replay is reported")
            XCTAssertEqual(try PowerCutImage.two(upgraded).snapshot(), expected, "seed \(seed): the upgraded tree")
            try upgraded.close(meter: nil)
        }
    }

    /// A checkpoint written while a file unlinked while open was still open holds that
    /// orphan: the direct upgrade leaves it out and frees its blocks, as format 1's open
    /// does (the blocks of its 300,000 bytes are punched: the image's disk use drops).
    func testAnOrphanInACleanImageIsFreedByTheDirectUpgrade() throws {
        let expected: TreeSnapshot
        do {
            let fileSystem = try ImageFileSystem.open(path: image, capacity: .set(256 << 20), memoryLimiter: memory)
            let fs = fileSystem.namespace
            let context = RequestContext(uid: 0, gid: 0)
            let (kept, keptHandle) = try fs.create(parent: .root, name: FileName(Array("kept".utf8)), mode: 0o100644,
                                                   flags: O_RDWR, context: context)
            _ = try [UInt8](repeating: 7, count: 100_000).withUnsafeBytes { bytes throws(FSError) in
                try fs.write(inode: kept.inode, handle: keptHandle, offset: 0, data: bytes)
            }
            fs.release(inode: kept.inode, handle: keptHandle)
            let (gone, goneHandle) = try fs.create(parent: .root, name: FileName(Array("gone".utf8)), mode: 0o100644,
                                                   flags: O_RDWR, context: context)
            _ = try [UInt8](repeating: 9, count: 300_000).withUnsafeBytes { bytes throws(FSError) in
                try fs.write(inode: gone.inode, handle: goneHandle, offset: 0, data: bytes)
            }
            try fs.unlink(parent: .root, name: FileName(Array("gone".utf8)))
            expected = try TreeSnapshot(fs)
            // Closed with "gone" still open: the clean checkpoint holds it.
            try fileSystem.close()
        }
        // Where format 1 put the orphan's bytes.
        let orphanBlocks: [Range<UInt64>]
        do {
            let storage = try FileImageStorage(path: image, readOnly: true)
            guard case .image(let superblock, _) = try ImageIdentity.read(storage) else { return XCTFail("not format 1") }
            let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length,
                                              read: { storage.readBytes(at: $0, count: $1) })
            let analysis = ImageAnalysis(replay, fileBytes: storage.length)
            let orphans = replay.files.filter { !analysis.reachable.contains($0.key) }
            XCTAssertEqual(orphans.count, 1)
            orphanBlocks = orphans.flatMap { $0.value.pieceList }.compactMap { piece in
                guard case .mmapOffload(let offset, let size) = piece.extent else { return nil }
                return ExtentReferenceChanges.blocks(offset: offset, length: size)
            }
            XCTAssertGreaterThanOrEqual(orphanBlocks.reduce(0) { $0 + $1.count }, 73, "the orphan's 300,000 bytes in the image")
        }
        do {
            let upgraded = try mountUpgraded(.kept(default: 64 << 20))
            XCTAssertFalse(upgraded.report.formatOneMountedFirst)
            XCTAssertEqual(upgraded.report.orphansFreed, 1)
            XCTAssertEqual(try PowerCutImage.two(upgraded).snapshot(), expected)
            try upgraded.close(meter: nil)
        }
        // Claimed, released by the upgrade's first commit and punched after its second
        // (or written again since): no block of them holds the orphan's bytes any more.
        let storage = try FileImageStorage(path: image, readOnly: true)
        let orphanBlock = [UInt8](repeating: 9, count: BackingStore.blockSize)
        for blocks in orphanBlocks {
            for block in blocks {
                let bytes = storage.readBytes(at: block * UInt64(BackingStore.blockSize), count: BackingStore.blockSize)
                XCTAssertFalse(bytes == orphanBlock, "block \(block) still holds the orphan's bytes")
            }
        }
        let check = try VolumeCheck.run(storage)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(5))")
    }

    func testASizeAtTheUpgradingMountIsAppliedByFormatOneFirst() throws {
        let expected = try makeFormatOneImage(capacity: .set(256 << 20), crash: false, seed: 7)
        let upgraded = try mountUpgraded(.set(320 << 20))
        XCTAssertTrue(upgraded.report.formatOneMountedFirst)
        XCTAssertEqual(upgraded.capacityBytes, 320 << 20)
        XCTAssertTrue(upgraded.capacityIsSet)
        XCTAssertEqual(try PowerCutImage.two(upgraded).snapshot(), expected)
        try upgraded.close(meter: nil)
    }
}
