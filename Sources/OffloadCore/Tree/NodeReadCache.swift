/// Validated committed nodes a read-only tree object keeps between reads: a reader of one
/// commit (`TreeVolume.reader()`) reads the same upper nodes for every lookup, and each
/// read was a pread and a CRC-32C of 4 KiB. Only for trees whose nodes cannot change under
/// them: a reader's root is a durable commit, and its blocks are neither punched nor
/// reused while the reader lives (reader epochs). The commit's working tree has none: its
/// committed blocks are freed and reused across commits.
///
/// A fixed number of slots (memory: `capacity` x 4 KiB, allocated at the first insert),
/// replaced in turn (FIFO); a hit copies the node into the caller's level buffer, so a
/// view handed out never points into a slot that a later insert may replace. A hit must
/// match what the parent recorded (level, generation, checksum), as a read would be
/// validated against it; anything else is read again and validated.
final class NodeReadCache {
    private struct Entry {
        var slot: Int
        var level: UInt8
        var generation: UInt64
        var checksum: UInt32
    }

    let capacity: Int
    private var storage: UnsafeMutableRawPointer?
    private var entries: [UInt64: Entry] = [:]
    /// The block held in each slot, and the slot the next insert replaces.
    private var blocks: [UInt64?]
    private var next = 0
    private(set) var hits = 0, misses = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        blocks = Array(repeating: nil, count: capacity)
    }

    deinit { storage?.deallocate() }

    /// Copies the cached node at `block` into `page` when it is there as the parent
    /// recorded it; false otherwise.
    func copy(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32,
              into page: UnsafeMutableRawPointer) -> Bool {
        guard let storage, let entry = entries[block], entry.level == level, entry.generation == generation,
              entry.checksum == checksum else {
            misses += 1
            return false
        }
        hits += 1
        page.copyMemory(from: storage + entry.slot * TreeNode.size, byteCount: TreeNode.size)
        return true
    }

    /// Keeps the validated node `page` of `block`.
    func insert(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32, from page: UnsafeRawPointer) {
        if storage == nil {
            storage = UnsafeMutableRawPointer.allocate(byteCount: capacity * TreeNode.size, alignment: 16)
        }
        let slot: Int
        if let existing = entries[block] {
            slot = existing.slot
        } else {
            slot = next
            next = (next + 1) % capacity
            if let old = blocks[slot] { entries[old] = nil }
            blocks[slot] = block
        }
        entries[block] = Entry(slot: slot, level: level, generation: generation, checksum: checksum)
        (storage! + slot * TreeNode.size).copyMemory(from: page, byteCount: TreeNode.size)
    }
}
