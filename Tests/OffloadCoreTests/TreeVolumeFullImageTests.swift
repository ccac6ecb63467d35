import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// A format 2 image that fills up: an operation the journal has no room for is refused
/// having changed nothing; a commit that runs out of space leaves the volume read-only
/// with every operation readable; and the image it leaves, whose replay needs the same
/// room, opens read-only with every operation readable instead of not at all.
final class TreeVolumeFullImageTests: XCTestCase {
    static let capacity: UInt64 = 2 << 20

    func testAFullImageRefusesOperationsThenGoesReadOnlyAndOpensReadOnlyWithNothingLost() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: 5, nameHashKey: SipHash24(key0: 3, key1: 4))
        // Without the metadata reserve (TreeVolumeReserveTests has it): the commit must
        // run out of room.
        volume.space.setReserveTarget(0)
        let script = NamespaceChangeScript(seed: 11, refusals: false)
        script.longMemoryPieces = true  // file bytes in RAM pieces (no made-up image extents)
        script.model.refusesLongMemoryPieces = false
        script.perform = { changes, _ in
            try volume.perform(changes)
            for change in changes { script.model.apply(change) }
        }
        try script.makeRoot()
        // Operations until the journal cannot grow: refused, nothing changed, not failed.
        var performed = 0
        var refusal: FSError?
        while refusal == nil && performed < 100_000 {
            do {
                try script.step()
                performed += 1
            } catch {
                refusal = error as? FSError ?? .io("\(error)")
            }
        }
        guard case .noSpace = refusal else { return XCTFail("operations ended with \(String(describing: refusal)) after \(performed)") }
        XCTAssertNil(volume.failure, "a refused operation failed the volume")
        XCTAssertNil(try script.model.mismatch(in: try volume.reader(), absent: Array("never-made".utf8)))
        // Whatever room is left goes to file data; the commit then finds none for itself.
        let files = try volume.fileBlocks()
        while (try? files.allocate(byteCount: 4096)) != nil {}
        XCTAssertThrowsError(try volume.commit()) { error in
            guard case .noSpace = error as? FSError else { return XCTFail("the commit failed with \(error)") }
        }
        XCTAssertNotNil(volume.failure)
        XCTAssertThrowsError(try volume.perform([.removeXattr(inode: 1, name: Array("user.x".utf8))]))
        XCTAssertNil(try script.model.mismatch(in: try volume.reader(), absent: Array("never-made".utf8)),
                     "a volume whose commit failed reads differently")
        // The image as it is: its replay needs the room the commit lacked.
        try volume.storage.sync()
        var rng = SplitMix64(seed: 2)
        let reopened = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity),
                                                                 initial: disk.crashImage(using: &rng, keep: 0, torn: 0)),
                                           reserveTarget: 0)
        XCTAssertGreaterThan(reopened.replayedFrames, 0)
        XCTAssertNotNil(reopened.failure, "a full image's replay committed")
        XCTAssertNil(try script.model.mismatch(in: try reopened.reader(), absent: Array("never-made".utf8)),
                     "the full image opened read-only reads differently")
        XCTAssertThrowsError(try reopened.perform([.removeXattr(inode: 1, name: Array("user.x".utf8))]))
        print("full image: \(performed) operations before the journal found no room, \(reopened.replayedFrames) frames replayed read-only")
    }
}
