/// Free space by group: what is used in a range of blocks (runs and pending frees), and
/// the group summaries kept from it.
///
/// Summaries are brought up to date per change set, not per item change: the changes
/// record the groups whose free space they changed (`touch`), and `updateGroupSummaries`
/// recomputes those from the group's runs and pending frees and rewrites the items that
/// differ. Recomputing (rather than adjusting counts) keeps "largest free run" exact,
/// which no adjustment can when the largest run is cut; it reads the runs of each group
/// touched, which a commit's allocations there read anyway.
extension BlockReferenceTree {
    /// The group holding `block`.
    public func group(of block: UInt64) -> UInt64 { block / blocksPerGroup }

    /// The blocks of `group`.
    public func blocks(of group: UInt64) -> Range<UInt64> { group * blocksPerGroup..<(group + 1) * blocksPerGroup }

    /// Records that the free space of the groups `blocks` lies in changed.
    func touch(_ blocks: Range<UInt64>) {
        guard !blocks.isEmpty else { return }
        for group in group(of: blocks.lowerBound)...group(of: blocks.upperBound - 1) { touchedGroups.insert(group) }
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
    public func freeRanges(in range: Range<UInt64>) throws(FSError) -> [Range<UInt64>] {
        var free: [Range<UInt64>] = []
        var cursor = range.lowerBound
        for used in try usedRanges(in: range) {
            if used.lowerBound > cursor { free.append(cursor..<used.lowerBound) }
            cursor = used.upperBound
        }
        if cursor < range.upperBound { free.append(cursor..<range.upperBound) }
        return free
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
        guard !touchedGroups.isEmpty else { return 0 }
        let pending = try pendingFrees(through: Self.maximumPendingGeneration)
        var upserts: [(TreeKey, [UInt8])] = [], removals: [TreeKey] = []
        for group in touchedGroups.sorted() {
            let summary = try computedGroupSummary(group, pending: pending)
            let key = BlockGroupSummary.key(group: group)
            let stored = try tree.lookup(key)
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
        touchedGroups.removeAll()
        return upserts.count + removals.count
    }
}
