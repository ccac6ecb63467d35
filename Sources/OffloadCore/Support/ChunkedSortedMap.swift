/// An ordered map from `UInt64` keys to values: a two-level B+-tree-like structure (a
/// sorted array of sorted leaves) with O(log n) search.
///
/// Used for extents keyed by file offset and for the image's block runs keyed by block
/// number. Inserting or removing moves at most one leaf's entries plus the (n / 64)
/// leaf pointers, which stays far below the cost of the data copy even at a million
/// entries.
///
/// Layout is chosen for cache and TLB misses, which is what a lookup in a million
/// extents costs: each leaf is one array of key-value entries (the value found is in the
/// cache line of its key, and a lookup touches one leaf allocation), the leaves' buffers
/// sit inline in one array, and `firstKeys` keeps the top-level search in one
/// contiguous array of 8-byte keys.
///
/// It is a class on purpose: it is owned by exactly one object and must never be
/// copied.
final class ChunkedSortedMap<Value> {
    /// A leaf is split in two when it would exceed this; neighbours are merged when they
    /// fit in half of it together.
    static var maximumChunkCount: Int { 64 }

    struct Entry {
        var key: UInt64
        var value: Value
    }

    /// A position in the map; invalidated by any mutation except `setValue(_:at:)`.
    struct Index: Comparable {
        var chunk: Int
        var slot: Int
        static func < (a: Index, b: Index) -> Bool { (a.chunk, a.slot) < (b.chunk, b.slot) }
    }

    /// Sorted leaves; no leaf is empty.
    private var leaves: [[Entry]] = []
    /// `firstKeys[c] == leaves[c][0].key`.
    private var firstKeys: [UInt64] = []
    private(set) var count = 0

    init() {}

    var isEmpty: Bool { count == 0 }

    var startIndex: Index? { leaves.isEmpty ? nil : Index(chunk: 0, slot: 0) }

    @inline(__always) func key(at i: Index) -> UInt64 { leaves[i.chunk][i.slot].key }
    @inline(__always) func value(at i: Index) -> Value { leaves[i.chunk][i.slot].value }

    func setValue(_ value: Value, at i: Index) { leaves[i.chunk][i.slot].value = value }

    func index(after i: Index) -> Index? {
        if i.slot + 1 < leaves[i.chunk].count { return Index(chunk: i.chunk, slot: i.slot + 1) }
        if i.chunk + 1 < leaves.count { return Index(chunk: i.chunk + 1, slot: 0) }
        return nil
    }

    func index(before i: Index) -> Index? {
        if i.slot > 0 { return Index(chunk: i.chunk, slot: i.slot - 1) }
        if i.chunk > 0 { return Index(chunk: i.chunk - 1, slot: leaves[i.chunk - 1].count - 1) }
        return nil
    }

    /// The entry with the greatest key `<= key`.
    func floor(_ key: UInt64) -> Index? {
        // Last leaf whose first key <= key.
        let c = firstKeys.withUnsafeBufferPointer { Self.upperBound($0, key) } - 1
        guard c >= 0 else { return nil }
        let s = leaves[c].withUnsafeBufferPointer { Self.upperBound($0, key) } - 1
        assert(s >= 0)
        return Index(chunk: c, slot: s)
    }

    /// The entry with the least key `>= key`.
    func ceiling(_ key: UInt64) -> Index? {
        guard let f = floor(key) else { return startIndex }
        return self.key(at: f) == key ? f : index(after: f)
    }

    /// The entry with exactly this key.
    func find(_ key: UInt64) -> Index? {
        guard let f = floor(key), self.key(at: f) == key else { return nil }
        return f
    }

    /// Inserts a new key (which must not be present) and returns where it went.
    @discardableResult
    func insert(_ key: UInt64, _ value: Value) -> Index {
        guard !leaves.isEmpty else {
            leaves = [[Entry(key: key, value: value)]]
            firstKeys = [key]
            count = 1
            return Index(chunk: 0, slot: 0)
        }
        let c = max(firstKeys.withUnsafeBufferPointer { Self.upperBound($0, key) } - 1, 0)
        let s = leaves[c].withUnsafeBufferPointer { Self.upperBound($0, key) }
        assert(s == 0 || leaves[c][s - 1].key != key, "duplicate key \(key)")
        count += 1
        let entry = Entry(key: key, value: value)
        let leafCount = leaves[c].count
        if leafCount < Self.maximumChunkCount {
            leaves[c].insert(entry, at: s)
            if s == 0 { firstKeys[c] = key }
            return Index(chunk: c, slot: s)
        }
        // A full leaf is split before it grows, so no leaf's buffer ever passes
        // `maximumChunkCount` entries (growing to 65 doubled it to 128, and every leaf of
        // a file written front to back stayed half full in it: about 130 bytes an extent
        // where 32 are needed). A key past the leaf's last goes to the front of the next
        // leaf, or starts a leaf of its own, and one in the leaf's upper half ends the
        // leaf: keys that arrive in order, at the end (appends) or into a gap (a hole
        // filled front to back, whose rest is the next entry), leave full leaves behind
        // them. The entries after the cut go to the front of the next leaf when they fit
        // there, else to a new leaf. Keys arriving in descending order into a gap left a
        // leaf of one entry each before both went to the next leaf (the review's finding:
        // 10,000 such keys made 10,001 leaves, and every insert moved all their pointers).
        if s == leafCount {
            if c + 1 < leaves.count, leaves[c + 1].count < Self.maximumChunkCount {
                leaves[c + 1].insert(entry, at: 0)
                firstKeys[c + 1] = key
            } else {
                leaves.insert([entry], at: c + 1)
                firstKeys.insert(key, at: c + 1)
            }
            return Index(chunk: c + 1, slot: 0)
        }
        let cut = max(s, leafCount / 2)
        if c + 1 < leaves.count, leaves[c + 1].count + (leafCount - cut) <= Self.maximumChunkCount {
            leaves[c + 1].insert(contentsOf: leaves[c][cut...], at: 0)
            firstKeys[c + 1] = leaves[c + 1][0].key
        } else {
            var right: [Entry] = []
            right.reserveCapacity(Self.maximumChunkCount)
            right.append(contentsOf: leaves[c][cut...])
            leaves.insert(right, at: c + 1)
            firstKeys.insert(right[0].key, at: c + 1)
        }
        leaves[c].removeSubrange(cut...)
        // `cut >= s`: the entry goes to the end of the left leaf or inside its first half,
        // which holds at most `maximumChunkCount - 1` entries now.
        leaves[c].insert(entry, at: s)
        if s == 0 { firstKeys[c] = key }
        return Index(chunk: c, slot: s)
    }

    /// Removes the entry at `i`; returns the index of the entry that followed it.
    @discardableResult
    func remove(at i: Index) -> Index? {
        let c = i.chunk
        leaves[c].remove(at: i.slot)
        count -= 1
        if leaves[c].isEmpty {
            leaves.remove(at: c)
            firstKeys.remove(at: c)
            return c < leaves.count ? Index(chunk: c, slot: 0) : nil
        }
        if i.slot == 0 { firstKeys[c] = leaves[c][0].key }
        // Merge a small leaf with its successor so the leaf count stays proportional to n.
        if c + 1 < leaves.count, leaves[c].count + leaves[c + 1].count <= Self.maximumChunkCount / 2 {
            let following = leaves.remove(at: c + 1)
            firstKeys.remove(at: c + 1)
            leaves[c].append(contentsOf: following)
        }
        if i.slot < leaves[c].count { return Index(chunk: c, slot: i.slot) }
        return c + 1 < leaves.count ? Index(chunk: c + 1, slot: 0) : nil
    }

    /// Removes everything.
    func removeAll() {
        leaves.removeAll()
        firstKeys.removeAll()
        count = 0
    }

    /// Each leaf's entry count and buffer capacity, in order (for tests).
    var leafShapes: [(count: Int, capacity: Int)] { leaves.map { ($0.count, $0.capacity) } }

    /// Checks the structure: no leaf empty or past `maximumChunkCount`, keys ascending
    /// within and across leaves, `firstKeys` and `count` in step (for tests).
    func checkInvariants() {
        precondition(firstKeys.count == leaves.count && leaves.reduce(0) { $0 + $1.count } == count)
        var previous: UInt64?
        for (c, leaf) in leaves.enumerated() {
            precondition(!leaf.isEmpty && leaf.count <= Self.maximumChunkCount, "leaf \(c) holds \(leaf.count)")
            precondition(firstKeys[c] == leaf[0].key)
            for entry in leaf {
                if let previous { precondition(previous < entry.key) }
                previous = entry.key
            }
        }
    }

    /// Calls `body` for each entry in key order.
    func forEach(_ body: (UInt64, Value) throws -> Void) rethrows {
        for leaf in leaves {
            for entry in leaf { try body(entry.key, entry.value) }
        }
    }

    /// First position in the sorted `keys` whose element is `> key`.
    @inline(__always)
    private static func upperBound(_ keys: UnsafeBufferPointer<UInt64>, _ key: UInt64) -> Int {
        var low = 0, high = keys.count
        while low < high {
            let mid = (low + high) &>> 1
            if keys[mid] <= key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// First position in the sorted `entries` whose key is `> key`.
    @inline(__always)
    private static func upperBound(_ entries: UnsafeBufferPointer<Entry>, _ key: UInt64) -> Int {
        var low = 0, high = entries.count
        while low < high {
            let mid = (low + high) &>> 1
            if entries[mid].key <= key { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
