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
/// behind its own lock, held for one 4 KiB copy. Each shard has a fixed number of slots
/// (memory: `capacity` x 4 KiB, a shard's allocated at its first insert; under commits
/// the slots fill up whatever the tree's size, with the copies commits superseded until
/// the hand passes them), replaced in turn with a second chance for a slot hit since the
/// hand last passed it (CLOCK); a hit copies the node into the caller's level buffer, so a
/// view handed out never points into a slot that a later insert may replace.
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

    /// Reads the cache served and did not, since it was made (tests, benchmarks).
    public var counts: (hits: Int, misses: Int) {
        (leafShards + interiorShards).reduce(into: (hits: 0, misses: 0)) { total, shard in
            let counts = shard.counts
            total.hits += counts.hits
            total.misses += counts.misses
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
        /// and the hand: the slot the next insert looks at first.
        private var blocks: [UInt64?]
        private var hitSinceLastPass: [Bool]
        private var next = 0
        private var hits = 0, misses = 0

        init(capacity: Int) {
            self.capacity = capacity
            blocks = Array(repeating: nil, count: capacity)
            hitSinceLastPass = Array(repeating: false, count: capacity)
        }

        deinit { storage?.deallocate() }

        var counts: (hits: Int, misses: Int) { lock.withLock { (hits, misses) } }

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
                storage = UnsafeMutableRawPointer.allocate(byteCount: capacity * TreeNode.size, alignment: 16)
            }
            let slot: Int
            if let existing = entries[block] {
                slot = existing.slot
            } else {
                // At most one pass: the hand clears each mark it passes.
                while blocks[next] != nil && hitSinceLastPass[next] {
                    hitSinceLastPass[next] = false
                    next = (next + 1) % capacity
                }
                slot = next
                next = (next + 1) % capacity
                if let old = blocks[slot] { entries[old] = nil }
                blocks[slot] = block
                hitSinceLastPass[slot] = false
            }
            entries[block] = Entry(slot: slot, level: level, generation: generation, checksum: checksum)
            (storage! + slot * TreeNode.size).copyMemory(from: page, byteCount: TreeNode.size)
        }
    }
}
