import Foundation
import XCTest
import OffloadCore
import OffloadFuzzing
@testable import OffloadNamespace
import SplitMix

/// Images nobody wrote: damaged or hostile bytes must open, or be refused with a clear
/// error, and repair must end in an image that opens or in a clear refusal; never a trap
/// or a hang (`HostileImageCheck` states the properties). The fuzzer (scripts/fuzz) looks
/// for inputs that break them; each it found is replayed here, and each defect it found
/// has its own test below.
final class HostileImageTests: XCTestCase {
    func testTheSeedImagesOpenAndNeedNoRepair() throws {
        for (name, input) in try SampleImage.seeds() {
            let outcome = try HostileImageCheck.check(FuzzInput.image(from: input))
            XCTAssertNil(outcome.refusal, "\(name)")
            XCTAssertEqual(outcome.repairs, 0, "\(name)")
        }
    }

    /// Every input the fuzzer found that crashed or broke a property (Tests/FuzzRegressions).
    func testEveryInputTheFuzzerFoundNowPasses() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzRegressions")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix(".") && $0 != "README.md" }
        XCTAssertFalse(names.isEmpty)
        for name in names.sorted() {
            let input = [UInt8](try Data(contentsOf: folder.appendingPathComponent(name)))
            do {
                try HostileImageCheck.check(FuzzInput.image(from: input))
            } catch {
                XCTFail("\(name): \(error)")
            }
        }
    }

    // MARK: - Defects the fuzzer found

    /// A superblock whose journal segment overlaps the checkpoint's made the analysis count
    /// the shared blocks twice as metadata, and `dataBytes` underflowed (a trap in fsck and
    /// mount). The journal now ends before a segment that overlaps one already read.
    func testAJournalSegmentOverlappingTheCheckpointEndsTheJournal() throws {
        var image = try SampleImage.make(seed: 2, clean: true)
        try editSuperblocks(of: &image) { superblock in
            // From a block before the checkpoint over all of it.
            let checkpoint = superblock.checkpoint
            superblock.journal = LogSegment(start: checkpoint.start - 4096, length: checkpoint.length + 4096)
        }
        let outcome = try HostileImageCheck.check(image)
        XCTAssertNil(outcome.refusal, "the journal ends where it would overlap the checkpoint; nothing is lost")
    }

    /// A superblock (good checksum) whose generation or journal sequence was at the end
    /// of UInt64: the next checkpoint's generation, or the next journal frame's sequence
    /// number, overflowed (a trap in mount and repair). No image reaches 2^63 of either;
    /// such a superblock is damaged.
    func testAGenerationOrJournalSequenceNearTheEndOfUInt64IsDamageNotATrap() throws {
        let edits: [(String, (inout Superblock) -> Void)] = [
            ("generation", { $0.generation = .max }),
            ("journal sequence", { $0.journalSequence = .max }),
            ("journal sequence 2^63", { $0.journalSequence = 1 << 63 }),
        ]
        for (what, edit) in edits {
            var image = try SampleImage.make(seed: 3)
            try editSuperblocks(of: &image, edit)
            let outcome = try HostileImageCheck.check(image)
            guard case .damagedImage(let why)? = outcome.refusal else {
                XCTFail("\(what): \(String(describing: outcome.refusal))")
                continue
            }
            XCTAssertTrue(why.contains("out of range"), "\(what): \(why)")
        }
    }

    // MARK: - Helpers

    /// Decodes the newest superblock of `image`, lets `change` edit it, and writes it back
    /// into both copies with a valid checksum.
    private func editSuperblocks(of image: inout [UInt8], _ change: (inout Superblock) -> Void) throws {
        guard case .valid(var superblock) = Superblock.decode(Array(image[0..<4096])) else {
            return XCTFail("the sample image has no valid superblock")
        }
        change(&superblock)
        let block = superblock.encoded()
        image.replaceSubrange(0..<4096, with: block)
        image.replaceSubrange(4096..<8192, with: block)
    }
}
