/// Free space by group: what is used in a range of blocks (runs and pending frees), and
/// the group summaries kept from it.
///
/// Summaries are brought up to date per change set, not per item change: the changes
/// record the blocks whose free space they may have changed (`touch`), and
/// `updateGroupSummaries` rewrites the summaries of their groups that differ. Two ways,
/// both exact:
/// - a group where blocks were only freed (released, pending frees deleted, or turned
///   from runs into pending frees): every block touched was used before, so the free
///   count grows by the touched blocks free now, and the largest free run is the larger
///   of the old one and the free runs around those blocks, found from their neighbours
///   (a floor search and a step right in the runs, and the pending frees);
/// - a group where blocks were allocated: the largest free run may have been cut, and
///   only the group's runs say what the next largest is, so they are read (as an
///   allocator loading the group reads them). A by-size index of free runs (XFS's cntbt)
///   would avoid the scan, at the price of another structure kept in step.
extension BlockReferenceTree {
    /// The group holding `block`.
    public func group(of block: UInt64) -> UInt64 { block / blocksPerGroup }

    /// The blocks of `group`.
    public func blocks(of group: UInt64) -> Range<UInt64> { group * blocksPerGroup..<(group + 1) * blocksPerGroup }

    /// Records that the free space of `blocks` may have changed; `allocating` when blocks
    /// there became used by an allocation (free before).
    func touch(_ blocks: Range<UInt64>, allocating: Bool = false) {
        guard !blocks.isEmpty else { return }
        touchedBlocks.insert(contentsOf: blocks)
        guard allocating else { return }
        for group in group(of: blocks.lowerBound)...group(of: blocks.upperBound - 1) { groupsAllocatedIn.insert(group) }
    }

    /// Drops what `touch` recorded (the changes were abandoned).
    func forgetTouchedBlocks() {
        touchedBlocks = RangeSet()
        groupsAllocatedIn.removeAll()
    }

    /// The used blocks inside `range`, sorted and coalesced: every run and every pending
    /// free (of any generation) overlapping it, clipped to it. `pending` may be given
    /// when the caller has them already.
    public func usedRanges(in range: Range<UInt64>,
                           pending: [(generation: UInt64, blocks: Range<UInt64>)]? = nil) throws(FSError) -> [Range<UInt64>] {
        var pending = pending ?? []
        if pending.isEmpty { pending = try pendingFrees(through: Self.maximumPendingGeneration) }
        var used = try runs(overlapping: range).map(\.blocks)
        used += pending.map(\.blocks).filter { $0.overlaps(range) }
        used.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for blocks in used {
            let clipped = max(blocks.lowerBound, range.lowerBound)..<min(blocks.upperBound, range.upperBound)
            if let last = merged.last, last.upperBound >= clipped.lowerBound {
                // A replaced block-tree node is both in a run and pending until its
                // pending free retires (`BlockSpace.settle`): counted once.
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, clipped.upperBound)
            } else {
                merged.append(clipped)
            }
        }
        return merged
    }

    /// The free blocks inside `range`: the complement of `usedRanges`, ascending.
    public func freeRanges(in range: Range<UInt64>,
                           pending: [(generation: UInt64, blocks: Range<UInt64>)]? = nil) throws(FSError) -> [Range<UInt64>] {
        var free: [Range<UInt64>] = []
        var cursor = range.lowerBound
        for used in try usedRanges(in: range, pending: pending) {
            if used.lowerBound > cursor { free.append(cursor..<used.lowerBound) }
            cursor = used.upperBound
        }
        if cursor < range.upperBound { free.append(cursor..<range.upperBound) }
        return free
    }

    /// The free run holding the free blocks `blocks`, inside `limits`: from the end of the
    /// nearest used block below (the run starting below, a pending free ending below) to
    /// the nearest used block above.
    func freeRun(around blocks: Range<UInt64>, in limits: Range<UInt64>,
                 pending: [(generation: UInt64, blocks: Range<UInt64>)]) throws(FSError) -> Range<UInt64> {
        var lower = limits.lowerBound, upper = limits.upperBound
        if let floor = try tree.floor(TreeKey(object: blocks.lowerBound, kind: Self.runKind, offset: 0)) {
            let run = try Self.run(floor.key, floor.value)
            assert(run.blocks.upperBound <= blocks.lowerBound, "free blocks \(blocks) inside run \(run)")
            lower = max(lower, run.blocks.upperBound)
        }
        try tree.scan(from: TreeKey(object: blocks.upperBound, kind: Self.runKind, offset: 0), through: Self.lastRunKey) { (key, value) throws(FSError) in
            upper = min(upper, try Self.run(key, value).blocks.lowerBound)
            return false
        }
        for item in pending {
            if item.blocks.upperBound <= blocks.lowerBound { lower = max(lower, item.blocks.upperBound) }
            if item.blocks.lowerBound >= blocks.upperBound { upper = min(upper, item.blocks.lowerBound) }
        }
        return lower..<max(lower, upper)
    }

    /// The stored summary of `group` (all free when it has no item).
    public func groupSummary(_ group: UInt64) throws(FSError) -> BlockGroupSummary {
        try tree.withValue(BlockGroupSummary.key(group: group)) { (value) throws(FSError) in
            guard let value else { return .allFree(blocksPerGroup: blocksPerGroup) }
            return try BlockGroupSummary.decode(BlockGroupSummary.key(group: group), value, blocksPerGroup: blocksPerGroup).summary
        }
    }

    /// Every stored summary, by group (checks and tests).
    public func storedGroupSummaries() throws(FSError) -> [UInt64: BlockGroupSummary] {
        var found: [UInt64: BlockGroupSummary] = [:]
        try tree.scan(from: BlockGroupSummary.key(group: 0), through: .maximum) { (key, value) throws(FSError) in
            let (group, summary) = try BlockGroupSummary.decode(key, value, blocksPerGroup: blocksPerGroup)
            found[group] = summary
            return true
        }
        return found
    }

    /// The first group from `first` through `last` whose stored summary has a free run of
    /// at least `run` blocks (a group with no item is all free), reading the summary items
    /// in order only as far as that group.
    public func firstGroup(from first: UInt64, through last: UInt64, withRunOf run: UInt64) throws(FSError) -> UInt64? {
        guard first <= last, run <= blocksPerGroup else { return nil }
        var expected = first
        var found: UInt64?
        try tree.scan(from: BlockGroupSummary.key(group: first), through: BlockGroupSummary.key(group: last)) { (key, value) throws(FSError) in
            let (group, summary) = try BlockGroupSummary.decode(key, value, blocksPerGroup: blocksPerGroup)
            if group > expected {
                found = expected
                return false
            }
            if UInt64(summary.largestFreeRun) >= run {
                found = group
                return false
            }
            expected = group + 1
            return true
        }
        if found == nil, expected <= last { found = expected }
        return found
    }

    /// The summary `group` has by its runs and pending frees now.
    public func computedGroupSummary(_ group: UInt64,
                                     pending: [(generation: UInt64, blocks: Range<UInt64>)]? = nil) throws(FSError) -> BlockGroupSummary {
        BlockGroupSummary.of(group: group, blocksPerGroup: blocksPerGroup,
                             used: try usedRanges(in: blocks(of: group), pending: pending))
    }

    /// Rewrites the summaries of the groups touched since the last update that no longer
    /// match their runs and pending frees (an all-free group loses its item), together or
    /// not at all; returns how many items changed.
    @discardableResult
    public func updateGroupSummaries() throws(FSError) -> Int {
        guard !touchedBlocks.isEmpty else { return 0 }
        let pending = try pendingFrees(through: Self.maximumPendingGeneration)
        var groups = Set<UInt64>()
        for range in touchedBlocks.ranges {
            for group in group(of: range.lowerBound)...group(of: range.upperBound - 1) { groups.insert(group) }
        }
        var upserts: [(TreeKey, [UInt8])] = [], removals: [TreeKey] = []
        for group in groups.sorted() {
            let key = BlockGroupSummary.key(group: group)
            let stored = try tree.lookup(key)
            let summary = groupsAllocatedIn.contains(group)
                ? try scannedSummary(group, pending: pending)
                : try summaryAfterFrees(group, stored: try groupSummary(group), pending: pending)
            if summary == .allFree(blocksPerGroup: blocksPerGroup) {
                if stored != nil { removals.append(key) }
            } else if stored != summary.encoded() {
                upserts.append((key, summary.encoded()))
            }
        }
        try changeTogether(upserts.count + removals.count) { () throws(FSError) in
            for key in removals { _ = try tree.remove(key) }
            for (key, value) in upserts { try tree.upsert(key, value) }
        }
        forgetTouchedBlocks()
        return upserts.count + removals.count
    }

    private func scannedSummary(_ group: UInt64, pending: [(generation: UInt64, blocks: Range<UInt64>)]) throws(FSError) -> BlockGroupSummary {
        summaryScans += 1
        return try computedGroupSummary(group, pending: pending)
    }

    /// The summary of a group where blocks were only freed since `stored` was right:
    /// every touched block was used then, so those free now are the newly free ones.
    private func summaryAfterFrees(_ group: UInt64, stored: BlockGroupSummary,
                                   pending: [(generation: UInt64, blocks: Range<UInt64>)]) throws(FSError) -> BlockGroupSummary {
        let limits = blocks(of: group)
        var free = UInt64(stored.freeBlocks), largest = UInt64(stored.largestFreeRun)
        for touched in touchedBlocks.ranges where touched.overlaps(limits) {
            let inside = max(touched.lowerBound, limits.lowerBound)..<min(touched.upperBound, limits.upperBound)
            for newlyFree in try freeRanges(in: inside, pending: pending) {
                free += UInt64(newlyFree.count)
                largest = max(largest, UInt64(try freeRun(around: newlyFree, in: limits, pending: pending).count))
            }
        }
        guard free <= blocksPerGroup, largest <= free else {
            // Only a damaged tree (a block freed that was free already) gets here.
            throw .damagedImage("block tree: group \(group) would have \(free) free blocks (largest run \(largest)) of \(blocksPerGroup) after frees")
        }
        summaryUpdatesByNeighbours += 1
        return BlockGroupSummary(freeBlocks: UInt32(free), largestFreeRun: UInt32(largest))
    }
}
