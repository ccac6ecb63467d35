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
