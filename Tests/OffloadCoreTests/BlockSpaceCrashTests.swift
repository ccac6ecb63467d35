import Foundation
import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Power cuts under `BlockSpace`'s reuse rule, on the image's page seam
/// (`BackingStoreTreePages`) over the power-cut simulator, as `TreeCrashTests` does for one
/// tree: a filesystem tree and the block tree share the space, data blocks come and go,
/// and commits are made durable (sync, then `commitIsDurable`) or not.
///
/// After rounds of changes and commits, more changes and commits are made that are never
/// synced, and the power is cut at random moments among their writes. Each image a cut
/// can leave is reopened at the last durable roots: both trees must pass `check()` and
/// hold exactly what they held when that commit became durable (the block tree's runs,
/// pending frees and group summaries; the filesystem tree's items). A block of a durable
/// root handed out again before the rule allows, and overwritten, would show here.
/// Replay one seed with `OFFLOADFS_BLOCKSPACE_CRASH_SEED=N`.
final class BlockSpaceCrashTests: XCTestCase {
    static let capacity: UInt64 = 448 << 12
    static let fsTreeID: UInt32 = 1

    struct Durable {
        var fsRoot: CopyOnWriteTree.Root?
        var blockTreeRoot: CopyOnWriteTree.Root?
        var runs: [BlockRun] = []
        var pending: [UInt64: [Range<UInt64>]] = [:]
        var summaries: [UInt64: BlockGroupSummary] = [:]
        var items: [TreeKey: [UInt8]] = [:]
    }

    func testTheLastDurableCommitSurvivesPowerCuts() throws {
        let seeds = crashTestSeeds(replay: "OFFLOADFS_BLOCKSPACE_CRASH_SEED", count: 6)
        var cuts = 0, durableCommits = 0
        for seed in seeds {
            // A seed that fails says how to replay it, and stops the test.
            let run: (cuts: Int, durableCommits: Int)
            do { run = try runSeed(seed) } catch {
                return XCTFail("seed \(seed) failed: \(error)\nreplay with OFFLOADFS_BLOCKSPACE_CRASH_SEED=\(seed)")
            }
            cuts += run.cuts
            durableCommits += run.durableCommits
        }
        print("block space crash test: \(seeds.count) seeds, \(durableCommits) durable commits, \(cuts) power cuts recovered")
        if seeds.count > 1 { XCTAssertGreaterThanOrEqual(cuts, 3 * seeds.count) }
    }

    static func state(_ space: BlockSpace, _ fsTree: CopyOnWriteTree, fsRoot: CopyOnWriteTree.Root?,
                      blockTreeRoot: CopyOnWriteTree.Root?) throws -> Durable {
        var durable = Durable(fsRoot: fsRoot, blockTreeRoot: blockTreeRoot)
        durable.runs = try space.blockTree.allRuns()
        for item in try space.blockTree.pendingFrees(through: BlockReferenceTree.maximumPendingGeneration) {
            durable.pending[item.generation, default: []].append(item.blocks)
        }
        durable.summaries = try space.blockTree.storedGroupSummaries()
        try fsTree.scan(from: .minimum, through: .maximum) { key, value in
            durable.items[key] = Array(value)
            return true
        }
        return durable
    }

    func runSeed(_ seed: UInt64) throws -> (cuts: Int, durableCommits: Int) {
        var rng = SplitMix64(seed: seed)
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity) + (1 << 20))
        let store = try BackingStore(storage: disk, capacityBytes: Self.capacity)
        let imageID = store.opened.superblock.imageID
        let endBlock = Superblock.blocks + Self.capacity / UInt64(TreeNode.size)
        func open(_ store: BackingStore, _ root: CopyOnWriteTree.Root?) throws -> BlockSpace {
            try BlockSpace(io: BackingStoreTreePages(store: store), imageID: imageID, blockTreeID: 2, root: root,
                           firstBlock: Superblock.blocks, endBlock: endBlock, blocksPerGroup: 64, maximumLoadedGroups: 1)
        }
        let space = try open(store, nil)
        let fsPages = space.pages(forTree: Self.fsTreeID)
        let fsTree = try CopyOnWriteTree(pages: fsPages, imageID: imageID, treeID: Self.fsTreeID, root: nil)
        var counts: [UInt64: UInt32] = [:]
        var generation: UInt64 = 0
        var durable = Durable()
        var durableCommits = 0

        func change(_ count: Int) throws {
            for _ in 0..<count {
                // A block in use, picked in block order (dictionaries iterate in another
                // order per instance; a seed must replay).
                func pick() -> UInt64 { counts.keys.sorted()[Int(rng.next() % UInt64(counts.count))] }
                switch rng.next() % 6 {
                case 0 where counts.count < 250:
                    for block in try space.allocateData(upTo: 1 + rng.next() % 8) { counts[block] = 1 }
                case 1 where !counts.isEmpty:
                    let block = pick()
                    space.retain(block..<block + 1)
                    counts[block]! += 1
                case 2 where !counts.isEmpty:
                    let block = pick()
                    space.release(block..<block + 1)
                    counts[block]! -= 1
                    if counts[block] == 0 { counts[block] = nil }
                default:
                    let key = TreeKey(object: rng.next() % 40, kind: 1, offset: rng.next() % 10)
                    if rng.next() % 3 == 0 {
                        try fsTree.remove(key)
                    } else {
                        try fsTree.upsert(key, randomBytes(Int(rng.next() % 400), using: &rng))
                    }
                }
            }
        }
        func commit() throws -> (CopyOnWriteTree.Root?, CopyOnWriteTree.Root?) {
            generation += 1
            let fsCommit = try fsTree.commit(generation: generation)
            let result = try space.commit(generation: generation, trees: [CommittedTree(pages: fsPages, commit: fsCommit)])
            return (fsCommit.root, result.blockTreeRoot)
        }

        for round in 0..<(4 + rng.next() % 4) {
            try change(60 + Int(rng.next() % 120))
            let (fsRoot, blockTreeRoot) = try commit()
            if round == 0 || rng.next() % 4 != 0 {
                try store.sync()
                space.commitIsDurable(generation: generation)
                durable = try Self.state(space, fsTree, fsRoot: fsRoot, blockTreeRoot: blockTreeRoot)
                durableCommits += 1
            }
        }

        // Changes and commits never made durable, with power cuts among their writes.
        let cuts = TreeCrashTests.PowerCuts()
        cuts.arm(disk, cuts: 4, within: 40, using: &rng)
        for _ in 0..<2 {
            try change(40 + Int(rng.next() % 80))
            _ = try commit()
        }
        let images = cuts.disarm(disk, using: &rng)

        for (moment, change, image) in images {
            let recoveredDisk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity) + (1 << 20), initial: image)
            let recoveredStore = try BackingStore(storage: recoveredDisk, capacityBytes: Self.capacity)
            do {
                let recovered = try open(recoveredStore, durable.blockTreeRoot)
                let recoveredFS = try CopyOnWriteTree(pages: recovered.pages(forTree: Self.fsTreeID), imageID: imageID,
                                                      treeID: Self.fsTreeID, root: durable.fsRoot)
                _ = try recovered.blockTree.tree.check()
                _ = try recoveredFS.check()
                let found = try Self.state(recovered, recoveredFS, fsRoot: durable.fsRoot, blockTreeRoot: durable.blockTreeRoot)
                guard found.runs == durable.runs, found.pending == durable.pending, found.summaries == durable.summaries else {
                    throw TreeCrashTests.Failure("the block tree at the durable root differs from what was committed")
                }
                guard found.items == durable.items else {
                    throw TreeCrashTests.Failure("the filesystem tree holds \(found.items.count) items, \(durable.items.count) were committed")
                }
            } catch {
                throw TreeCrashTests.Failure("power cut at change \(moment) (before a \(change)): \(error)")
            }
        }
        return (images.count, durableCommits)
    }
}
