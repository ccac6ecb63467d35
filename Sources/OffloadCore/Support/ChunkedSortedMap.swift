/// An ordered map from `UInt64` keys to values: a two-level B+-tree-like structure (a
/// sorted array of sorted chunks) with O(log n) search.
///
/// Used for extents keyed by file offset and for the image's block runs keyed by block
/// number. Inserting or removing moves at most one chunk's elements plus the (n / 128)
/// chunk pointers, which stays far below the cost of the data copy even at a million
/// entries; lookups binary-search `firstKeys` and then one chunk.
///
/// It is a class on purpose: it is owned by exactly one object and must never be
/// copied (a copy would share chunks).
final class ChunkedSortedMap<Value> {
    /// A chunk is split in two when it would exceed this; neighbours are merged when they
    /// fit in half of it together.
    static var maximumChunkCount: Int { 256 }

    final class Chunk {
        var keys: [UInt64] = []
        var values: [Value] = []
        init(keys: [UInt64], values: [Value]) { self.keys = keys; self.values = values }
    }

    /// A position in the map; invalidated by any mutation except `setValue(_:at:)` and
    /// `setKey(_:at:)`.
    struct Index: Comparable {
        var chunk: Int
        var slot: Int
        static func < (a: Index, b: Index) -> Bool { (a.chunk, a.slot) < (b.chunk, b.slot) }
    }

    private var chunks: [Chunk] = []
    /// `firstKeys[i] == chunks[i].keys[0]`; kept separately so the top-level search
    /// touches one contiguous array.
    private var firstKeys: [UInt64] = []
    private(set) var count = 0

    init() {}

    var isEmpty: Bool { count == 0 }

    var startIndex: Index? { chunks.isEmpty ? nil : Index(chunk: 0, slot: 0) }

    var lastIndex: Index? {
        guard let last = chunks.indices.last else { return nil }
        return Index(chunk: last, slot: chunks[last].keys.count - 1)
    }

    func key(at i: Index) -> UInt64 { chunks[i.chunk].keys[i.slot] }
    func value(at i: Index) -> Value { chunks[i.chunk].values[i.slot] }

    func setValue(_ value: Value, at i: Index) { chunks[i.chunk].values[i.slot] = value }

    /// Changes a key in place; the new key must keep the map ordered.
    func setKey(_ key: UInt64, at i: Index) {
        assert(index(before: i).map { self.key(at: $0) < key } ?? true, "key order broken")
        assert(index(after: i).map { key < self.key(at: $0) } ?? true, "key order broken")
        chunks[i.chunk].keys[i.slot] = key
        if i.slot == 0 { firstKeys[i.chunk] = key }
    }

    func index(after i: Index) -> Index? {
        if i.slot + 1 < chunks[i.chunk].keys.count { return Index(chunk: i.chunk, slot: i.slot + 1) }
        if i.chunk + 1 < chunks.count { return Index(chunk: i.chunk + 1, slot: 0) }
        return nil
    }

    func index(before i: Index) -> Index? {
        if i.slot > 0 { return Index(chunk: i.chunk, slot: i.slot - 1) }
        if i.chunk > 0 { return Index(chunk: i.chunk - 1, slot: chunks[i.chunk - 1].keys.count - 1) }
        return nil
    }

    /// The entry with the greatest key `<= key`.
    func floor(_ key: UInt64) -> Index? {
        // Last chunk whose first key <= key.
        let c = Self.upperBound(firstKeys, key) - 1
        guard c >= 0 else { return nil }
        let s = Self.upperBound(chunks[c].keys, key) - 1
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
        guard !chunks.isEmpty else {
            chunks = [Chunk(keys: [key], values: [value])]
            firstKeys = [key]
            count = 1
            return Index(chunk: 0, slot: 0)
        }
        let c = max(Self.upperBound(firstKeys, key) - 1, 0)
        let chunk = chunks[c]
        let s = Self.upperBound(chunk.keys, key)
        assert(s == 0 || chunk.keys[s - 1] != key, "duplicate key \(key)")
        chunk.keys.insert(key, at: s)
        chunk.values.insert(value, at: s)
        if s == 0 { firstKeys[c] = key }
        count += 1
        if chunk.keys.count > Self.maximumChunkCount {
            let half = chunk.keys.count / 2
            let right = Chunk(keys: Array(chunk.keys[half...]), values: Array(chunk.values[half...]))
            chunk.keys.removeSubrange(half...)
            chunk.values.removeSubrange(half...)
            chunks.insert(right, at: c + 1)
            firstKeys.insert(right.keys[0], at: c + 1)
            return s < half ? Index(chunk: c, slot: s) : Index(chunk: c + 1, slot: s - half)
        }
        return Index(chunk: c, slot: s)
    }

    /// Removes the entry at `i`; returns the index of the entry that followed it.
    @discardableResult
    func remove(at i: Index) -> Index? {
        let chunk = chunks[i.chunk]
        chunk.keys.remove(at: i.slot)
        chunk.values.remove(at: i.slot)
        count -= 1
        if chunk.keys.isEmpty {
            chunks.remove(at: i.chunk)
            firstKeys.remove(at: i.chunk)
            return i.chunk < chunks.count ? Index(chunk: i.chunk, slot: 0) : nil
        }
        if i.slot == 0 { firstKeys[i.chunk] = chunk.keys[0] }
        var next = Index(chunk: i.chunk, slot: i.slot)
        // Merge a small chunk into its successor so chunk counts stay proportional to n.
        if i.chunk + 1 < chunks.count,
           chunk.keys.count + chunks[i.chunk + 1].keys.count <= Self.maximumChunkCount / 2 {
            let following = chunks.remove(at: i.chunk + 1)
            firstKeys.remove(at: i.chunk + 1)
            chunk.keys.append(contentsOf: following.keys)
            chunk.values.append(contentsOf: following.values)
        }
        if next.slot >= chunks[next.chunk].keys.count {
            guard next.chunk + 1 < chunks.count else { return nil }
            next = Index(chunk: next.chunk + 1, slot: 0)
        }
        return next
    }

    /// Removes everything.
    func removeAll() {
        chunks.removeAll()
        firstKeys.removeAll()
        count = 0
    }

    /// Calls `body` for each entry in key order.
    func forEach(_ body: (UInt64, Value) throws -> Void) rethrows {
        for chunk in chunks {
            for s in chunk.keys.indices { try body(chunk.keys[s], chunk.values[s]) }
        }
    }

    /// First position in the sorted array `a` whose element is `> key`.
    @inline(__always)
    private static func upperBound(_ a: [UInt64], _ key: UInt64) -> Int {
        var low = 0, high = a.count
        while low < high {
            let mid = (low + high) / 2
            if a[mid] <= key { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
