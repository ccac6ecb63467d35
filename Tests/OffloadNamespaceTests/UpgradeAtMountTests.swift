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
