/// The allocator state behind `BackingStore`'s mutex: who references which block, which
/// blocks are free, and how far the image has grown. Block numbers throughout.
struct BlockAllocator: ~Copyable {
    /// The most blocks that may be referenced at once.
    let capacityBlocks: UInt64
    /// Blocks below this belong to the image's header, never to files.
    let firstBlock: UInt64
    /// The end of the mapping: blocks are never handed out at or past it. At least
    /// `firstBlock + capacityBlocks`; more when an image holds blocks further out than its
    /// capacity (a capacity lowered below the file's length), which stay mapped.
    let endBlock: UInt64
    let references = BlockReferenceCounts()
    let free = FreeSpaceMap()
    /// Blocks `firstBlock..<highWaterBlocks` have been handed out at least once; above it the image
    /// has never been written.
    private(set) var highWaterBlocks: UInt64
    /// The image file has disk space (fallocate) for blocks `0..<reservedBlocks`, except
    /// for free blocks, which are punched.
    var reservedBlocks: UInt64
    /// Cleared the first time the file system refuses `FALLOC_FL_PUNCH_HOLE`.
    var punchSupported = true
    /// Freed blocks go to `quarantined` instead of the free map (see
    /// `BackingStore.deferReuse`).
    var deferReuse = false
    /// Set while the journal misses changes (`BackingStore.holdReclaim`): quarantined
    /// blocks then stay quarantined even after a sync.
    var reclaimHeld = false
    /// Blocks nobody references that may not be reused yet: neither referenced nor free.
    private(set) var quarantined: [Range<UInt64>] = []
    private(set) var quarantinedBlocks: UInt64 = 0
    /// Blocks taken out of quarantine by a reclaim that is punching them (without the
    /// lock) and has not put them in the free map yet, or out of `punched` by a reclaim
    /// whose sync has not returned: neither free nor quarantined, and not available either.
    private(set) var reclaimingBlocks: UInt64 = 0
    /// Blocks a reclaim punched (or zeroed) after a sync made their frees durable. The
    /// punch itself is durable only after the next sync: until then a power cut may bring
    /// back their old bytes, which a new owner whose frames reached the disk before its
    /// data would show. So they become free only at the next reclaim, after its sync.
    private(set) var punched: [Range<UInt64>] = []
    private(set) var punchedBlocks: UInt64 = 0
    /// Blocks that lost a reference since the last sync while others still reference
    /// them (an unlinked clone sibling, the replaced range of a clone): until the journal
    /// record that dropped the reference is durable, a power cut may bring the old
    /// reference back, so no one may overwrite them in place even when their count is 1.
    private(set) var unshared = RangeSet<UInt64>()
    /// `unshared` as taken by the reclaim whose sync is under way.
    private(set) var unsharedSyncing = RangeSet<UInt64>()

    /// Blocks that may still be referenced: capacity minus what is.
    var roomBlocks: UInt64 { capacityBlocks - min(capacityBlocks, references.allocatedBlocks) }
    /// Blocks only metadata (journal, checkpoint) may take, so that a filesystem whose
    /// files filled it can still record deletions, checkpoint and unmount.
    var metadataReserveBlocks: UInt64 = 0

    init(capacityBlocks: UInt64, firstBlock: UInt64, endBlock: UInt64? = nil) {
        precondition((endBlock ?? .max) >= firstBlock + capacityBlocks, "the mapping covers the capacity")
        self.capacityBlocks = capacityBlocks
        self.endBlock = endBlock ?? firstBlock + capacityBlocks
        self.firstBlock = firstBlock
        highWaterBlocks = firstBlock
        reservedBlocks = firstBlock
    }

    struct Grant {
        var blocks: Range<UInt64>
        /// True when the blocks were freed before (and so may need zeroing).
        var reused: Bool
    }

    /// Hands out at most `wanted` blocks: at `hint` if free there, else a free range that
    /// fits, else fresh blocks above the high-water mark, else the largest free range.
    mutating func allocate(_ wanted: UInt64, hint: UInt64?, forMetadata: Bool = false) throws(FSError) -> Grant {
        precondition(wanted > 0)
        // Quarantined and punched blocks are not referenced but cannot be handed out either.
        let waiting = waitingBlocks
        var room = roomBlocks - min(roomBlocks, waiting)
        if !forMetadata { room -= min(room, metadataReserveBlocks) }
        guard room > 0 else { throw .noSpace }
        let count = min(wanted, room)
        let grant = pick(count, hint: hint)
        references.insertAllocated(grant.blocks)
        return grant
    }

    /// Undoes `allocate` for fresh blocks nobody has seen yet (the disk could not take
    /// them). They go back above the high-water mark rather than into the free map: they
    /// may lie past the end of the image file, where a later write through the mapping
    /// would fault.
    mutating func giveBack(_ blocks: Range<UInt64>) {
        precondition(blocks.upperBound == highWaterBlocks, "only the latest fresh grant can be given back")
        let freed = references.release(blocks)
        assert(freed == [blocks])
        highWaterBlocks = blocks.lowerBound
    }

    /// Freed blocks nobody may have yet: quarantined, punched, or in a reclaim's hands.
    var waitingBlocks: UInt64 { quarantinedBlocks + reclaimingBlocks + punchedBlocks }

    mutating func quarantine(_ blocks: Range<UInt64>) {
        quarantined.append(blocks)
        quarantinedBlocks += UInt64(blocks.count)
    }

    /// What a reclaim takes before its sync: the quarantined blocks (to punch after it),
    /// the blocks punched by the previous reclaim (to free after it), and the unshared
    /// marks (to drop after it). `finishReclaim` must follow.
    mutating func beginReclaim() -> (toPunch: [Range<UInt64>], toFree: [Range<UInt64>]) {
        defer {
            reclaimingBlocks += quarantinedBlocks + punchedBlocks
            quarantined = []
            quarantinedBlocks = 0
            punched = []
            punchedBlocks = 0
            unsharedSyncing = unshared
            unshared = RangeSet()
        }
        return (quarantined, punched)
    }

    /// Ends a reclaim. After a sync that succeeded, `toFree` becomes free, `toPunch`
    /// (punched meanwhile) waits in `punched` for the next sync, and the marks taken
    /// are gone; when the sync failed, everything goes back where it was.
    /// `unpunched` (part of `toPunch`) could be neither punched nor zeroed: they go back to
    /// quarantine, for the next reclaim to try again.
    mutating func finishReclaim(toPunch: [Range<UInt64>], toFree: [Range<UInt64>], succeeded: Bool,
                                unpunched: [Range<UInt64>] = []) {
        for range in toPunch + toFree { reclaimingBlocks -= UInt64(range.count) }
        if succeeded {
            for range in toFree { free.insert(range) }
            for range in unpunched { quarantine(range) }
            let done = unpunched.isEmpty ? toPunch : toPunch.filter { !unpunched.contains($0) }
            punched += done
            punchedBlocks += done.reduce(0) { $0 + UInt64($1.count) }
        } else {
            for range in toPunch { quarantine(range) }
            punched += toFree
            punchedBlocks += toFree.reduce(0) { $0 + UInt64($1.count) }
            unshared.formUnion(unsharedSyncing)
        }
        unsharedSyncing = RangeSet()
    }

    /// Marks `blocks` as having lost a reference that may still be on disk.
    mutating func markUnshared(_ blocks: Range<UInt64>) {
        unshared.insert(contentsOf: blocks)
    }

    /// True when every block of `blocks` is referenced exactly once and none lost a
    /// reference since the last sync (see `unshared`).
    func isExclusive(_ blocks: Range<UInt64>) -> Bool {
        references.isExclusive(blocks) && !unshared.overlaps(blocks) && !unsharedSyncing.overlaps(blocks)
    }

    /// Rebuilds the state of an existing image: `runs` are the reference counts recovery
    /// computed (sorted, disjoint, counts >= 1). Every other block below the end of the
    /// last run is returned, for the caller to punch and then free (or quarantine);
    /// above it nothing has been handed out. `reservedBlocks` is how far the image file
    /// has disk space.
    mutating func restore(runs: [(blocks: Range<UInt64>, count: UInt32)], reservedBlocks: UInt64) -> [Range<UInt64>] {
        precondition(references.allocatedBlocks == 0 && highWaterBlocks == firstBlock, "restore into a used allocator")
        var cursor = firstBlock
        var gaps: [Range<UInt64>] = []
        for run in runs {
            precondition(run.blocks.lowerBound >= cursor && run.count > 0 && run.blocks.upperBound <= endBlock,
                         "recovered block runs must be sorted, disjoint and inside the image")
            if run.blocks.lowerBound > cursor { gaps.append(cursor..<run.blocks.lowerBound) }
            references.load(run.blocks, count: run.count)
            cursor = run.blocks.upperBound
        }
        highWaterBlocks = cursor
        self.reservedBlocks = max(reservedBlocks, cursor)
        return gaps
    }

    private mutating func pick(_ count: UInt64, hint: UInt64?) -> Grant {
        if let hint {
            if hint == highWaterBlocks, let fresh = bump(count, exact: true) {
                return Grant(blocks: fresh, reused: false)
            }
            if let r = free.take(at: hint, upTo: count) { return Grant(blocks: r, reused: true) }
        }
        if let r = free.take(count: count) { return Grant(blocks: r, reused: true) }
        if let fresh = bump(count, exact: true) { return Grant(blocks: fresh, reused: false) }
        if let r = free.takeFront(ofRunOfAtLeast: 1, upTo: count) { return Grant(blocks: r, reused: true) }
        // The capacity check guarantees that some block is free or fresh.
        guard let fresh = bump(count, exact: false) else {
            preconditionFailure("allocator found no block although live < capacity")
        }
        return Grant(blocks: fresh, reused: false)
    }

    private mutating func bump(_ count: UInt64, exact: Bool) -> Range<UInt64>? {
        let available = endBlock - highWaterBlocks
        guard available >= (exact ? count : 1) else { return nil }
        let r = highWaterBlocks..<highWaterBlocks + min(count, available)
        highWaterBlocks = r.upperBound
        return r
    }

    func check() throws(FSError) {
        var referenced: UInt64 = 0
        var previousEnd = firstBlock
        var runs: [Range<UInt64>] = []
        references.forEachRun { r, count in
            referenced += UInt64(r.count)
            runs.append(r)
            if count == 0 || r.lowerBound < previousEnd { previousEnd = .max }
            previousEnd = max(previousEnd, r.upperBound)
        }
        guard previousEnd != .max else { throw .io("block reference runs overlap or hold a zero count") }
        guard referenced == references.allocatedBlocks else { throw .io("allocated block count is off") }
        var freeCount: UInt64 = 0
        var frees: [Range<UInt64>] = []
        free.forEachRange { r in freeCount += UInt64(r.count); frees.append(r) }
        guard freeCount == free.freeBlocks else { throw .io("free block count is off") }
        guard referenced + freeCount + waitingBlocks == highWaterBlocks - firstBlock else {
            throw .io("\(referenced) referenced + \(freeCount) free + \(quarantinedBlocks) quarantined + \(punchedBlocks) punched + \(reclaimingBlocks) being reclaimed blocks != \(highWaterBlocks - firstBlock) blocks below the high-water mark")
        }
        // Both lists are sorted: walk them together to find any block in both.
        var i = 0, j = 0
        while i < runs.count && j < frees.count {
            if runs[i].overlaps(frees[j]) { throw .io("blocks \(runs[i]) are both referenced and free") }
            if runs[i].upperBound <= frees[j].lowerBound { i += 1 } else { j += 1 }
        }
    }
}

extension RangeSet where Bound == UInt64 {
    /// The index of the first of the set's ranges that ends after `value` (a binary
    /// search; `ranges.endIndex` when none does).
    private func firstRange(endingAfter value: UInt64) -> Ranges.Index {
        let list = ranges
        var low = list.startIndex, high = list.endIndex
        while low < high {
            let middle = list.index(low, offsetBy: list.distance(from: low, to: high) / 2)
            if list[middle].upperBound <= value { low = list.index(after: middle) } else { high = middle }
        }
        return low
    }

    /// True when some value of `range` is in the set (a binary search, no allocation).
    func overlaps(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return false }
        let first = firstRange(endingAfter: range.lowerBound)
        return first < ranges.endIndex && ranges[first].lowerBound < range.upperBound
    }

    /// The set's values within `range`: a binary search for the first range that reaches
    /// into it, then only the ranges that overlap it. `intersection(RangeSet(range))`
    /// walks and copies the whole set, which made a commit's reference pass, called once
    /// for every extent it retains, quadratic (42% of the daemon's CPU under random
    /// writes by two processes).
    func restricted(to range: Range<UInt64>) -> RangeSet<UInt64> {
        guard !range.isEmpty else { return RangeSet() }
        let list = ranges
        var parts = RangeSet<UInt64>()
        var i = firstRange(endingAfter: range.lowerBound)
        while i < list.endIndex && list[i].lowerBound < range.upperBound {
            parts.insert(contentsOf: list[i].clamped(to: range))
            i = list.index(after: i)
        }
        return parts
    }
}
