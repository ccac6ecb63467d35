import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// `TreeVolume` under power cuts: random namespace operations (files written with RAM
/// pieces the commit places in the image, so data blocks come and go through the block
/// space) are committed; during some commits the power is cut at random moments among
/// the image's changes (`CrashSimulatingStorage`: what the last sync made durable, plus
/// any subset of later pages, some torn). Each image a cut leaves must open at the commit
/// before the cut one, or at the cut one when its slot became durable, and read exactly
/// as the model did then: names, attributes, xattrs, targets, orphans, every file's bytes
/// from the image, and the block tree's data references equal to what the extents hold.
/// The reopened volume must then take a change and a commit. A crash also cuts nothing
/// from a commit that returned.
/// Replay one seed with `OFFLOADFS_VOLUME_CRASH_SEED=N`.
final class TreeVolumeCrashTests: XCTestCase {
    static let capacity: UInt64 = 6 << 20

    func testACutCommitOpensAtTheCommitBeforeOrAtItWholeAndReadsAsTheModel() throws {
        let seeds = crashTestSeeds(replay: "OFFLOADFS_VOLUME_CRASH_SEED", count: 5)
        var totals = (cuts: 0, landed: 0, commits: 0, placed: 0, punched: 0)
        for seed in seeds {
            do {
                let run = try runSeed(seed)
                totals.cuts += run.cuts
                totals.landed += run.landed
                totals.commits += run.commits
                totals.placed += run.placed
                totals.punched += run.punched
            } catch {
                return XCTFail("seed \(seed) failed: \(error)\nreplay with OFFLOADFS_VOLUME_CRASH_SEED=\(seed)")
            }
        }
        print("volume crash test: \(seeds.count) seeds, \(totals.commits) commits, \(totals.cuts) cuts (\(totals.landed) after the slot), \(totals.placed) bytes placed, \(totals.punched) blocks punched")
        if seeds.count > 1 {
            XCTAssertGreaterThan(totals.cuts, 10 * seeds.count)
            XCTAssertGreaterThan(totals.landed, 0, "no cut came after a slot became durable")
            XCTAssertGreaterThan(totals.cuts - totals.landed, 0, "no cut came before a slot became durable")
            XCTAssertGreaterThan(totals.punched, 0, "no freed block was ever retired and punched")
        }
    }

    struct CheckFailure: Error, CustomStringConvertible {
        var description: String
    }

    func runSeed(_ seed: UInt64) throws -> (cuts: Int, landed: Int, commits: Int, placed: Int, punched: Int) {
        var rng = SplitMix64(seed: seed)
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let key = SipHash24(key0: seed, key1: ~seed)
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: seed + 1, nameHashKey: key)
        let script = NamespaceChangeScript(seed: seed, refusals: false)
        script.longMemoryPieces = true
        script.model.refusesLongMemoryPieces = false
        script.perform = { changes, _ in
            try volume.perform(changes)
            for change in changes { script.model.apply(change) }
        }
        try script.makeRoot()
        try volume.commit()
        var durable = (generation: volume.current.generation, model: script.model)
        var cuts = 0, landed = 0, commits = 1, placed = 0, punched = 0

        for _ in 0..<(8 + rng.next() % 6) {
            for _ in 0..<(10 + rng.next() % 40) { try script.step() }
            let before = durable
            let cutting = rng.next() % 2 == 0
            let powerCuts = TreeCrashTests.PowerCuts()
            if cutting { powerCuts.arm(disk, cuts: 8, within: 50, using: &rng) }
            let report = try volume.commit()
            commits += 1
            placed += report.placedBytes
            punched += report.punchedBlocks
            durable = (volume.current.generation, script.model)
            guard cutting else { continue }
            for (moment, change, image) in powerCuts.disarm(disk, using: &rng) {
                let recovered = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image))
                let generation = recovered.current.generation
                let expected: FileSystemModel
                if generation == before.generation {
                    expected = before.model
                } else if generation == durable.generation {
                    expected = durable.model
                    landed += 1
                } else {
                    throw CheckFailure(description: "a cut before change \(moment) (\(change)) opened at commit \(generation), not \(before.generation) or \(durable.generation)")
                }
                if let problem = try Self.mismatch(recovered, expected) {
                    throw CheckFailure(description: "a cut before change \(moment) (\(change)), opened at commit \(generation): \(problem)")
                }
                // The recovered image takes a change and a commit.
                var root = expected.inodes[1]!
                root.permissions = 0o700
                try recovered.perform([.attributes(inode: 1, root)])
                try recovered.commit()
                var after = expected
                after.apply(.attributes(inode: 1, root))
                if let problem = try Self.mismatch(recovered, after) {
                    throw CheckFailure(description: "after a cut before change \(moment) and a commit on the recovered image: \(problem)")
                }
                cuts += 1
            }
        }
        return (cuts, landed, commits, placed, punched)
    }

    /// The first difference between the volume's committed state and `model` (nil: none).
    static func mismatch(_ volume: TreeVolume, _ model: FileSystemModel) throws -> String? {
        if let problem = try model.mismatch(in: try volume.reader(), absent: Array("never-made".utf8)) { return problem }
        let fs = volume.filesystem
        _ = try fs.tree.check()
        _ = try volume.space.blockTree.tree.check()
        // Every file's bytes, from the image.
        var expectedCounts: [UInt64: UInt32] = [:]
        for (inode, item) in model.inodes where item.type == 8 {
            let cells = model.contents[inode] ?? []
            var bytes = [UInt8](repeating: 0, count: cells.count)
            for (offset, extent) in try fs.extents(inode, overlapping: 0..<UInt64.max) {
                guard offset + extent.length <= UInt64(cells.count) else { return "file \(inode): an extent past its size" }
                switch extent {
                case .image(let image, let length):
                    try bytes.withUnsafeMutableBytes { raw in
                        let part = UnsafeMutableRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset + length)])
                        _ = try volume.storage.read(into: part, at: image)
                    }
                    for block in ExtentReferenceChanges.blocks(offset: image, length: length) { expectedCounts[block, default: 0] += 1 }
                case .fill(let byte, let length):
                    bytes.replaceSubrange(Int(offset)..<Int(offset + length), with: repeatElement(byte, count: Int(length)))
                case .inline(let inline):
                    bytes.replaceSubrange(Int(offset)..<Int(offset) + inline.count, with: inline)
                }
            }
            if bytes != cells.map({ UInt8(truncatingIfNeeded: $0) }) { return "file \(inode): its bytes differ from the model's" }
        }
        // The block tree's data runs hold exactly the extents' references.
        var counted: [UInt64: UInt32] = [:]
        for run in try volume.space.blockTree.allRuns() where run.use == .data {
            for block in run.blocks { counted[block] = run.count }
        }
        if counted != expectedCounts {
            let differing = Set(counted.keys).union(expectedCounts.keys).filter { counted[$0] != expectedCounts[$0] }.sorted().prefix(5)
            return "data references differ from the extents' at blocks \(differing.map { "\($0): \(counted[$0] ?? 0) vs \(expectedCounts[$0] ?? 0)" })"
        }
        return nil
    }
}
