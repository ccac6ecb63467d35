import Dispatch
import XCTest
@testable import OffloadCore
import OffloadSimulation

/// The punch of a commit's retirable pending frees runs after the commit returns
/// (docs/ARCHITECTURE.md, step 4e), and the rules of step 4c hold all the same: the
/// frees stay pending until the punch has finished, the next commit waits for it before
/// it retires them, and a punch that has not finished retires nothing.
final class TreeVolumePunchTests: XCTestCase {
    func testAPunchRunsAfterTheCommitAndTheNextCommitRetiresOnlyWhatItPunched() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(TreeVolumeDurabilityTests.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: TreeVolumeDurabilityTests.capacity, imageID: 7,
                                           nameHashKey: SipHash24(key0: 1, key1: 2))
        try TreeVolumeDurabilityTests.makeFile(512 << 10, in: volume)
        // The file's bytes become pending frees of this commit...
        try volume.perform([.fileRange(inode: 2, size: 0, range: 0..<0, pieces: [])])
        let freeing = try volume.commit().generation
        let freed = try volume.space.blockTree.pendingFrees(from: freeing, through: freeing)
        XCTAssertGreaterThan(freed.reduce(0) { $0 + $1.blocks.count }, 100)
        // The filesystem tree's nodes the commit replaced are kept for later commits'
        // nodes, unpunched (`ReusableNodes`): the punch leaves them out.
        let keptNodes = volume.space.reusableNodes.kept.restricted(to: 0..<volume.space.endBlock)
        let keptCount = freed.reduce(0) { $0 + keptNodes.restricted(to: $1.blocks).ranges.reduce(0) { $0 + $1.count } }
        XCTAssertGreaterThan(keptCount, 0, "the commit's replaced nodes are not kept")
        // ...which the next commit starts to punch: held at the punch until released.
        volume.waitForPunches()  // the punch that commit started, of earlier frees
        // (Only the punch of those frees: a commit also punches the spare blocks of its
        // block tree's pool that it gave back unwritten.)
        let freedBytes = freed.map { ($0.blocks.lowerBound << BackingStore.blockShift)..<($0.blocks.upperBound << BackingStore.blockShift) }
        let gate = ChangeGate(disk) { change in
            guard case .punch(let range) = change else { return false }
            return freedBytes.contains { $0.overlaps(range) }
        }
        try volume.commit()
        // The commit returned with its punch held: had it punched on its own path, it
        // would have waited at the gate until the timeout.
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "no punch started")
        XCTAssertLessThan(volume.punchedThrough, freeing, "frees counted as punched while their punch is held")
        XCTAssertEqual(try volume.space.blockTree.pendingFrees(from: freeing, through: freeing).map(\.blocks), freed.map(\.blocks))
        // The next commit waits for the punch before its block space may retire the
        // frees: it does not finish while the punch is held.
        // The test's thread waits meanwhile: one caller of the volume at a time.
        final class Outcome: @unchecked Sendable {
            let volume: TreeVolume
            var report: Result<VolumeCommitReport, Error>?
            init(_ volume: TreeVolume) { self.volume = volume }
        }
        let outcome = Outcome(volume), done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            outcome.report = Result { try outcome.volume.commit() }
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 0.5), .timedOut, "the next commit went on while the punch was held")
        gate.open()
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success)
        let report = try XCTUnwrap(outcome.report).get()
        XCTAssertFalse(gate.timedOut, "the commit waited at the punch")
        XCTAssertGreaterThanOrEqual(report.punchedBlocks, freed.reduce(0) { $0 + $1.blocks.count } - keptCount)
        XCTAssertGreaterThanOrEqual(volume.punchedThrough, freeing)
        try volume.commit()
        // Every free but the kept nodes retired (a kept node may have become a node again).
        for item in try volume.space.blockTree.pendingFrees(from: freeing, through: freeing) {
            XCTAssertTrue(keptNodes.containsAll(item.blocks), "punched frees \(item.blocks) were not retired")
        }
        let dataBlock = try XCTUnwrap(freed.lazy.flatMap { $0.blocks }.first { !keptNodes.contains($0) })
        var page = [UInt8](repeating: 0xFF, count: 4096)
        _ = try page.withUnsafeMutableBytes { try disk.read(into: $0, at: dataBlock << 12) }
        XCTAssertEqual(page.first(where: { $0 != 0 }), nil, "a retired block still holds its bytes")
    }
}
