/// The free block ranges below the image's high-water mark.
///
/// Indexed twice: by start (to coalesce neighbours on free) and by power-of-two size class
/// (to find a range that fits without scanning them all). Within a class the lowest start
/// wins, so allocation is deterministic and the image stays compact. Block numbers, not
/// bytes, throughout.
final class FreeSpaceMap {
    private let byStart = ChunkedSortedMap<UInt64>()          // start -> end
    private var bySizeClass: [ChunkedSortedMap<UInt64>] = (0..<64).map { _ in ChunkedSortedMap() }  // start -> end
    private(set) var freeBlocks: UInt64 = 0

    var rangeCount: Int { byStart.count }

    /// Adds a free range, merging it with free neighbours.
    func insert(_ blocks: Range<UInt64>) {
        precondition(!blocks.isEmpty)
        var range = blocks
        freeBlocks += UInt64(blocks.count)
        if let p = byStart.floor(range.lowerBound) {
            let end = byStart.value(at: p)
            precondition(end <= range.lowerBound, "freeing blocks \(blocks) twice")
            if end == range.lowerBound {
                let start = byStart.key(at: p)
                removeEntry(start..<end)
                range = start..<range.upperBound
            }
        }
        if let n = byStart.find(range.upperBound) {
            let end = byStart.value(at: n)
            removeEntry(range.upperBound..<end)
            range = range.lowerBound..<end
        }
        assert(byStart.ceiling(range.lowerBound).map { byStart.key(at: $0) >= range.upperBound } ?? true,
               "freeing blocks \(blocks) that overlap a free range")
        addEntry(range)
    }

    /// Takes up to `count` blocks starting exactly at `start` if that block is free.
    func take(at start: UInt64, upTo count: UInt64) -> Range<UInt64>? {
        guard let i = byStart.floor(start) else { return nil }
        let rangeStart = byStart.key(at: i), rangeEnd = byStart.value(at: i)
        guard rangeEnd > start else { return nil }
        let taken = start..<min(rangeEnd, start + count)
        carve(taken, from: rangeStart..<rangeEnd)
        return taken
    }

    /// Takes exactly `count` blocks from the smallest size class that surely fits.
    func take(count: UInt64) -> Range<UInt64>? {
        precondition(count > 0)
        let needed = Self.sizeClass(of: count)
        // In the class of `count` itself every range fits when `count` is a power of two
        // (the usual case: 1 block, 256 blocks); otherwise scan a few of them.
        let exact = bySizeClass[needed]
        var i = exact.startIndex
        var scanned = 0
        let scanLimit = count == UInt64(1) << needed ? 1 : 32
        while let index = i, scanned < scanLimit {
            scanned += 1
            let start = exact.key(at: index), end = exact.value(at: index)
            if end - start >= count {
                carve(start..<start + count, from: start..<end)
                return start..<start + count
            }
            i = exact.index(after: index)
        }
        // In any larger class every range fits.
        for c in (needed + 1)..<64 {
            if let first = bySizeClass[c].startIndex {
                let start = bySizeClass[c].key(at: first), end = bySizeClass[c].value(at: first)
                carve(start..<start + count, from: start..<end)
                return start..<start + count
            }
        }
        return nil
    }

    /// Takes the front of a range that holds at least `least` blocks, at most `count` of
    /// them (with `least` 1: the front of the largest size class's first range, what an
    /// allocation no single range fits takes): the first range of the largest size class
    /// above `least`'s (every range
    /// there holds `least`), else the longest range of `least`'s own class if it holds
    /// `least` (that class is scanned: within a class the lowest start comes first, not
    /// the longest, and a first form that took the first range skipped a group whose
    /// stored summary promised the run). Nil when no range holds `least`.
    func takeFront(ofRunOfAtLeast least: UInt64, upTo count: UInt64) -> Range<UInt64>? {
        precondition(least > 0 && least <= count)
        let needed = Self.sizeClass(of: least)
        for c in ((needed + 1)..<64).reversed() {
            if let first = bySizeClass[c].startIndex {
                let start = bySizeClass[c].key(at: first), end = bySizeClass[c].value(at: first)
                let taken = start..<min(end, start + count)
                carve(taken, from: start..<end)
                return taken
            }
        }
        // The longest range of the class, stopping at one of the class's longest length.
        let longestInClass = (UInt64(1) << (needed + 1)) - 1
        var best: Range<UInt64>?
        var i = bySizeClass[needed].startIndex
        while let index = i {
            let start = bySizeClass[needed].key(at: index), end = bySizeClass[needed].value(at: index)
            if end - start >= least, end - start > UInt64(best?.count ?? 0) {
                best = start..<end
                if end - start == longestInClass { break }
            }
            i = bySizeClass[needed].index(after: index)
        }
        guard let best else { return nil }
        let taken = best.lowerBound..<min(best.upperBound, best.lowerBound + count)
        carve(taken, from: best)
        return taken
    }

    /// Takes the end of the highest range, at most `count` blocks (format 2's metadata
    /// reserve, kept above the data).
    func takeHighest(upTo count: UInt64) -> Range<UInt64>? {
        precondition(count > 0)
        guard let last = byStart.floor(UInt64.max) else { return nil }
        let start = byStart.key(at: last), end = byStart.value(at: last)
        let taken = max(start, end - min(end, count))..<end
        carve(taken, from: start..<end)
        return taken
    }

    func forEachRange(_ body: (Range<UInt64>) -> Void) {
        byStart.forEach { start, end in body(start..<end) }
    }

    // MARK: - Internals

    private static func sizeClass(of count: UInt64) -> Int { 63 - count.leadingZeroBitCount }

    /// Removes `taken` (a sub-range of the free range `whole`) from the free space.
    private func carve(_ taken: Range<UInt64>, from whole: Range<UInt64>) {
        precondition(whole.lowerBound <= taken.lowerBound && taken.upperBound <= whole.upperBound)
        removeEntry(whole)
        freeBlocks -= UInt64(whole.count)
        if whole.lowerBound < taken.lowerBound {
            addEntry(whole.lowerBound..<taken.lowerBound)
            freeBlocks += UInt64(taken.lowerBound - whole.lowerBound)
        }
        if taken.upperBound < whole.upperBound {
            addEntry(taken.upperBound..<whole.upperBound)
            freeBlocks += UInt64(whole.upperBound - taken.upperBound)
        }
    }

    private func addEntry(_ r: Range<UInt64>) {
        byStart.insert(r.lowerBound, r.upperBound)
        bySizeClass[Self.sizeClass(of: UInt64(r.count))].insert(r.lowerBound, r.upperBound)
    }

    private func removeEntry(_ r: Range<UInt64>) {
        let c = Self.sizeClass(of: UInt64(r.count))
        guard let i = byStart.find(r.lowerBound), let j = bySizeClass[c].find(r.lowerBound) else {
            preconditionFailure("free range \(r) is not indexed")
        }
        byStart.remove(at: i)
        bySizeClass[c].remove(at: j)
    }
}
