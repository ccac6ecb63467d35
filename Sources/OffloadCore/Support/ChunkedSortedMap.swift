/// An ordered map from `UInt64` keys to values: a two-level B+-tree-like structure (a
/// sorted array of sorted chunks) with O(log n) search.
///
/// Used for extents keyed by file offset and for the image's block runs keyed by block
/// number. Inserting or removing moves at most one chunk's elements plus the (n / 128)
/// chunk pointers, which stays far below the cost of the data copy even at a million
/// entries; lookups binary-search `firstKeys` and then one chunk.
///
/// Layout is chosen for cache misses, which is what a lookup in a million extents costs:
/// the leaves' key arrays sit inline in one array (`keys[c]` is one pointer load away),
/// keys are apart from values so the binary search walks 8-byte keys only, and leaves
/// are small (64 entries, 512 bytes of keys).
///
/// It is a class on purpose: it is owned by exactly one object and must never be
/// copied.
final class ChunkedSortedMap<Value> {
    /// A chunk is split in two when it would exceed this; neighbours are merged when they
    /// fit in half of it together.
    static var maximumChunkCount: Int { 64 }

    /// A position in the map; invalidated by any mutation except `setValue(_:at:)` and
    /// `setKey(_:at:)`.
    struct Index: Comparable {
        var chunk: Int
        var slot: Int
        static func < (a: Index, b: Index) -> Bool { (a.chunk, a.slot) < (b.chunk, b.slot) }
    }

    /// Leaf `c` holds `keys[c]` and `values[c]`, sorted; no leaf is empty.
    private var keys: [[UInt64]] = []
    private var values: [[Value]] = []
    /// `firstKeys[c] == keys[c][0]`; kept separately so the top-level search touches one
    /// contiguous array.
    private var firstKeys: [UInt64] = []
    private(set) var count = 0

    init() {}

    var isEmpty: Bool { count == 0 }

    var startIndex: Index? { keys.isEmpty ? nil : Index(chunk: 0, slot: 0) }

    var lastIndex: Index? {
        guard let last = keys.indices.last else { return nil }
        return Index(chunk: last, slot: keys[last].count - 1)
    }

    @inline(__always) func key(at i: Index) -> UInt64 { keys[i.chunk][i.slot] }
    @inline(__always) func value(at i: Index) -> Value { values[i.chunk][i.slot] }

    func setValue(_ value: Value, at i: Index) { values[i.chunk][i.slot] = value }

    /// Changes a key in place; the new key must keep the map ordered.
    func setKey(_ key: UInt64, at i: Index) {
        assert(index(before: i).map { self.key(at: $0) < key } ?? true, "key order broken")
        assert(index(after: i).map { key < self.key(at: $0) } ?? true, "key order broken")
        keys[i.chunk][i.slot] = key
        if i.slot == 0 { firstKeys[i.chunk] = key }
    }

    func index(after i: Index) -> Index? {
        if i.slot + 1 < keys[i.chunk].count { return Index(chunk: i.chunk, slot: i.slot + 1) }
        if i.chunk + 1 < keys.count { return Index(chunk: i.chunk + 1, slot: 0) }
        return nil
    }

    func index(before i: Index) -> Index? {
        if i.slot > 0 { return Index(chunk: i.chunk, slot: i.slot - 1) }
        if i.chunk > 0 { return Index(chunk: i.chunk - 1, slot: keys[i.chunk - 1].count - 1) }
        return nil
    }

    /// The entry with the greatest key `<= key`.
    func floor(_ key: UInt64) -> Index? {
        // Last leaf whose first key <= key.
        let c = Self.upperBound(firstKeys, key) - 1
        guard c >= 0 else { return nil }
        let s = Self.upperBound(keys[c], key) - 1
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
        guard !keys.isEmpty else {
            keys = [[key]]
            values = [[value]]
            firstKeys = [key]
            count = 1
            return Index(chunk: 0, slot: 0)
        }
        let c = max(Self.upperBound(firstKeys, key) - 1, 0)
        let s = Self.upperBound(keys[c], key)
        assert(s == 0 || keys[c][s - 1] != key, "duplicate key \(key)")
        keys[c].insert(key, at: s)
        values[c].insert(value, at: s)
        if s == 0 { firstKeys[c] = key }
        count += 1
        let leafCount = keys[c].count
        guard leafCount > Self.maximumChunkCount else { return Index(chunk: c, slot: s) }
        let half = leafCount / 2
        keys.insert(Array(keys[c][half...]), at: c + 1)
        values.insert(Array(values[c][half...]), at: c + 1)
        keys[c].removeSubrange(half...)
        values[c].removeSubrange(half...)
        firstKeys.insert(keys[c + 1][0], at: c + 1)
        return s < half ? Index(chunk: c, slot: s) : Index(chunk: c + 1, slot: s - half)
    }

    /// Removes the entry at `i`; returns the index of the entry that followed it.
    @discardableResult
    func remove(at i: Index) -> Index? {
        let c = i.chunk
        keys[c].remove(at: i.slot)
        values[c].remove(at: i.slot)
        count -= 1
        if keys[c].isEmpty {
            keys.remove(at: c)
            values.remove(at: c)
            firstKeys.remove(at: c)
            return c < keys.count ? Index(chunk: c, slot: 0) : nil
        }
        if i.slot == 0 { firstKeys[c] = keys[c][0] }
        // Merge a small leaf with its successor so the leaf count stays proportional to n.
        if c + 1 < keys.count, keys[c].count + keys[c + 1].count <= Self.maximumChunkCount / 2 {
            let followingKeys = keys.remove(at: c + 1)
            let followingValues = values.remove(at: c + 1)
            firstKeys.remove(at: c + 1)
            keys[c].append(contentsOf: followingKeys)
            values[c].append(contentsOf: followingValues)
        }
        if i.slot < keys[c].count { return Index(chunk: c, slot: i.slot) }
        return c + 1 < keys.count ? Index(chunk: c + 1, slot: 0) : nil
    }

    /// Removes everything.
    func removeAll() {
        keys.removeAll()
        values.removeAll()
        firstKeys.removeAll()
        count = 0
    }

    /// Calls `body` for each entry in key order.
    func forEach(_ body: (UInt64, Value) throws -> Void) rethrows {
        for c in keys.indices {
            for s in keys[c].indices { try body(keys[c][s], values[c][s]) }
        }
    }

    /// First position in the sorted array `a` whose element is `> key`.
    @inline(__always)
    private static func upperBound(_ a: [UInt64], _ key: UInt64) -> Int {
        a.withUnsafeBufferPointer { buffer in
            var low = 0, high = buffer.count
            while low < high {
                let mid = (low + high) &>> 1
                if buffer[mid] <= key { low = mid + 1 } else { high = mid }
            }
            return low
        }
    }
}
