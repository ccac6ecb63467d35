import Foundation
import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Random operations on a `CopyOnWriteTree` over `MemoryTreePages`, each result compared
/// with a plain dictionary: upserts (new keys and overwrites), removals (present and
/// absent keys), lookups, floor searches (the greatest key at or below one) and range
/// scans, with values from 0 bytes to the maximum, in a
/// dense key space (many neighbours: splits and merges of full leaves) or a sparse one.
/// Each seed grows the tree, then shrinks it (merges, root collapse), often to empty.
/// At random points it writes the changed leaves ahead of the commit (`spillLeaves`),
/// `check()`s the working tree (dirty nodes included), commits,
/// releases the freed blocks (as after a durable commit), `check()`s the tree, compares the pages the store holds with the tree's nodes (no
/// leak, no double free: `MemoryTreePages` also refuses a committed block written
/// again), and reopens a fresh tree object at the committed root, which must hold the
/// model's items.
///
/// Replay one seed with `OFFLOADFS_TREE_SEED=N swift test --filter TreeModelTests`;
/// `OFFLOADFS_TREE_SEEDS` and `OFFLOADFS_TREE_OPS` change how much runs.
final class TreeModelTests: XCTestCase {
    struct ModelFailure: Error, CustomStringConvertible {
        var description: String
    }

    func testRandomOperationsMatchADictionary() throws {
        let run = ModelRun(prefix: "OFFLOADFS_TREE", defaultSeeds: 24, defaultOperations: 4_000)
        let seeds = run.seeds, operations = run.operations
        var totals = Totals()
        for seed in seeds {
            do {
                try runModel(seed: seed, operations: operations, &totals)
            } catch {
                XCTFail("seed \(seed) failed: \(error)\nreplay with OFFLOADFS_TREE_SEED=\(seed)")
                return
            }
        }
        print("tree model test: \(totals.operations) operations over \(seeds.count) seeds; \(totals.commits) commits, \(totals.reopens) reopens, \(totals.floors) floors, deepest level \(totals.deepestLevel), \(totals.splitsSeen) commits after splits, \(totals.shrinksSeen) after shrinks, \(totals.emptied) emptied, \(totals.spilled) leaves spilled")
        if !run.customized {
            XCTAssertGreaterThanOrEqual(totals.operations, 90_000)
            XCTAssertGreaterThanOrEqual(totals.deepestLevel, 2, "some seed must build a three-level tree")
            XCTAssertGreaterThan(totals.shrinksSeen, 0, "merges must have shrunk some tree")
            XCTAssertGreaterThan(totals.emptied, 0, "some tree must have been emptied by removals")
            XCTAssertGreaterThan(totals.spilled, 1_000, "leaves must have been written ahead of their commits")
        }
    }

    func testARunOfNoSeedsRunsNothing() {
        for count in ["0", "-3"] {
            let run = ModelRun(prefix: "X", defaultSeeds: 5, defaultOperations: 10, environment: ["X_SEEDS": count])
            XCTAssertEqual(run.seeds, [])
            XCTAssertTrue(run.customized)
        }
        XCTAssertEqual(ModelRun(prefix: "X", defaultSeeds: 3, defaultOperations: 10, environment: [:]).seeds, [1, 2, 3])
    }

    /// The floor of keys below, between, at and above the items, across leaf
    /// boundaries where a leaf's first items were removed (its separator is then below
    /// its first key, and the floor of a key between the two is in the leaf before).
    func testFloorFindsTheGreatestKeyAtOrBelow() throws {
        let pages = MemoryTreePages()
        let tree = try CopyOnWriteTree(pages: pages, imageID: 1, treeID: 3, root: nil)
        func key(_ n: UInt64) -> TreeKey { TreeKey(object: n, kind: 0, offset: 0) }
        XCTAssertNil(try tree.floor(.maximum), "an empty tree")
        // Values of 1,000 bytes at fill 1.0: three items a leaf, keys 10, 20, ... 90.
        _ = try tree.bulkLoad((1...9).map { (key(10 * UInt64($0)), [UInt8](repeating: UInt8($0), count: 1000)) },
                              fill: 1.0, generation: 1)
        XCTAssertTrue(try tree.remove(key(40)))
        XCTAssertTrue(try tree.remove(key(70)))
        XCTAssertTrue(try tree.remove(key(80)))
        let expected: [(UInt64, UInt64?)] = [(0, nil), (9, nil), (10, 10), (11, 10), (35, 30), (40, 30), (45, 30), (50, 50),
                                             (75, 60), (80, 60), (90, 90), (1000, 90)]
        for (probe, floor) in expected {
            let found = try tree.floor(key(probe))
            XCTAssertEqual(found?.key, floor.map(key), "floor of \(probe)")
            if let floor { XCTAssertEqual(found?.value, [UInt8](repeating: UInt8(floor / 10), count: 1000)) }
        }
        XCTAssertEqual(try tree.floor(.maximum)?.key, key(90))
        XCTAssertNil(try tree.floor(.minimum))
    }

    struct Totals {
        var operations = 0, commits = 0, reopens = 0, floors = 0, deepestLevel = 0, splitsSeen = 0, shrinksSeen = 0, emptied = 0
        var spilled = 0
    }

    func runModel(seed: UInt64, operations: Int, _ totals: inout Totals) throws {
        var rng = SplitMix64(seed: seed)
        let pages = MemoryTreePages()
        let imageID = rng.next()
        var tree = try CopyOnWriteTree(pages: pages, imageID: imageID, treeID: 3, root: nil)
        var model: [TreeKey: [UInt8]] = [:]
        // The model's keys in an array too: a Dictionary's order changes from run to run
        // (per-process hash seeds), and picks must replay exactly from the seed.
        var keyList: [TreeKey] = []
        var keyIndex: [TreeKey: Int] = [:]
        func modelSet(_ key: TreeKey, _ value: [UInt8]) {
            if model.updateValue(value, forKey: key) == nil {
                keyIndex[key] = keyList.count
                keyList.append(key)
            }
        }
        func modelRemove(_ key: TreeKey) -> Bool {
            guard model.removeValue(forKey: key) != nil, let index = keyIndex.removeValue(forKey: key) else { return false }
            let last = keyList.removeLast()
            if index < keyList.count {
                keyList[index] = last
                keyIndex[last] = index
            }
            return true
        }
        var log: [String] = []
        var generation: UInt64 = 1
        // The next commit's generation, known ahead: leaves spilled before it are stamped
        // with it.
        var upcoming = generation + 1 + rng.next() % 3
        var previousNodes = 0
        let dense = seed % 3 != 0
        // Value sizes: small (inode-like), medium, and up to the maximum.
        let sizeMix = seed % 4

        func fail(_ what: String) -> ModelFailure {
            ModelFailure(description: "\(what)\nlast operations:\n" + log.suffix(16).joined(separator: "\n"))
        }
        func randomKey() -> TreeKey {
            if dense {
                return TreeKey(object: rng.next() % 40, kind: UInt8(rng.next() % 3), offset: rng.next() % 64)
            }
            // Sparse, with the extremes of the key space now and then.
            switch rng.next() % 16 {
            case 0: return .minimum
            case 1: return .maximum
            default: return TreeKey(object: rng.next(), kind: UInt8(truncatingIfNeeded: rng.next()), offset: rng.next())
            }
        }
        func existingKey() -> TreeKey? {
            guard !keyList.isEmpty else { return nil }
            return keyList[Int(rng.next() % UInt64(keyList.count))]
        }
        func randomValueSize() -> Int {
            let roll = rng.next() % 100
            switch sizeMix {
            case 0: return Int(rng.next() % 48)
            case 1: return roll < 90 ? Int(rng.next() % 200) : TreeNode.maximumValueBytes - Int(rng.next() % 3)
            case 2: return Int(rng.next() % UInt64(TreeNode.maximumValueBytes + 1))
            default: return roll < 50 ? 0 : roll < 95 ? Int(rng.next() % 600) : TreeNode.maximumValueBytes
            }
        }
        func sortedModel(_ lower: TreeKey, _ upper: TreeKey) -> [(TreeKey, [UInt8])] {
            model.filter { $0.key >= lower && $0.key <= upper }.sorted { $0.key < $1.key }
        }
        func compareScan(_ t: CopyOnWriteTree, _ lower: TreeKey, _ upper: TreeKey, limit: Int = .max) throws {
            var seen: [(TreeKey, [UInt8])] = []
            try t.scan(from: lower, through: upper) { key, value in
                seen.append((key, Array(value)))
                return seen.count < limit
            }
            let expected = Array(sortedModel(lower, upper).prefix(limit))
            let sameKeys: [TreeKey] = seen.map { $0.0 }, expectedKeys: [TreeKey] = expected.map { $0.0 }
            let sameValues: [[UInt8]] = seen.map { $0.1 }, expectedValues: [[UInt8]] = expected.map { $0.1 }
            guard sameKeys == expectedKeys, sameValues == expectedValues else {
                let difference: Int = (0..<min(seen.count, expected.count)).first { sameKeys[$0] != expectedKeys[$0] } ?? min(seen.count, expected.count)
                throw fail("scan \(lower)...\(upper) (limit \(limit)) returned \(seen.count) items, the model has \(expected.count); keys first differ at \(difference)")
            }
        }
        // The floor of a key: present, absent, just below a present one, the lowest.
        func compareFloor() throws {
            var probe = rng.next() % 2 == 0 ? existingKey() ?? randomKey() : randomKey()
            switch rng.next() % 4 {
            case 0 where probe.offset > 0: probe.offset -= 1
            case 1: probe = .minimum
            default: break
            }
            var expected: TreeKey?
            for key in keyList where key <= probe && expected.map({ key > $0 }) ?? true { expected = key }
            let found = try tree.floor(probe)
            guard found?.key == expected, found?.value == expected.flatMap({ model[$0] }) else {
                throw fail("floor of \(probe) found \(found.map { "\($0.key)" } ?? "nothing"), the model \(expected.map { "\($0)" } ?? "nothing")")
            }
            totals.floors += 1
        }
        func commitAndVerify() throws {
            // The working tree, changed nodes included, checks clean before the commit too.
            let working = try tree.check()
            guard working.items == model.count else { throw fail("check before the commit counts \(working.items) items, the model has \(model.count)") }
            generation = upcoming
            upcoming = generation + 1 + rng.next() % 3
            let commit = try tree.commit(generation: generation)
            log.append("commit \(generation) -> \(commit.root.map { "\($0)" } ?? "empty"), \(commit.writtenBlocks) written, \(commit.freedBlocks.count) freed")
            totals.commits += 1
            // The commit is "durable": its freed blocks can go.
            pages.releasePages(commit.freedBlocks)
            guard pages.violations.isEmpty else { throw fail("page store: \(pages.violations)") }
            let report = try tree.check()
            guard report.items == model.count else { throw fail("check counts \(report.items) items, the model has \(model.count)") }
            guard report.nodes == pages.liveBlocks else {
                throw fail("the store holds \(pages.liveBlocks) blocks, the tree \(report.nodes) nodes (\(report))")
            }
            totals.deepestLevel = max(totals.deepestLevel, report.nodesPerLevel.count - 1)
            if report.nodes > previousNodes { totals.splitsSeen += 1 }
            if report.nodes < previousNodes { totals.shrinksSeen += 1 }
            if previousNodes > 0 && report.nodes == 0 { totals.emptied += 1 }
            previousNodes = report.nodes
            // A fresh tree object at the committed root sees exactly the model.
            let reopened = try CopyOnWriteTree(pages: pages, imageID: imageID, treeID: 3, root: commit.root)
            try compareScan(reopened, .minimum, .maximum)
            totals.reopens += 1
            if rng.next() % 2 == 0 { tree = reopened }
        }

        let growUntil = operations * 3 / 5
        for step in 0..<operations {
            let growing = step < growUntil
            let roll = rng.next() % 100
            if roll < (growing ? 55 : 20) {
                let key = rng.next() % 4 == 0 ? existingKey() ?? randomKey() : randomKey()
                let value = randomBytes(randomValueSize(), using: &rng)
                log.append("upsert \(key) \(value.count) bytes\(model[key] == nil ? "" : " (overwrite)")")
                try tree.upsert(key, value)
                modelSet(key, value)
            } else if roll < (growing ? 75 : 85) {
                let key = rng.next() % 5 == 0 ? randomKey() : existingKey() ?? randomKey()
                log.append("remove \(key)\(model[key] == nil ? " (absent)" : "")")
                let removed = try tree.remove(key)
                guard removed == modelRemove(key) else { throw fail("remove of \(key) returned \(removed)") }
            } else if roll < 93 {
                let key = rng.next() % 2 == 0 ? existingKey() ?? randomKey() : randomKey()
                let found = try tree.lookup(key)
                guard found == model[key] else { throw fail("lookup of \(key) found \(found?.count ?? -1) bytes, the model \(model[key]?.count ?? -1)") }
                if roll % 4 == 0 { try compareFloor() }
            } else if roll < 94 {
                // Changed leaves written ahead of the commit, read back when changed again.
                let written = try tree.spillLeaves(generation: upcoming)
                log.append("spill \(written) leaves at generation \(upcoming)")
                totals.spilled += written
            } else if roll < 97 {
                var (lower, upper) = (randomKey(), rng.next() % 3 == 0 ? TreeKey.maximum : randomKey())
                if upper < lower { swap(&lower, &upper) }
                log.append("scan \(lower)...\(upper)")
                try compareScan(tree, lower, upper, limit: rng.next() % 2 == 0 ? .max : Int(rng.next() % 50) + 1)
            } else {
                try commitAndVerify()
            }
            totals.operations += 1
        }
        // Empty what is left now and then, so that shrinking to nothing is covered.
        if seed % 4 == 1 {
            for key in keyList {
                log.append("remove \(key) (emptying)")
                guard try tree.remove(key) else { throw fail("remove of present \(key) returned false") }
            }
            model.removeAll()
            keyList.removeAll()
            keyIndex.removeAll()
            guard tree.isEmpty else { throw fail("a tree with every item removed still has a root") }
        }
        try commitAndVerify()
    }
}
