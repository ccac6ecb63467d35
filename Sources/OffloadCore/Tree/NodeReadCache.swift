#if canImport(Glibc)
import Glibc
#endif

/// Validated committed nodes kept between reads, shared by every reader of a volume
/// (`TreeVolume.reader()`): readers of one commit read the same upper nodes for every
/// lookup, and each read was a pread and a CRC-32C of 4 KiB; readers of the next commit
/// read most of the same nodes again, since a commit copies only the paths it changes.
///
/// A hit must match what the parent recorded (level, generation, checksum), as a read
/// would be validated against it, so the cache needs no invalidation across commits: a
/// block freed and written again by a later commit holds a node of a later generation and
/// another checksum, which no parent of the old one records, and a reader's path from its
/// root (checked against the slot) to a cached node is validated link by link. Only for
/// trees that read durable roots: the commit's working tree has none (its dirty nodes
/// change in place).
///
/// Interior nodes and leaves have pools of their own. Every lookup descends through the
/// interior levels, while a leaf serves only the keys it holds: in one shared pool, random
/// lookups in a large tree (two leaves each, a name's and an inode's) replaced the interior
/// nodes before their next use: a cold lookup at 1,000,000 files made 3.05 preads where it
/// makes 2.33 with the pools apart (docs/BENCHMARKS.md, "Cold lookups").
///
/// Safe to use from many threads: each pool's slots are split into shards by block, each
/// behind its own lock, held for one 4 KiB copy by a read or an insert (for up to
/// `forgottenPerHold` removals by `forget`, and for its madvise calls by
/// `releaseFreeSlots`). Each shard has a fixed number of slots (at most `capacity` x
/// 4 KiB, a shard's allocated at its first insert; the kernel gives a fresh allocation's
/// pages as slots are first used). A commit hands the cache the blocks of the nodes it
/// replaced (`forget`): their slots are free again and taken before any other, so the
/// pools hold the nodes readers of recent commits read, not every copy commits
/// superseded (which filled both pools whatever the tree's size: 40 MiB for a tree of a
/// few leaves). A reader of an older commit may insert a replaced node again after its
/// forget; that copy stays until the hand passes it, as all did before. When a shard has
/// no free slot, slots are replaced in turn with a second chance for a slot hit since the
/// hand last passed it (CLOCK). At rest the free slots' pages go back to the kernel
/// (`releaseFreeSlots`). A hit copies the node into the caller's level buffer, so a view
/// handed out never points into a slot that a later insert may replace.
public final class NodeReadCache: @unchecked Sendable {
    // @unchecked: every shard's state is reached only under its lock.
    private let leafShards: [Shard]
    private let interiorShards: [Shard]
    /// Slots for leaves (level 0) and for interior nodes (levels 1 and up).
    public let leafCapacity: Int
    public let interiorCapacity: Int
    public var capacity: Int { leafCapacity + interiorCapacity }

    /// `leafCapacity` and `interiorCapacity` slots, each over `shardCount` shards (at
    /// least one slot each).
    public init(leafCapacity: Int, interiorCapacity: Int, shardCount: Int = 16) {
        precondition(leafCapacity > 0 && interiorCapacity > 0 && shardCount > 0)
        let leavesPerShard = max(1, leafCapacity / shardCount)
        let interiorPerShard = max(1, interiorCapacity / shardCount)
        leafShards = (0..<shardCount).map { _ in Shard(capacity: leavesPerShard) }
        interiorShards = (0..<shardCount).map { _ in Shard(capacity: interiorPerShard) }
        self.leafCapacity = leavesPerShard * shardCount
        self.interiorCapacity = interiorPerShard * shardCount
    }

    @inline(__always)
    private func shard(_ block: UInt64, level: UInt8) -> Shard {
        let shards = level == 0 ? leafShards : interiorShards
        return shards[Int(block % UInt64(shards.count))]
    }

    /// Copies the cached node at `block` into `page` when it is there as the parent
    /// recorded it; false otherwise.
    func copy(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32,
              into page: UnsafeMutableRawPointer) -> Bool {
        shard(block, level: level).copy(block, level: level, generation: generation, checksum: checksum, into: page)
    }

    /// Keeps the validated node `page` of `block`.
    func insert(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32, from page: UnsafeRawPointer) {
        shard(block, level: level).insert(block, level: level, generation: generation, checksum: checksum, from: page)
    }

    /// Lets go of the nodes at `blocks`, whatever their level: a commit's replaced nodes
    /// (`CopyOnWriteTree.Commit.freedBlocks`), which no reader of a later commit reads. A
    /// reader of an earlier commit that still reads one misses and reads its block, which
    /// is not reused before that reader is done. Each shard's lock is held for at most
    /// `forgottenPerHold` blocks at a time.
    public func forget(_ blocks: [UInt64]) {
        guard !blocks.isEmpty else { return }
        var byShard = Array(repeating: [UInt64](), count: leafShards.count)
        for block in blocks { byShard[Int(block % UInt64(byShard.count))].append(block) }
        for (index, blocks) in byShard.enumerated() where !blocks.isEmpty {
            var start = 0
            while start < blocks.count {
                let part = blocks[start..<min(blocks.count, start + Self.forgottenPerHold)]
                leafShards[index].forget(part)
                interiorShards[index].forget(part)
                start = part.endIndex
            }
        }
    }

    static let forgottenPerHold = 256

    /// Gives the pages of the slots that hold no node back to the kernel (madvise); the
    /// number of slots whose pages went. At rest (the heap trim's moment): each shard's
    /// lock is held for its syscalls.
    @discardableResult
    public func releaseFreeSlots() -> Int {
        (leafShards + interiorShards).reduce(0) { $0 + $1.releaseFreeSlots() }
    }

    /// Reads the cache served and did not, since it was made (tests, benchmarks).
    public var counts: (hits: Int, misses: Int) {
        (leafShards + interiorShards).reduce(into: (hits: 0, misses: 0)) { total, shard in
            let counts = shard.counts
            total.hits += counts.hits
            total.misses += counts.misses
        }
    }

    /// Slots holding a node, and slots whose pages are in memory (used since the
    /// shard's allocation or the last `releaseFreeSlots`), over both pools.
    public var slots: (holding: Int, resident: Int) {
        (leafShards + interiorShards).reduce(into: (holding: 0, resident: 0)) { total, shard in
            let slots = shard.slots
            total.holding += slots.holding
            total.resident += slots.resident
        }
    }

    private final class Shard: @unchecked Sendable {
        private struct Entry {
            var slot: Int
            var level: UInt8
            var generation: UInt64
            var checksum: UInt32
        }

        // Guarded by `lock`:
        private let lock = PthreadLock()
        private let capacity: Int
        private var storage: UnsafeMutableRawPointer?
        private var entries: [UInt64: Entry] = [:]
        /// The block held in each slot, whether it was hit since the hand last passed it,
        /// and the hand: the slot the next insert looks at first once no slot is free.
        private var blocks: [UInt64?]
        private var hitSinceLastPass: [Bool]
        private var next = 0
        /// Slots emptied by `forget`, taken first (the last emptied first), and the slots
        /// never used: `neverUsed..<capacity`, taken in order after the free ones, so the
        /// pages in memory are those of the most nodes held at once.
        private var freeSlots: [Int] = []
        private var neverUsed = 0
        /// Free slots whose pages `releaseFreeSlots` gave back, until they are taken.
        private var pageReleased: [Bool]
        private var releasedCount = 0
        private var hits = 0, misses = 0

        init(capacity: Int) {
            self.capacity = capacity
            blocks = Array(repeating: nil, count: capacity)
            hitSinceLastPass = Array(repeating: false, count: capacity)
            pageReleased = Array(repeating: false, count: capacity)
        }

        deinit { storage?.deallocate() }

        static let slotIsAPage = sysconf(Int32(_SC_PAGESIZE)) == TreeNode.size

        var counts: (hits: Int, misses: Int) { lock.withLock { (hits, misses) } }

        var slots: (holding: Int, resident: Int) {
            lock.withLock { (neverUsed - freeSlots.count, neverUsed - releasedCount) }
        }

        func forget(_ forgotten: ArraySlice<UInt64>) {
            lock.lock()
            defer { lock.unlock() }
            for block in forgotten {
                guard let entry = entries.removeValue(forKey: block) else { continue }
                blocks[entry.slot] = nil
                hitSinceLastPass[entry.slot] = false
                freeSlots.append(entry.slot)
            }
        }

        func releaseFreeSlots() -> Int {
            lock.lock()
            defer { lock.unlock() }
            // A slot is a page here; where pages are larger, a slot's madvise would take its
            // neighbours' nodes with it (their entries still valid): none is given back.
            guard let storage, Self.slotIsAPage else { return 0 }
            // Adjacent slots in one call.
            let slots = freeSlots.filter { !pageReleased[$0] }.sorted()
            var released = 0
            var start = 0
            while start < slots.count {
                var end = start + 1
                while end < slots.count && slots[end] == slots[end - 1] + 1 { end += 1 }
                if madvise(storage + slots[start] * TreeNode.size, (end - start) * TreeNode.size, MADV_DONTNEED) == 0 {
                    for slot in slots[start..<end] { pageReleased[slot] = true }
                    released += end - start
                }
                start = end
            }
            releasedCount += released
            return released
        }

        func copy(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32,
                  into page: UnsafeMutableRawPointer) -> Bool {
            lock.lock()
            defer { lock.unlock() }
            guard let storage, let entry = entries[block], entry.level == level, entry.generation == generation,
                  entry.checksum == checksum else {
                misses += 1
                return false
            }
            hits += 1
            hitSinceLastPass[entry.slot] = true
            page.copyMemory(from: storage + entry.slot * TreeNode.size, byteCount: TreeNode.size)
            return true
        }

        func insert(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32, from page: UnsafeRawPointer) {
            lock.lock()
            defer { lock.unlock() }
            if storage == nil {
                // Page-aligned: a free slot's page can be given back (`releaseFreeSlots`).
                storage = UnsafeMutableRawPointer.allocate(byteCount: capacity * TreeNode.size, alignment: TreeNode.size)
            }
            let slot: Int
            if let existing = entries[block] {
                slot = existing.slot
            } else {
                if let free = freeSlots.popLast() {
                    slot = free
                    if pageReleased[slot] {
                        pageReleased[slot] = false
                        releasedCount -= 1
                    }
                } else if neverUsed < capacity {
                    slot = neverUsed
                    neverUsed += 1
                } else {
                    // Every slot holds a node. At most one pass: the hand clears each
                    // mark it passes.
                    while hitSinceLastPass[next] {
                        hitSinceLastPass[next] = false
                        next = (next + 1) % capacity
                    }
                    slot = next
                    next = (next + 1) % capacity
                    if let old = blocks[slot] { entries[old] = nil }
                }
                blocks[slot] = block
                hitSinceLastPass[slot] = false
            }
            entries[block] = Entry(slot: slot, level: level, generation: generation, checksum: checksum)
            (storage! + slot * TreeNode.size).copyMemory(from: page, byteCount: TreeNode.size)
        }
    }
}
