import Foundation
import OffloadCore
import SplitMix

/// `offloadfs-bench --tree`: the copy-on-write tree (OffloadCore/Tree) in an image on
/// /dev/shm: bulk load of N inode-like items, random lookups (each validates every node
/// on the path: checksum included; nothing is cached), and random overwrites committed
/// every 1,000 changes. Prints a Markdown table for docs/BENCHMARKS.md.
/// Not main-actor isolated (unlike main.swift's top level): closures there pay an
/// executor check per call, which dominated the first runs of this benchmark.
func runTreeBenchmark(directory: URL) throws {
    print("## Tree engine: bulk load, lookup and overwrite (release build, \(valueBytes)-byte values, best of 3 rounds)\n")
    print("| items | levels | nodes | bulk load (s) | lookup | overwrite + commit share |")
    print("|---:|---:|---:|---:|---:|---:|")
    for count in [10_000, 1_000_000, 10_000_000] {
        let path = directory.appendingPathComponent("tree\(count)").path
        defer { unlink(path) }
        let store = try BackingStore(path: path, capacityBytes: 4 << 30)
        let pages = BackingStoreTreePages(store: store)
        let tree = try CopyOnWriteTree(pages: pages, imageID: store.opened.superblock.imageID, treeID: 1, root: nil)
        let loadStart = now()
        let commit = try tree.bulkLoad((0..<count).lazy.map { (key($0), value($0)) }, fill: 0.9, generation: 1)
        let loadSeconds = Double(now() - loadStart) / 1e9
        let report = try tree.check()
        precondition(report.items == count)
        var lookup = Double.infinity, overwrite = Double.infinity
        var generation: UInt64 = 1
        for round in 0..<3 {
            lookup = min(lookup, try measure(200_000) { rng in
                let i = Int(rng.next() % UInt64(count))
                let found = try tree.withValue(key(i)) { $0?.count }
                precondition(found == valueBytes)
            })
            let fresh = value(round + 1)
            overwrite = min(overwrite, try measure(20_000) { rng in
                try tree.upsert(key(Int(rng.next() % UInt64(count))), fresh)
                if tree.dirtyNodeCount >= 1_000 {
                    generation += 1
                    let commit = try tree.commit(generation: generation)
                    pages.releasePages(commit.freedBlocks)
                }
            })
        }
        print("| \(count) | \(Int(commit.root?.level ?? 0) + 1) | \(report.nodes) | \(String(format: "%.2f", loadSeconds)) | \(format(lookup)) | \(format(overwrite)) |")
    }
    print("")
}

private let valueBytes = 32

/// Inode-like keys: three items per object, objects 7 apart.
private func key(_ i: Int) -> TreeKey { TreeKey(object: UInt64(i / 3) * 7, kind: UInt8(i % 3), offset: 0) }

private func value(_ i: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0xA5, count: valueBytes)
    withUnsafeBytes(of: UInt64(i).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
    return bytes
}
