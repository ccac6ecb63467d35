import Foundation
import XCTest
import OffloadCore
import OffloadFuzzing
import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Real images of both formats (odd seeds format 1, even ones format 2), made by
/// `SampleImage`'s workload (files in image blocks and in RAM pieces, directories,
/// xattrs, a symlink, a hard link, a FIFO, a clone, a file unlinked while open; a
/// checkpoint or a commit, and a journal tail), damaged at random: bits flipped, bytes and
/// sectors overwritten, blocks zeroed, the file cut short; half of the time the checksums
/// are then made good again, so the damage reaches the decoders. Each damaged image must
/// keep `HostileImageCheck`'s properties: open, or a clear refusal; repair ends in an image
/// that opens, or a clear refusal; never a trap.
///
/// `OFFLOADFS_FLIP_SEED=N` replays one seed, `OFFLOADFS_FLIP_ROUNDS=N` changes the number
/// of damaged images per seed (60).
final class ByteFlipTests: XCTestCase {
    func testDamagedRealImagesOpenOrAreRefusedAndRepairEndsCleanly() throws {
        let environment = ProcessInfo.processInfo.environment
        let seeds = environment["OFFLOADFS_FLIP_SEED"].flatMap { UInt64($0) }.map { [$0] } ?? Array(1...8)
        let rounds = environment["OFFLOADFS_FLIP_ROUNDS"].flatMap { Int($0) } ?? 60
        // A trap cannot be caught: each damaged image is written here (as a fuzz input)
        // before it is checked, so that a crash leaves it for `offloadfs-fuzz FILE`.
        let current = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-byte-flip-current")
        var tally = (opened: 0, refused: 0, repaired: 0, repairRefused: 0)
        for seed in seeds {
            print("byte flips: seed \(seed) (after a crash, replay the damaged image with .build/debug/offloadfs-fuzz \(current.path))")
            var random = SplitMix64(seed: seed)
            let original = try SampleImage.make(seed: seed, clean: seed % 3 == 0, format: seed % 2 == 1 ? .one : .two)
            let used = Self.nonZeroBlocks(original)
            for round in 0..<rounds {
                var image = original
                let damage = Self.damage(&image, usedBlocks: used, random: &random)
                let input = FuzzInput.encode(image, flags: 0)
                try Data(input).write(to: current)
                do {
                    let outcome = try HostileImageCheck.check(FuzzInput.image(from: input))
                    if outcome.refusal == nil { tally.opened += 1 } else { tally.refused += 1 }
                    if outcome.refusal != nil && outcome.repairRefusal == nil { tally.repaired += 1 }
                    if outcome.repairRefusal != nil { tally.repairRefused += 1 }
                } catch {
                    let kept = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-byte-flip-\(seed)-\(round)")
                    try Data(input).write(to: kept)
                    XCTFail("seed \(seed) round \(round) (\(damage)): \(error); the image is in \(kept.path) (replay: .build/debug/offloadfs-fuzz \(kept.path))")
                }
            }
        }
        try? FileManager.default.removeItem(at: current)
        print("byte flips: \(seeds.count * rounds) damaged images: \(tally.opened) opened, \(tally.refused) refused "
              + "(\(tally.repaired) of those repaired into an image that opens, \(tally.repairRefused) refused by repair too)")
        XCTAssertGreaterThan(tally.refused, 0, "some damage must be found")
        XCTAssertGreaterThan(tally.repaired, 0, "some damage must be repairable")
    }

    /// The blocks holding anything: superblocks, metadata frames, file data.
    static func nonZeroBlocks(_ image: [UInt8]) -> [Int] {
        image.withUnsafeBytes { all in
            stride(from: 0, to: all.count, by: 4096).filter { start in
                !MemoryImageStorage.isZero(UnsafeRawBufferPointer(rebasing: all[start..<min(start + 4096, all.count)]))
            }.map { $0 / 4096 }
        }
    }

    /// Damages `image` in one random way; returns what it did.
    static func damage(_ image: inout [UInt8], usedBlocks: [Int], random: inout SplitMix64) -> String {
        func position() -> Int {
            let block = usedBlocks[Int(random.next() % UInt64(usedBlocks.count))]
            // Superblocks hold 128 bytes (commit slots 256); elsewhere anywhere in the block.
            return block * 4096 + Int(random.next() % (block < 2 ? 256 : 4096))
        }
        var what: String
        switch random.next() % 5 {
        case 0:
            let flips = Int(random.next() % 8) + 1
            for _ in 0..<flips {
                let at = position()
                image[at] ^= UInt8(1) << (random.next() % 8)
            }
            what = "\(flips) bits flipped"
        case 1:
            let at = position(), count = min(Int(random.next() % 64) + 1, image.count - at)
            for i in 0..<count { image[at + i] = UInt8(truncatingIfNeeded: random.next()) }
            what = "\(count) bytes at \(at) overwritten"
        case 2:
            let sector = position() / 512 * 512
            let zero = random.next() % 2 == 0
            for i in sector..<min(sector + 512, image.count) { image[i] = zero ? 0 : UInt8(truncatingIfNeeded: random.next()) }
            what = "sector at \(sector) \(zero ? "zeroed" : "overwritten") (a torn write)"
        case 3:
            let block = usedBlocks[Int(random.next() % UInt64(usedBlocks.count))]
            for i in (block * 4096)..<min((block + 1) * 4096, image.count) { image[i] = 0 }
            what = "block \(block) zeroed"
        default:
            let length = Int(random.next() % UInt64(image.count))
            image.removeLast(image.count - length)
            what = "cut to \(length) bytes"
        }
        if random.next() % 2 == 0 {
            let storage = MemoryImageStorage(maximumBytes: max(image.count, 1), initial: image)
            ChecksumRepair.apply(to: storage)
            image = storage.bytes
            what += ", checksums made good"
        }
        return what
    }
}
