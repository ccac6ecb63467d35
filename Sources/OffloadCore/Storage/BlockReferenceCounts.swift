/// How many extents reference each block of the image, stored as runs of equal counts.
///
/// The rule that keeps sharing correct: every `MmapOffload` extent, in any file, holds one
/// reference on each 4 KiB block its byte range touches. A block with count 1 is owned by
/// exactly one extent, which may therefore overwrite it in place; a block with count > 1
/// is shared (a clone, or two pieces of a split extent) and is copied on write. A block
/// whose count reaches 0 is free. Blocks absent from the map are free.
///
/// Runs are coalesced, so a file written sequentially is one run however many blocks it
/// has. Block numbers, not bytes, throughout.
final class BlockReferenceCounts {
    struct Run {
        var end: UInt64
        var count: UInt32
    }

    private let runs = ChunkedSortedMap<Run>()
    /// Blocks with a count of at least 1.
    private(set) var allocatedBlocks: UInt64 = 0

    /// Records freshly allocated blocks, each with one reference. They must be free.
    func insertAllocated(_ blocks: Range<UInt64>) {
        precondition(!blocks.isEmpty)
        assert(isFree(blocks), "allocating blocks \(blocks) that are in use")
        runs.insert(blocks.lowerBound, Run(end: blocks.upperBound, count: 1))
        allocatedBlocks += UInt64(blocks.count)
        coalesce(at: blocks.lowerBound)
        coalesce(at: blocks.upperBound)
    }

    /// Records recovered blocks with `count` references each (image recovery). They must
    /// be free.
    func load(_ blocks: Range<UInt64>, count: UInt32) {
        precondition(!blocks.isEmpty && count > 0)
        assert(isFree(blocks), "recovering blocks \(blocks) that are in use")
        runs.insert(blocks.lowerBound, Run(end: blocks.upperBound, count: count))
        allocatedBlocks += UInt64(blocks.count)
        coalesce(at: blocks.lowerBound)
        coalesce(at: blocks.upperBound)
    }

    /// True when every block in `blocks` has at least one reference.
    func isAllocated(_ blocks: Range<UInt64>) -> Bool {
        allRuns(in: blocks) { _ in true }
    }

    /// True when every block in `blocks` has exactly one reference.
    func isExclusive(_ blocks: Range<UInt64>) -> Bool {
        allRuns(in: blocks) { $0.count == 1 }
    }

    /// The blocks of `blocks` whose count is not exactly one (free ones included).
    func notExclusive(in blocks: Range<UInt64>) -> RangeSet<UInt64> {
        var result = RangeSet(blocks)
        guard !blocks.isEmpty else { return result }
        var cursor = runs.floor(blocks.lowerBound)
        while let i = cursor, runs.key(at: i) < blocks.upperBound {
            let run = runs.value(at: i)
            let start = max(runs.key(at: i), blocks.lowerBound), end = min(run.end, blocks.upperBound)
            if run.count == 1, start < end { result.remove(contentsOf: start..<end) }
            cursor = runs.index(after: i)
        }
        return result
    }

    /// The reference count of one block (0 when free).
    func count(of block: UInt64) -> UInt32 {
        guard let i = runs.floor(block), runs.value(at: i).end > block else { return 0 }
        return runs.value(at: i).count
    }

    /// Adds one reference to every block in `blocks`, which must all be allocated.
    func retain(_ blocks: Range<UInt64>) {
        precondition(isAllocated(blocks), "retaining blocks \(blocks) that are not allocated")
        adjust(blocks) { $0 + 1 }
    }

    /// Drops one reference from every block in `blocks`; returns the ranges that became
    /// free, in ascending order.
    func release(_ blocks: Range<UInt64>) -> [Range<UInt64>] {
        precondition(isAllocated(blocks), "releasing blocks \(blocks) that are not allocated")
        return adjust(blocks) { $0 - 1 }
    }

    /// Drops whatever counts the blocks of `blocks` have (free ones stay free): someone
    /// else counts them from now on (format 2's commit, `VolumeFileBlocks.claim`).
    func forget(_ blocks: Range<UInt64>) {
        if blocks.isEmpty { return }
        split(at: blocks.lowerBound)
        split(at: blocks.upperBound)
        var cursor = runs.ceiling(blocks.lowerBound)
        while let i = cursor, runs.key(at: i) < blocks.upperBound {
            allocatedBlocks -= runs.value(at: i).end - runs.key(at: i)
            cursor = runs.remove(at: i)
        }
    }

    /// Visits runs in key order (for checks and tests).
    func forEachRun(_ body: (Range<UInt64>, UInt32) -> Void) {
        runs.forEach { start, run in body(start..<run.end, run.count) }
    }

    // MARK: - Internals

    private func isFree(_ blocks: Range<UInt64>) -> Bool {
        if let i = runs.floor(blocks.lowerBound), runs.value(at: i).end > blocks.lowerBound { return false }
        if let i = runs.ceiling(blocks.lowerBound), runs.key(at: i) < blocks.upperBound { return false }
        return true
    }

    /// True when `blocks` is covered by runs without gaps and each run satisfies `test`.
    private func allRuns(in blocks: Range<UInt64>, _ test: (Run) -> Bool) -> Bool {
        if blocks.isEmpty { return true }
        guard var i = runs.floor(blocks.lowerBound) else { return false }
        var covered = blocks.lowerBound
        while covered < blocks.upperBound {
            guard runs.key(at: i) <= covered else { return false }
            let run = runs.value(at: i)
            guard run.end > covered, test(run) else { return false }
            covered = run.end
            guard covered < blocks.upperBound else { break }
            guard let next = runs.index(after: i) else { return false }
            i = next
        }
        return true
    }

    /// Splits the run containing `block` so that a run starts exactly at `block`.
    private func split(at block: UInt64) {
        guard let i = runs.floor(block) else { return }
        let start = runs.key(at: i)
        var run = runs.value(at: i)
        guard start < block, block < run.end else { return }
        let right = Run(end: run.end, count: run.count)
        run.end = block
        runs.setValue(run, at: i)
        runs.insert(block, right)
    }

    /// Merges the run starting at `block` into the run ending there when counts match.
    private func coalesce(at block: UInt64) {
        guard let i = runs.find(block), let p = runs.index(before: i) else { return }
        var previous = runs.value(at: p)
        let current = runs.value(at: i)
        guard previous.end == block, previous.count == current.count else { return }
        previous.end = current.end
        runs.setValue(previous, at: p)
        runs.remove(at: i)
    }

    @discardableResult
    private func adjust(_ blocks: Range<UInt64>, _ change: (UInt32) -> UInt32) -> [Range<UInt64>] {
        if blocks.isEmpty { return [] }
        split(at: blocks.lowerBound)
        split(at: blocks.upperBound)
        var freed: [Range<UInt64>] = []
        var cursor = runs.find(blocks.lowerBound)
        while let i = cursor, runs.key(at: i) < blocks.upperBound {
            let start = runs.key(at: i)
            var run = runs.value(at: i)
            run.count = change(run.count)
            if run.count == 0 {
                if let last = freed.last, last.upperBound == start {
                    freed[freed.count - 1] = last.lowerBound..<run.end
                } else {
                    freed.append(start..<run.end)
                }
                allocatedBlocks -= run.end - start
                cursor = runs.remove(at: i)
            } else {
                runs.setValue(run, at: i)
                cursor = runs.index(after: i)
            }
        }
        coalesce(at: blocks.lowerBound)
        coalesce(at: blocks.upperBound)
        return freed
    }
}
