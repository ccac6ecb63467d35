import Foundation
import XCTest
@testable import OffloadCore
import SplitMix

/// The tree's reader contract (`TreePageStore`, `CopyOnWriteTree`): threads reading a
/// committed root through their own tree objects need no lock while one writer goes on
/// changing and committing, as long as the blocks a commit frees are released only once
/// no reader holds a root that still references them. Runs over the image
/// (`BackingStoreTreePages`), so readers copy nodes out of the mapping while the writer
/// writes new ones into it and punches released ones; under ThreadSanitizer
/// (scripts/tsan) it also shows the readers share no state with the writer.
final class TreeConcurrentReaderTests: XCTestCase {
    /// What the writer publishes after each commit.
    struct Published {
        var root: CopyOnWriteTree.Root?
        var items: [TreeKey: [UInt8]]
        var finished = false
        /// Generations of the roots readers hold now (a multiset as counts).
        var readers: [UInt64: Int] = [:]
    }

    func testReadersOfCommittedRootsNeedNoLockWhileTheWriterCommits() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 256 << 20)
        let imageID = store.opened.superblock.imageID
        let pages = BackingStoreTreePages(store: store)
        let writer = try CopyOnWriteTree(pages: pages, imageID: imageID, treeID: 1, root: nil)
        var model: [TreeKey: [UInt8]] = [:]
        var rng = SplitMix64(seed: 21)
        let initial = (0..<5_000).map { i in (TreeKey(object: UInt64(i), kind: 0, offset: 0), randomBytes(Int(rng.next() % 80), using: &rng)) }
        for (key, value) in initial { model[key] = value }
        let first = try writer.bulkLoad(initial, fill: 0.8, generation: 1)
        let published = PthreadMutex(Published(root: first.root, items: model))
        let failures = PthreadMutex<[String]>([])
        let readerCount = 2
        let readsDone = PthreadMutex(0)

        let context = ReaderContext(pages: pages, imageID: imageID, published: published, failures: failures, readsDone: readsDone)
        let group = DispatchGroup()
        for r in 0..<readerCount {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                context.read(reader: r)
            }
        }

        // The writer: rounds of changes, each committed and published; freed blocks wait
        // until no reader holds a root older than the commit that freed them.
        var waiting: [(generation: UInt64, blocks: [UInt64])] = []
        var generation: UInt64 = 1
        for _ in 0..<40 {
            for _ in 0..<150 {
                let key = TreeKey(object: rng.next() % 6_000, kind: 0, offset: 0)
                if rng.next() % 3 == 0 {
                    try writer.remove(key)
                    model[key] = nil
                } else {
                    let value = randomBytes(Int(rng.next() % 300), using: &rng)
                    try writer.upsert(key, value)
                    model[key] = value
                }
            }
            generation += 1
            let commit = try writer.commit(generation: generation)
            waiting.append((generation, commit.freedBlocks))
            let oldestRead = published.withLock { p -> UInt64? in
                p.root = commit.root
                p.items = model
                return p.readers.keys.min()
            }
            // Blocks freed by commit g were referenced by roots before g only.
            func releasable(_ entry: (generation: UInt64, blocks: [UInt64])) -> Bool {
                guard let oldestRead else { return true }
                return entry.generation <= oldestRead
            }
            pages.releasePages(waiting.filter(releasable).flatMap { $0.blocks })
            waiting.removeAll(where: releasable)
        }
        published.withLock { $0.finished = true }
        group.wait()
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertGreaterThan(readsDone.withLock { $0 }, readerCount, "readers read while the writer committed")
        XCTAssertEqual(try writer.check().items, model.count)
        try store.checkInvariants()
    }

    /// What reader threads share: the store (read only through the mapping) and the
    /// published state behind its mutex.
    final class ReaderContext: @unchecked Sendable {
        let pages: BackingStoreTreePages
        let imageID: UInt64
        let published: PthreadMutex<Published>
        let failures: PthreadMutex<[String]>
        let readsDone: PthreadMutex<Int>

        init(pages: BackingStoreTreePages, imageID: UInt64, published: PthreadMutex<Published>,
             failures: PthreadMutex<[String]>, readsDone: PthreadMutex<Int>) {
            self.pages = pages
            self.imageID = imageID
            self.published = published
            self.failures = failures
            self.readsDone = readsDone
        }

        /// Reads the latest published root again and again (through a tree object of its
        /// own each time) until the writer is finished.
        func read(reader r: Int) {
            var local = SplitMix64(seed: UInt64(100 + r))
            while true {
                // Take the current root and register as its reader.
                let (root, items, finished) = published.withLock { p in
                    if let root = p.root { p.readers[root.generation, default: 0] += 1 }
                    return (p.root, p.items, p.finished)
                }
                if finished { return }
                defer {
                    if let root {
                        published.withLock { p in
                            p.readers[root.generation]! -= 1
                            if p.readers[root.generation] == 0 { p.readers[root.generation] = nil }
                        }
                    }
                }
                do {
                    try check(root: root, items: items, &local)
                    readsDone.withLock { $0 += 1 }
                } catch {
                    failures.withLock { $0.append("reader \(r): \(error)") }
                    return
                }
            }
        }

        private func check(root: CopyOnWriteTree.Root?, items: [TreeKey: [UInt8]], _ rng: inout SplitMix64) throws {
            let tree = try CopyOnWriteTree(pages: pages, imageID: imageID, treeID: 1, root: root)
            var seen = 0
            try tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) -> Bool in
                guard items[key].map({ $0.elementsEqual(value) }) ?? false else {
                    throw .io("item \(key) differs from the model of generation \(root?.generation ?? 0)")
                }
                seen += 1
                return true
            }
            guard seen == items.count else { throw FSError.io("scan saw \(seen) items, \(items.count) committed") }
            for _ in 0..<200 {
                let key = TreeKey(object: rng.next() % 6_000, kind: 0, offset: 0)
                guard try tree.lookup(key) == items[key] else { throw FSError.io("lookup of \(key) differs") }
            }
        }
    }
}
