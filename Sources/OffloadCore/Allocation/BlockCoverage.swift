/// How many times each block is covered by a multiset of block ranges, kept as disjoint
/// segments of equal count (start -> end, count >= 1) in a sorted map: adding or removing
/// a range, and asking what is covered in a range or next to a block, cost O(log n) plus
/// the segments involved, whatever the number of ranges.
///
/// Two users in the block tree (docs/ARCHITECTURE.md, "The block space"): the pending
/// frees of every generation (which may overlap across generations, so counts, not a
/// set), asked per changed range by the group summaries instead of listing every pending
/// free for each; and the blocks a change set touched, where `add` tells which blocks are
/// touched for the first time.
final class BlockCoverage {
    struct Segment {
        var end: UInt64
        var count: UInt32
    }

    private let segments = ChunkedSortedMap<Segment>()

    var isEmpty: Bool { segments.isEmpty }

    func removeAll() { segments.removeAll() }

    /// Covers `blocks` once more; returns the parts that were not covered before, ascending.
    @discardableResult
    func add(_ blocks: Range<UInt64>) -> [Range<UInt64>] {
        guard !blocks.isEmpty else { return [] }
        split(at: blocks.lowerBound)
        split(at: blocks.upperBound)
        var newlyCovered: [Range<UInt64>] = []
        var cursor = blocks.lowerBound
        while cursor < blocks.upperBound {
            if let i = segments.ceiling(cursor), segments.key(at: i) < blocks.upperBound {
                let start = segments.key(at: i)
                var segment = segments.value(at: i)
                if start > cursor {
                    newlyCovered.append(cursor..<start)
                    segments.insert(cursor, Segment(end: start, count: 1))
                    cursor = start
                    continue
                }
                precondition(segment.count < UInt32.max, "block \(start) covered \(segment.count) times")
                segment.count += 1
                segments.setValue(segment, at: i)
                cursor = segment.end
            } else {
                newlyCovered.append(cursor..<blocks.upperBound)
                segments.insert(cursor, Segment(end: blocks.upperBound, count: 1))
                cursor = blocks.upperBound
            }
        }
        return newlyCovered
    }

    /// Uncovers `blocks` once; false (and nothing changed) when a block of them is not
    /// covered.
    @discardableResult
    func remove(_ blocks: Range<UInt64>) -> Bool {
        guard !blocks.isEmpty else { return true }
        guard covered(in: blocks) == [blocks] else { return false }
        split(at: blocks.lowerBound)
        split(at: blocks.upperBound)
        var cursor = blocks.lowerBound
        while cursor < blocks.upperBound {
            let i = segments.find(cursor)!
            var segment = segments.value(at: i)
            cursor = segment.end
            if segment.count == 1 {
                segments.remove(at: i)
            } else {
                segment.count -= 1
                segments.setValue(segment, at: i)
            }
        }
        return true
    }

    /// The covered blocks inside `blocks`, clipped to it, neighbours joined, ascending.
    func covered(in blocks: Range<UInt64>) -> [Range<UInt64>] {
        guard !blocks.isEmpty else { return [] }
        var found: [Range<UInt64>] = []
        var i: ChunkedSortedMap<Segment>.Index?
        if let floor = segments.floor(blocks.lowerBound) {
            i = segments.value(at: floor).end > blocks.lowerBound ? floor : segments.index(after: floor)
        } else {
            i = segments.startIndex
        }
        while let index = i, segments.key(at: index) < blocks.upperBound {
            let start = max(segments.key(at: index), blocks.lowerBound)
            let end = min(segments.value(at: index).end, blocks.upperBound)
            if start < end {
                if let last = found.last, last.upperBound == start {
                    found[found.count - 1] = last.lowerBound..<end
                } else {
                    found.append(start..<end)
                }
            }
            i = segments.index(after: index)
        }
        return found
    }

    /// The end of the last covered block below `block` (at most `block`), nil when none is.
    func coveredEnd(below block: UInt64) -> UInt64? {
        guard block > 0, let i = segments.floor(block - 1) else { return nil }
        return min(segments.value(at: i).end, block)
    }

    /// The first covered block at or above `block`.
    func coveredStart(atOrAbove block: UInt64) -> UInt64? {
        if let i = segments.floor(block), segments.value(at: i).end > block { return block }
        guard let i = segments.ceiling(block) else { return nil }
        return segments.key(at: i)
    }

    /// Splits the segment holding `block` (if any starts below it) into two at `block`.
    private func split(at block: UInt64) {
        guard let i = segments.floor(block), segments.key(at: i) < block else { return }
        var segment = segments.value(at: i)
        guard segment.end > block else { return }
        let upper = Segment(end: segment.end, count: segment.count)
        segment.end = block
        segments.setValue(segment, at: i)
        segments.insert(block, upper)
    }
}
