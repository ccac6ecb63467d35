/// A set of block numbers kept as sorted, disjoint, non-adjacent ranges in one array, for
/// the sets `VolumeFileBlocks` asks on every write (its unclaimed blocks and its marks),
/// the block space's blocks handed out (`BlockSpace.takenBlocks`) and a commit's fresh
/// blocks.
///
/// The standard library's `RangeSet` holds the same ranges, but its collection of ranges
/// is not specialised across the module boundary: each index step, `endIndex` and
/// subscript of a binary search is a generic call that looks up `Range<UInt64>`'s
/// metadata. Those lookups were 7% of the daemon's CPU under random 4 KiB writes on
/// format 2 (three searches a write). Here the searches run over a plain array.
/// `RangeSet` stays at the edges (repair, checks, the block tree's calls).
struct BlockRanges: Equatable, Sendable {
    /// Sorted by lower bound; no range is empty, and neighbours neither overlap nor touch.
    private(set) var ranges: [Range<UInt64>] = []

    init() {}

    init(_ range: Range<UInt64>) {
        if !range.isEmpty { ranges = [range] }
    }

    init(_ set: RangeSet<UInt64>) {
        ranges = Array(set.ranges)
    }

    var isEmpty: Bool { ranges.isEmpty }

    /// The same blocks as a `RangeSet`.
    var rangeSet: RangeSet<UInt64> { RangeSet(ranges) }

    /// The index of the first range whose upper bound is above `value` (inclusive: at or
    /// above), `ranges.count` when none is.
    private func firstIndex(endingAfter value: UInt64, inclusive: Bool = false) -> Int {
        var low = 0, high = ranges.count
        while low < high {
            let middle = (low + high) / 2
            let end = ranges[middle].upperBound
            if end < value || (!inclusive && end == value) { low = middle + 1 } else { high = middle }
        }
        return low
    }

    func contains(_ block: UInt64) -> Bool {
        overlaps(block..<block + 1)
    }

    /// True when some block of `range` is in the set.
    func overlaps(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return false }
        let i = firstIndex(endingAfter: range.lowerBound)
        return i < ranges.count && ranges[i].lowerBound < range.upperBound
    }

    /// True when every block of `range` is in the set.
    func containsAll(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return true }
        let i = firstIndex(endingAfter: range.lowerBound)
        return i < ranges.count && ranges[i].lowerBound <= range.lowerBound && ranges[i].upperBound >= range.upperBound
    }

    /// The set's blocks within `range`.
    func restricted(to range: Range<UInt64>) -> BlockRanges {
        var parts = BlockRanges()
        guard !range.isEmpty else { return parts }
        var i = firstIndex(endingAfter: range.lowerBound)
        while i < ranges.count && ranges[i].lowerBound < range.upperBound {
            parts.ranges.append(ranges[i].clamped(to: range))
            i += 1
        }
        return parts
    }

    /// The blocks in both sets.
    func intersection(_ other: BlockRanges) -> BlockRanges {
        var result = BlockRanges()
        for range in other.ranges { result.ranges += restricted(to: range).ranges }
        return result
    }

    /// `range`'s blocks not in the set.
    func complement(within range: Range<UInt64>) -> BlockRanges {
        var gaps = BlockRanges()
        var position = range.lowerBound
        for part in restricted(to: range).ranges {
            if position < part.lowerBound { gaps.ranges.append(position..<part.lowerBound) }
            position = part.upperBound
        }
        if position < range.upperBound { gaps.ranges.append(position..<range.upperBound) }
        return gaps
    }

    mutating func insert(contentsOf range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        // Ranges that overlap or touch `range` join it.
        let first = firstIndex(endingAfter: range.lowerBound, inclusive: true)
        var last = first
        var joined = range
        while last < ranges.count && ranges[last].lowerBound <= range.upperBound {
            joined = min(joined.lowerBound, ranges[last].lowerBound)..<max(joined.upperBound, ranges[last].upperBound)
            last += 1
        }
        if last == first + 1 {
            ranges[first] = joined
        } else {
            ranges.replaceSubrange(first..<last, with: CollectionOfOne(joined))
        }
    }

    mutating func remove(contentsOf range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let first = firstIndex(endingAfter: range.lowerBound)
        var last = first
        while last < ranges.count && ranges[last].lowerBound < range.upperBound { last += 1 }
        guard first < last else { return }
        let left = ranges[first].lowerBound < range.lowerBound ? ranges[first].lowerBound..<range.lowerBound : nil
        let right = ranges[last - 1].upperBound > range.upperBound ? range.upperBound..<ranges[last - 1].upperBound : nil
        switch (left, right) {
        case let (left?, right?):
            ranges.replaceSubrange(first..<last, with: [left, right])
        case let (left?, nil):
            ranges.replaceSubrange(first..<last, with: CollectionOfOne(left))
        case let (nil, right?):
            ranges.replaceSubrange(first..<last, with: CollectionOfOne(right))
        case (nil, nil):
            ranges.removeSubrange(first..<last)
        }
    }

    mutating func formUnion(_ other: BlockRanges) {
        for range in other.ranges { insert(contentsOf: range) }
    }

    mutating func subtract(_ other: BlockRanges) {
        // One sweep over both sorted lists: a removal at a time shifts the array each
        // time, which thousands of single blocks (kept nodes out of a punch) made slow.
        guard !ranges.isEmpty, !other.ranges.isEmpty else { return }
        var result: [Range<UInt64>] = []
        result.reserveCapacity(ranges.count)
        var j = 0
        for range in ranges {
            var start = range.lowerBound
            while j < other.ranges.count && other.ranges[j].upperBound <= start { j += 1 }
            var k = j
            while start < range.upperBound {
                guard k < other.ranges.count, other.ranges[k].lowerBound < range.upperBound else {
                    result.append(start..<range.upperBound)
                    break
                }
                if other.ranges[k].lowerBound > start { result.append(start..<other.ranges[k].lowerBound) }
                start = max(start, other.ranges[k].upperBound)
                k += 1
            }
        }
        ranges = result
    }
}
