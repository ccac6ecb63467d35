/// Sets of blocks by a key that only grows (the open generation, a sync epoch), for
/// `VolumeFileBlocks`' marks: what changes under one key mark joins the last entry when
/// it has that key, so the list grows by keys, not by changes, and a join inserts range
/// by range rather than rebuilding the set.
struct BlockMarks {
    private(set) var entries: [(key: UInt64, blocks: BlockRanges)] = []

    /// Marks `blocks` under `key`, which is at least the last entry's.
    mutating func add(_ blocks: BlockRanges, at key: UInt64) {
        guard !blocks.isEmpty else { return }
        if let last = entries.indices.last, entries[last].key == key {
            entries[last].blocks.formUnion(blocks)
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
    func blocks(through key: UInt64) -> BlockRanges {
        var all = BlockRanges()
        for entry in entries where entry.key <= key { all.formUnion(entry.blocks) }
        return all
    }

    /// The marked blocks of `range`, under any key.
    func blocks(in range: Range<UInt64>) -> BlockRanges {
        var found = BlockRanges()
        for entry in entries { found.formUnion(entry.blocks.restricted(to: range)) }
        return found
    }

    /// Unmarks `blocks` under every key.
    mutating func remove(_ blocks: BlockRanges) {
        for i in entries.indices { entries[i].blocks.subtract(blocks) }
    }

    /// Drops the entries of the keys `isGone` picks, and the empty ones.
    mutating func removeAll(keys isGone: (UInt64) -> Bool) {
        entries.removeAll { isGone($0.key) || $0.blocks.isEmpty }
    }
}
