/// Sets of blocks by a key that only grows (the open generation, a sync epoch), for
/// `VolumeFileBlocks`' marks: what changes under one key mark joins the last entry when
/// it has that key, so the list grows by keys, not by changes, and a join inserts range
/// by range (`insertRanges(of:)`) rather than rebuilding the set.
struct BlockMarks {
    private(set) var entries: [(key: UInt64, blocks: RangeSet<UInt64>)] = []

    /// Marks `blocks` under `key`, which is at least the last entry's.
    mutating func add(_ blocks: RangeSet<UInt64>, at key: UInt64) {
        guard !blocks.isEmpty else { return }
        if let last = entries.indices.last, entries[last].key == key {
            entries[last].blocks.insertRanges(of: blocks)
        } else {
            assert(entries.last.map { $0.key < key } ?? true, "marks added under a key older than the last")
            entries.append((key, blocks))
        }
    }

    /// True when some entry marks a block of `range`.
    func overlaps(_ range: Range<UInt64>) -> Bool {
        entries.contains { $0.blocks.overlaps(range) }
    }

    /// Every block marked under `key` or an older one.
    func blocks(through key: UInt64) -> RangeSet<UInt64> {
        var all = RangeSet<UInt64>()
        for entry in entries where entry.key <= key { all.formUnion(entry.blocks) }
        return all
    }

    /// The marked blocks of `range`, under any key.
    func blocks(in range: Range<UInt64>) -> RangeSet<UInt64> {
        var found = RangeSet<UInt64>()
        for entry in entries { found.insertRanges(of: entry.blocks.restricted(to: range)) }
        return found
    }

    /// Unmarks `blocks` under every key.
    mutating func remove(_ blocks: RangeSet<UInt64>) {
        for i in entries.indices { entries[i].blocks.subtract(blocks) }
    }

    /// Drops the entries of the keys `isGone` picks, and the empty ones.
    mutating func removeAll(keys isGone: (UInt64) -> Bool) {
        entries.removeAll { isGone($0.key) || $0.blocks.isEmpty }
    }
}
