import Foundation
import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Power cuts under the tree's copy-on-write discipline, on `BackingStoreTreePages` over
/// the power-cut simulator (`CrashSimulatingStorage`).
///
/// Each seed runs rounds of random changes, each ended by a commit; most commits are made
/// durable (fdatasync), and only then are their freed blocks (and those of earlier
/// unsynced commits) released, so the allocator may hand them out again; the root of the
/// last durable commit is kept here, as a superblock would keep it. Then more changes and
/// commits that are never synced, during which the power is cut at a few random moments
/// (before any write, punch or sync: inside commits too). Each image a cut can leave (the
/// durable bytes plus any subset of later pages, some torn) is reopened: the tree at the
/// last durable root must pass `check()` and hold exactly what it held at that commit.
/// A committed page written again, or freed too early, would show here.
///
/// Replay one seed with `OFFLOADFS_TREE_CRASH_SEED=N swift test --filter TreeCrashTests`:
/// a seed makes the same writes in the same order, so its power cuts land at the same
/// moments and leave the same images (`testASeedReplaysExactly`).
final class TreeCrashTests: XCTestCase {
    static let capacity: UInt64 = 32 << 20

    /// Power-cut images taken at chosen moments (counted in changes to the image).
    final class PowerCuts: @unchecked Sendable {
        let lock = PthreadMutex<State>(State())
        struct State {
            var changes = 0
            var moments: Set<Int> = []
            var images: [(moment: Int, change: String, image: [UInt8])] = []
            /// Every change to the image, in order.
            var trace: [String] = []
            var rng = SplitMix64(seed: 0)
        }
    }

    func testTheLastDurableRootSurvivesPowerCuts() throws {
        let seeds = crashTestSeeds(replay: "OFFLOADFS_TREE_CRASH_SEED", count: 40)
        var cuts = 0, durableCommits = 0
        for seed in seeds {
            do {
                let run = try runSeed(seed)
                cuts += run.cuts.count
                durableCommits += run.durableCommits
            } catch {
                XCTFail("seed \(seed) failed: \(error)\nreplay with OFFLOADFS_TREE_CRASH_SEED=\(seed)")
                return
            }
        }
        print("tree crash test: \(seeds.count) seeds, \(durableCommits) durable commits, \(cuts) power cuts recovered")
        if seeds.count > 1 { XCTAssertGreaterThanOrEqual(cuts, 3 * seeds.count, "power cuts inside the unsynced changes") }
    }

    /// Two runs of one seed (in one process: dictionaries iterate in another order per
    /// instance) change the image in the same order, so the power is cut at the same
    /// changes (the images differ only by the image id, random per image).
    func testASeedReplaysExactly() throws {
        let first = try runSeed(7), second = try runSeed(7)
        XCTAssertGreaterThan(first.cuts.count, 1)
        XCTAssertGreaterThan(first.trace.filter { $0.hasPrefix("write") }.count, 10)
        XCTAssertEqual(first.trace, second.trace)
        XCTAssertEqual(first.cuts, second.cuts)
    }

    struct SeedRun {
        /// Each power cut: the change it came before.
        var cuts: [String]
        /// Every change to the image while the power cuts were armed.
        var trace: [String]
        var durableCommits: Int
    }

    func runSeed(_ seed: UInt64) throws -> SeedRun {
        var rng = SplitMix64(seed: seed)
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity) + (16 << 20))
        let store = try BackingStore(storage: disk, capacityBytes: Self.capacity)
        let imageID = store.opened.superblock.imageID
        let pages = BackingStoreTreePages(store: store)
        let tree = try CopyOnWriteTree(pages: pages, imageID: imageID, treeID: 1, root: nil)
        var model: [TreeKey: [UInt8]] = [:]
        var generation: UInt64 = 0
        var durableRoot: CopyOnWriteTree.Root?
        var durableModel: [TreeKey: [UInt8]] = [:]
        var heldFreed: [UInt64] = []
        var durableCommits = 0

        func change(_ count: Int) throws {
            for _ in 0..<count {
                let key = TreeKey(object: rng.next() % 30, kind: UInt8(rng.next() % 2), offset: rng.next() % 40)
                if rng.next() % 3 == 0 {
                    try tree.remove(key)
                    model[key] = nil
                } else {
                    let size = rng.next() % 10 == 0 ? Int(rng.next() % UInt64(TreeNode.maximumValueBytes + 1)) : Int(rng.next() % 200)
                    let value = randomBytes(size, using: &rng)
                    try tree.upsert(key, value)
                    model[key] = value
                }
            }
        }

        for _ in 0..<(4 + rng.next() % 4) {
            try change(50 + Int(rng.next() % 300))
            generation += 1
            let commit = try tree.commit(generation: generation)
            heldFreed += commit.freedBlocks
            if rng.next() % 4 != 0 {
                try store.sync()
                durableRoot = commit.root
                durableModel = model
                durableCommits += 1
                // Durable: nothing reachable from it was freed, and older roots are gone.
                pages.releasePages(heldFreed)
                heldFreed = []
            }
        }

        // Changes never made durable, with power cuts at random moments among them.
        let cuts = PowerCuts()
        cuts.arm(disk, cuts: 4, within: 100, using: &rng)
        for _ in 0..<2 {
            try change(30 + Int(rng.next() % 200))
            generation += 1
            heldFreed += try tree.commit(generation: generation).freedBlocks
        }
        let images = cuts.disarm(disk, using: &rng)

        for (moment, change, image) in images {
            let recoveredDisk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity) + (16 << 20), initial: image)
            let recoveredStore = try BackingStore(storage: recoveredDisk, capacityBytes: Self.capacity)
            guard case .existing = recoveredStore.opened else { throw Failure("the image lost its superblocks") }
            do {
                let recovered = try CopyOnWriteTree(pages: BackingStoreTreePages(store: recoveredStore), imageID: imageID,
                                                    treeID: 1, root: durableRoot)
                let report = try recovered.check()
                var items: [TreeKey: [UInt8]] = [:]
                try recovered.scan(from: .minimum, through: .maximum) { key, value in
                    items[key] = Array(value)
                    return true
                }
                guard report.items == durableModel.count, items == durableModel else {
                    throw Failure("the tree at the durable root holds \(items.count) items, \(durableModel.count) were committed")
                }
            } catch {
                throw Failure("power cut at change \(moment) (before a \(change)), durable root \(durableRoot.map { "\($0)" } ?? "none"): \(error)")
            }
        }
        return SeedRun(cuts: images.map { "\($0.moment): \($0.change)" }, trace: cuts.lock.withLock { $0.trace },
                       durableCommits: durableCommits)
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}

extension TreeCrashTests.PowerCuts {
    /// From now on, takes an image of what a power cut could leave of `disk` before each
    /// of `count` changes drawn among the next `span` (from `rng`, so a seed replays).
    func arm(_ disk: CrashSimulatingStorage, cuts count: Int, within span: UInt64, using rng: inout SplitMix64) {
        lock.withLock { s in
            s.rng = SplitMix64(seed: rng.next())
            for _ in 0..<count { s.moments.insert(1 + Int(rng.next() % span)) }
        }
        disk.beforeChange { change in
            self.lock.withLock { s in
                s.changes += 1
                s.trace.append("\(change)")
                if s.moments.contains(s.changes) {
                    s.images.append((s.changes, "\(change)", disk.crashImage(using: &s.rng)))
                }
            }
        }
    }

    /// Stops taking images; returns those taken and one of a cut after the last change.
    func disarm(_ disk: CrashSimulatingStorage, using rng: inout SplitMix64) -> [(moment: Int, change: String, image: [UInt8])] {
        disk.beforeChange(nil)
        let (images, changes) = lock.withLock { ($0.images, $0.changes) }
        return images + [(changes + 1, "the end", disk.crashImage(using: &rng))]
    }
}
