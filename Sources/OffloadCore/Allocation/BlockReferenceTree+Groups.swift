/// Free space by group: what is used in a range of blocks (runs and pending frees), and
/// the group summaries kept from it.
///
/// Summaries are brought up to date per change set (`updateGroupSummaries`, once per
/// round of the commit), from what the changes did, not from a rescan of the group. Each
/// change records the blocks whose state it flips (`touch`), and for every block the
/// first time it is touched whether it was free then; so at the update, a touched block
/// free now and used before is newly free, one used now and free before newly used, and
/// the free count moves by exactly those. The largest free run:
/// - grows only where blocks became free: the free run around each newly free range
///   (its neighbours: a floor search and a step right in the runs, and the pending
///   frees' coverage) is a candidate;
/// - shrinks only where blocks free at the update before became used; each such change
///   looks, before it is made, at the free run it cuts (`noteBecomingUsed`). The first
///   cut into a longest run finds a run at least as long as the stored largest (frees
///   only grow runs), so while every cut finds a shorter run the longest one is intact
///   and the stored value stands; otherwise the group's runs are read (a scan, as the
///   allocator's load of the group reads them). Allocations go to a few groups and
///   mostly fill holes shorter than the group's longest run; the commit's node pool and
///   large data runs cut the longest one, in the group the allocator is filling.
/// Alternatives weighed: a by-size index of every group's free runs (XFS's cntbt), in
/// the tree (another item per free run, written with every change) or in memory (built
/// by reading a group once per mount): exact without a scan, but a second structure to
/// keep in step; and a stored largest run that is only an upper bound, corrected when an
/// allocation loads the group: no scan at the commit, but a summary that may send an
/// allocation to a group that cannot serve it, and a weaker promise for fsck to check.
extension BlockReferenceTree {
    /// The group holding `block`.
    public func group(of block: UInt64) -> UInt64 { block / blocksPerGroup }

    /// The blocks of `group`.
    public func blocks(of group: UInt64) -> Range<UInt64> { group * blocksPerGroup..<(group + 1) * blocksPerGroup }

    /// `blocks` cut at group boundaries, with their groups.
    func pieces(of blocks: Range<UInt64>) -> [(group: UInt64, blocks: Range<UInt64>)] {
        var found: [(group: UInt64, blocks: Range<UInt64>)] = []
        var start = blocks.lowerBound
        while start < blocks.upperBound {
            let group = group(of: start)
            let end = min(blocks.upperBound, (group + 1) * blocksPerGroup)
            found.append((group, start..<end))
            start = end
        }
        return found
    }

    /// Records that a change flips the free space of `blocks` (used to free or back);
    /// `wasFree` says whether they are free now, before the change. Only the first touch
    /// of a block since the last update says what it was then.
    func touch(_ blocks: Range<UInt64>, wasFree: Bool) {
        let first = touched.add(blocks)
        if wasFree { for blocks in first { touchedWhileFree.add(blocks) } }
    }

    /// Before a change makes `blocks` used, which are free now (in no run, no pending free):
    /// when some of them were free at the last update, the change cuts a free run, and
    /// when that run is at least as long as the group's stored largest one, the group's
    /// largest run is found again by a scan at the update (see the type's comment).
    func noteBecomingUsed(_ blocks: Range<UInt64>) throws(FSError) {
        for (group, piece) in pieces(of: blocks) where !groupsToScan.contains(group) {
            var freeBefore = RangeSet(piece)
            freeBefore.subtract(RangeSet(touched.covered(in: piece)))
            freeBefore.formUnion(RangeSet(touchedWhileFree.covered(in: piece)))
            guard !freeBefore.isEmpty else { continue }
            let largest: UInt32
            if let known = largestAtLastUpdate[group] {
                largest = known
            } else {
                largest = try groupSummary(group).largestFreeRun
                largestAtLastUpdate[group] = largest
            }
            let cut = try freeRun(around: piece, in: self.blocks(of: group))
            if cut.count >= Int(largest) { groupsToScan.insert(group) }
        }
        touch(blocks, wasFree: true)
    }

    /// Drops what the changes since the last update recorded.
    func forgetTouchedBlocks() {
        touched.removeAll()
        touchedWhileFree.removeAll()
        groupsToScan.removeAll()
        largestAtLastUpdate.removeAll()
    }

    /// The tree's changes since its commit were abandoned: drops what they recorded, the
    /// pending frees' coverage too (read from the tree again when needed).
    public func abandonChanges() {
        forgetTouchedBlocks()
        pendingIndex = nil
    }

    /// Every pending free's blocks, counted: read from the tree at the first use and kept
    /// in step by `addPendingFrees` and `removePendingFrees` (the tree's pending frees
    /// follow the changes of the last generations, not the image).
    func pendingCoverage() throws(FSError) -> BlockCoverage {
        if let pendingIndex { return pendingIndex }
        let coverage = BlockCoverage()
        for item in try pendingFrees(through: Self.maximumPendingGeneration) { coverage.add(item.blocks) }
        pendingIndex = coverage
        return coverage
    }

    /// The blocks inside `range` that a pending free names, ascending.
    public func pendingBlocks(in range: Range<UInt64>) throws(FSError) -> [Range<UInt64>] {
        try pendingCoverage().covered(in: range)
    }

    /// The used blocks inside `range`, sorted and coalesced: every run and every pending
    /// free (of any generation) overlapping it, clipped to it.
    public func usedRanges(in range: Range<UInt64>) throws(FSError) -> [Range<UInt64>] {
        var used = try runs(overlapping: range).map(\.blocks)
        used += try pendingBlocks(in: range)
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
    public func freeRanges(in range: Range<UInt64>) throws(FSError) -> [Range<UInt64>] {
        Self.complement(of: try usedRanges(in: range), in: range)
    }

    /// The blocks of `range` outside `used` (sorted, disjoint, inside `range`), ascending.
    static func complement(of used: [Range<UInt64>], in range: Range<UInt64>) -> [Range<UInt64>] {
        var free: [Range<UInt64>] = []
        var cursor = range.lowerBound
        for used in used {
            if used.lowerBound > cursor { free.append(cursor..<used.lowerBound) }
            cursor = used.upperBound
        }
        if cursor < range.upperBound { free.append(cursor..<range.upperBound) }
        return free
    }

    /// The free run holding the free blocks `blocks`, inside `limits`: from the end of the
    /// nearest used block below (the run starting below, a pending free ending below) to
    /// the nearest used block above.
    func freeRun(around blocks: Range<UInt64>, in limits: Range<UInt64>) throws(FSError) -> Range<UInt64> {
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
        let pending = try pendingCoverage()
        if let end = pending.coveredEnd(below: blocks.lowerBound) { lower = max(lower, end) }
        if let start = pending.coveredStart(atOrAbove: blocks.upperBound) { upper = min(upper, start) }
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
    public func computedGroupSummary(_ group: UInt64) throws(FSError) -> BlockGroupSummary {
        BlockGroupSummary.of(group: group, blocksPerGroup: blocksPerGroup, used: try usedRanges(in: blocks(of: group)))
    }

    /// Rewrites the summaries of the groups touched since the last update that no longer
    /// match their runs and pending frees (an all-free group loses its item), together or
    /// not at all; returns how many items changed.
    @discardableResult
    public func updateGroupSummaries() throws(FSError) -> Int {
        guard !touched.isEmpty else { return 0 }
        if let past = touched.covered(in: blockLimit..<Self.pendingFreeBase).first {
            throw .damagedImage("block tree: blocks \(past) past the image's end (block \(blockLimit)) changed "
                                + "(a damaged run, pending free or extent)")
        }
        var piecesByGroup: [UInt64: [Range<UInt64>]] = [:]
        for range in touched.covered(in: 0..<Self.pendingFreeBase) {
            for (group, piece) in pieces(of: range) { piecesByGroup[group, default: []].append(piece) }
        }
        var upserts: [(TreeKey, [UInt8])] = [], removals: [TreeKey] = []
        for group in piecesByGroup.keys.sorted() {
            let key = BlockGroupSummary.key(group: group)
            let stored = try tree.lookup(key)
            let summary = groupsToScan.contains(group)
                ? try scannedSummary(group)
                : try summaryAfterChanges(group, stored: try groupSummary(group), touched: piecesByGroup[group]!)
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

    private func scannedSummary(_ group: UInt64) throws(FSError) -> BlockGroupSummary {
        summaryScans += 1
        return try computedGroupSummary(group)
    }

    /// The summary of a group whose longest free run no change cut since `stored` was
    /// right: the free count moves by the blocks that flipped, and the largest run is the
    /// stored one or a run around newly free blocks.
    private func summaryAfterChanges(_ group: UInt64, stored: BlockGroupSummary,
                                     touched pieces: [Range<UInt64>]) throws(FSError) -> BlockGroupSummary {
        let limits = blocks(of: group)
        var free = Int64(stored.freeBlocks), largest = UInt64(stored.largestFreeRun)
        for piece in pieces {
            let used = try usedRanges(in: piece)
            var newlyFree = Self.complement(of: used, in: piece)
            let wasFree = touchedWhileFree.covered(in: piece)
            if !wasFree.isEmpty {
                // Blocks allocated here since the last update (the usual piece has none).
                let wasFreeSet = RangeSet(wasFree)
                newlyFree = RangeSet(newlyFree).subtracting(wasFreeSet).ranges.map { $0 }
                free -= RangeSet(used).intersection(wasFreeSet).ranges.reduce(0) { $0 + Int64($1.count) }
            }
            free += newlyFree.reduce(0) { $0 + Int64($1.count) }
            for blocks in newlyFree {
                largest = max(largest, UInt64(try freeRun(around: blocks, in: limits).count))
            }
        }
        guard free >= 0, UInt64(free) <= blocksPerGroup, largest <= UInt64(free) else {
            // Only a damaged tree (a block freed that was free already) gets here.
            throw .damagedImage("block tree: group \(group) would have \(free) free blocks (largest run \(largest)) of \(blocksPerGroup) after the commit's changes")
        }
        summaryUpdatesByNeighbours += 1
        return BlockGroupSummary(freeBlocks: UInt32(free), largestFreeRun: UInt32(largest))
    }
}
