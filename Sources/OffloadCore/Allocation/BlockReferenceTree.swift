/// The image's block reference counts kept in a copy-on-write tree: format 2's block tree
/// (docs/ARCHITECTURE.md, "Metadata at scale", step 3), the persisted form of what
/// `BlockReferenceCounts` keeps in RAM today.
///
/// Items are runs of blocks with equal counts and equal use, coalesced like
/// `BlockReferenceCounts`'s, keyed by their first block, (first, `runKind`, 0): the run
/// holding block b is the floor of (b, `runKind`, 0) if it reaches b, and growing a run at
/// its end (the allocator hands out ascending blocks) keeps its key. A block no run holds
/// is free.
/// Runs say what their blocks hold (`BlockRun.Use`): file data, or nodes of which tree, so
/// that repair can tell a live node from a stale copy and snapshots can count node
/// references.
///
/// Blocks freed by a generation wait as *pending frees* (key (2^63 + generation, 2, first
/// block), value: length u64) until the commit that freed them is durable, their punch is
/// durable and a later commit has deleted the item (docs/ARCHITECTURE.md, "Reuse is
/// counted in commits"): block numbers stay below 2^63, so all runs sort before them, and
/// generations below 2^62, so all pending frees sort before the group summaries
/// (`BlockGroupSummary`, kept by `updateGroupSummaries`). A freed node kept for reuse
/// (`ReusableNodes`) stays pending until a commit makes it a node again, deleting its
/// pending free in part (`removePendingBlocks`). A block tree node replaced by a
/// commit keeps its run while pending, and loses it when the pending free is deleted
/// (`BlockSpace`'s commit explains why); other blocks lose their runs when freed.
///
/// Every change rewrites only the runs it touches and their two neighbours (to coalesce),
/// so its cost follows the change, not the image. Not thread-safe: the commit that applies
/// a generation's reference changes is its one user.
public final class BlockReferenceTree {
    /// The key kind of a run item.
    public static let runKind: UInt8 = 1
    /// The key kind, and the first key object, of pending frees.
    public static let pendingFreeKind: UInt8 = 2
    public static let pendingFreeBase: UInt64 = 1 << 63
    /// Generations of pending frees stay below 2^62 (above them are the group summaries).
    public static let maximumPendingGeneration: UInt64 = (1 << 62) - 1
    /// The last key a run can have.
    static let lastRunKey = TreeKey(object: pendingFreeBase - 1, kind: runKind, offset: 0)
    public let tree: CopyOnWriteTree
    /// Blocks a group summary covers (`BlockGroupSummary.formatBlocksPerGroup` in the
    /// format; tests take smaller groups to have many).
    public let blocksPerGroup: UInt64
    /// True (the default): a change takes every block it may need before it starts, so
    /// that running out of space changes nothing. A caller that abandons the whole tree
    /// when any change fails (`BlockSpace.commit`) turns it off: the worst case of a
    /// change of many items (a tree path per item) is far more than it uses, and would
    /// have to come out of the commit's node pool all at once.
    public var reservesBlocksPerChange = true
    /// The end of the blocks the image has (`BlockSpace.endBlock`): a change past it comes
    /// from a damaged image (a run or pending free of its block tree, an extent of its
    /// filesystem tree), and `updateGroupSummaries` refuses it rather than summarise every
    /// group up to it (a fuzzed image's 1.7e13 blocks asked for 3 GiB).
    public var blockLimit = pendingFreeBase
    /// What the changes since the summaries were last brought up to date
    /// (`updateGroupSummaries`) did to the free space: the blocks they flipped (`touched`),
    /// those among them that were free when first touched, the groups whose longest free
    /// run a change may have cut (read again by a scan), and the stored largest runs read
    /// meanwhile (docs/ARCHITECTURE.md, "The block space").
    let touched = BlockCoverage()
    let touchedWhileFree = BlockCoverage()
    var groupsToScan = Set<UInt64>()
    var largestAtLastUpdate: [UInt64: UInt32] = [:]
    /// The pending frees' blocks (`pendingCoverage`), nil until first needed.
    var pendingIndex: BlockCoverage?
    /// Summaries recomputed by a scan of their group's runs, and by the neighbours of the
    /// freed blocks alone (tests and benchmarks see which path ran).
    public internal(set) var summaryScans = 0
    public internal(set) var summaryUpdatesByNeighbours = 0

    public init(tree: CopyOnWriteTree, blocksPerGroup: UInt64 = BlockGroupSummary.formatBlocksPerGroup) {
        precondition(blocksPerGroup >= 1 && blocksPerGroup <= UInt64(UInt32.max), "a group's counts are u32")
        self.tree = tree
        self.blocksPerGroup = blocksPerGroup
    }

    /// The runs overlapping `blocks`, in order: the floor of the first block, if it reaches
    /// into `blocks`, then the runs starting inside.
    public func runs(overlapping blocks: Range<UInt64>) throws(FSError) -> [BlockRun] {
        guard !blocks.isEmpty, blocks.lowerBound < Self.pendingFreeBase else { return [] }
        var found: [BlockRun] = []
        let first = TreeKey(object: blocks.lowerBound, kind: Self.runKind, offset: 0)
        if let floor = try tree.floor(first), floor.key < first {
            let run = try Self.run(floor.key, floor.value)
            if run.blocks.upperBound > blocks.lowerBound { found.append(run) }
        }
        try tree.scan(from: first, through: Self.lastRunKey) { (key, value) throws(FSError) in
            let run = try Self.run(key, value)
            guard run.blocks.lowerBound < blocks.upperBound else { return false }
            found.append(run)
            return true
        }
        return found
    }

    /// The run an item states; damage if the item is not a run.
    static func run(_ key: TreeKey, _ value: some Collection<UInt8>) throws(FSError) -> BlockRun {
        guard key.kind == runKind, key.offset == 0, key.object < pendingFreeBase else {
            throw .damagedImage("block tree item \(key) where a run was expected")
        }
        let bytes = Array(value)
        let decoded = bytes.withUnsafeBytes { raw in
            Result { () throws(ByteReader.Malformed) -> BlockRun in try BlockRun.decode(first: key.object, raw) }
        }
        switch decoded {
        case .success(let run): return run
        case .failure(let problem): throw .damagedImage("block tree item \(key): \(problem.description)")
        }
    }

    /// Every run, in order (checks and tests).
    public func allRuns() throws(FSError) -> [BlockRun] { try runs(overlapping: 0..<Self.pendingFreeBase) }

    /// The reference count of `block` (0: free).
    public func count(of block: UInt64) throws(FSError) -> UInt32 {
        guard block < UInt64.max else { return 0 }
        return try runs(overlapping: block..<block + 1).first?.count ?? 0
    }

    /// Records freshly allocated blocks with one reference each; they must be free.
    public func insertAllocated(_ blocks: Range<UInt64>, use: BlockRun.Use) throws(FSError) {
        guard !blocks.isEmpty else { return }
        guard blocks.upperBound <= Self.pendingFreeBase else {
            throw .invalidArgument("blocks \(blocks) lie past 2^63")
        }
        guard try runs(overlapping: blocks).isEmpty else {
            throw .invalidArgument("blocks \(blocks) are allocated already")
        }
        guard try pendingBlocks(in: blocks).isEmpty else {
            throw .invalidArgument("blocks \(blocks) are pending free")
        }
        try noteBecomingUsed(blocks)
        try rewrite(blocks, with: [BlockRun(blocks: blocks, count: 1, use: use)])
    }

    /// Adds one reference to every block in `blocks`, which must all be allocated.
    public func retain(_ blocks: Range<UInt64>) throws(FSError) {
        _ = try adjust(blocks, by: 1)
    }

    /// Drops one reference from every block in `blocks`, which must all be allocated;
    /// returns the ranges that became free, in ascending order.
    public func release(_ blocks: Range<UInt64>) throws(FSError) -> [Range<UInt64>] {
        let freed = try adjust(blocks, by: -1)
        for range in freed { touch(range, wasFree: false) }
        return freed
    }

    // MARK: - Pending frees

    /// Records `ranges`, freed in `generation`, as pending frees. Refuses a range that
    /// starts where one of that generation does (a block freed twice before a commit).
    public func addPendingFrees(generation: UInt64, _ ranges: [Range<UInt64>]) throws(FSError) {
        guard generation <= Self.maximumPendingGeneration else { throw .invalidArgument("generation \(generation) out of range") }
        let ranges = ranges.filter { !$0.isEmpty }
        let keys = ranges.map { TreeKey(object: Self.pendingFreeBase + generation, kind: Self.pendingFreeKind, offset: $0.lowerBound) }
        // A block is freed once per generation: it waits, pending, until after the commit
        // that freed it, so nobody could have allocated and freed it again.
        for (key, range) in zip(keys, ranges) where try tree.contains(key) {
            throw .invalidArgument("block \(range.lowerBound) is pending free in generation \(generation) already")
        }
        // Read before the change: the coverage must not see its items twice.
        let coverage = try pendingCoverage()
        // Blocks released in this change set are free now, and become used again; a
        // replaced block-tree node keeps its run and stays used.
        for range in ranges {
            for blocks in Self.complement(of: try usedRanges(in: range), in: range) { try noteBecomingUsed(blocks) }
        }
        try changeTogether(keys.count) { () throws(FSError) in
            for (key, range) in zip(keys, ranges) {
                var w = ByteWriter(capacity: 8)
                w.u64(UInt64(range.count))
                try tree.upsert(key, w.bytes)
            }
        }
        for range in ranges { coverage.add(range) }
    }

    /// The pending frees of generations `first` through `generation`, oldest first.
    public func pendingFrees(from first: UInt64 = 0, through generation: UInt64) throws(FSError)
        -> [(generation: UInt64, blocks: Range<UInt64>)] {
        guard first <= generation, first <= Self.maximumPendingGeneration else { return [] }
        var found: [(generation: UInt64, blocks: Range<UInt64>)] = []
        let last = Self.pendingFreeBase + min(generation, Self.maximumPendingGeneration)
        try tree.scan(from: TreeKey(object: Self.pendingFreeBase + first, kind: 0, offset: 0),
                      through: TreeKey(object: last, kind: .max, offset: .max)) { (key, value) throws(FSError) in
            var r = ByteReader(value)
            guard key.kind == Self.pendingFreeKind, value.count == 8, let length = try? r.u64(), length >= 1,
                  key.offset < Self.pendingFreeBase, length <= Self.pendingFreeBase - key.offset else {
                throw .damagedImage("block tree item \(key): not a pending free")
            }
            found.append((key.object - Self.pendingFreeBase, key.offset..<key.offset + length))
            return true
        }
        return found
    }

    /// Deletes the pending frees of `generation` (their blocks are free for good).
    public func removePendingFrees(generation: UInt64) throws(FSError) {
        _ = try removePendingFrees(from: generation, through: generation)
    }

    /// Deletes the pending frees of generations `first` through `generation`, together or
    /// not at all; returns them, oldest first.
    @discardableResult
    public func removePendingFrees(from first: UInt64 = 0, through generation: UInt64) throws(FSError)
        -> [(generation: UInt64, blocks: Range<UInt64>)] {
        try removePendingFrees(from: first, through: generation, keeping: BlockRanges())
    }

    /// Deletes the pending frees of generations `first` through `generation`, together or
    /// not at all, except the blocks `kept` names (freed nodes kept for reuse,
    /// `ReusableNodes`): an item partly kept is replaced by items of the same generation
    /// for its kept parts. Returns what was deleted, oldest generation first.
    @discardableResult
    func removePendingFrees(from first: UInt64 = 0, through generation: UInt64, keeping kept: BlockRanges) throws(FSError)
        -> [(generation: UInt64, blocks: Range<UInt64>)] {
        var removals: [(generation: UInt64, blocks: Range<UInt64>)] = [], additions = removals, removed = removals
        for item in try pendingFrees(from: first, through: generation) {
            guard kept.overlaps(item.blocks) else {
                removals.append(item)
                removed.append(item)
                continue
            }
            let gone = kept.complement(within: item.blocks)
            guard !gone.isEmpty else { continue }
            removals.append(item)
            additions += kept.restricted(to: item.blocks).ranges.map { (item.generation, $0) }
            removed += gone.ranges.map { (item.generation, $0) }
        }
        try replacePendingFrees(removing: removals, adding: additions)
        for item in removed { touch(item.blocks, wasFree: false) }
        return removed
    }

    /// Deletes the pending frees of `blocks`, each named with the generation that freed it
    /// (freed nodes a commit reuses as nodes: `BlockSpace`'s reusable nodes); an item that
    /// holds other blocks too is replaced by items of the same generation for the rest.
    /// Refuses a block no pending free of its generation names, changing nothing.
    func removePendingBlocks(_ blocks: [(generation: UInt64, block: UInt64)]) throws(FSError) {
        var wanted: [UInt64: BlockRanges] = [:]
        for entry in blocks { wanted[entry.generation, default: BlockRanges()].insert(contentsOf: entry.block..<entry.block + 1) }
        var removals: [(generation: UInt64, blocks: Range<UInt64>)] = [], additions = removals, removed = removals
        for (generation, blocks) in wanted.sorted(by: { $0.key < $1.key }) {
            var found = BlockRanges()
            for item in try pendingFrees(from: generation, through: generation) where blocks.overlaps(item.blocks) {
                let inside = blocks.restricted(to: item.blocks)
                found.formUnion(inside)
                removals.append(item)
                additions += inside.complement(within: item.blocks).ranges.map { (generation, $0) }
                removed += inside.ranges.map { (generation, $0) }
            }
            guard found == blocks else {
                var missing = blocks
                missing.subtract(found)
                throw .damagedImage("block tree: blocks \(missing.ranges) are not pending frees of generation \(generation)")
            }
        }
        try replacePendingFrees(removing: removals, adding: additions)
        for item in removed { touch(item.blocks, wasFree: false) }
    }

    /// Deletes the pending-free items `removals` and adds `additions` (which may reuse a
    /// deleted item's key), together or not at all, and keeps the coverage in step.
    private func replacePendingFrees(removing removals: [(generation: UInt64, blocks: Range<UInt64>)],
                                     adding additions: [(generation: UInt64, blocks: Range<UInt64>)]) throws(FSError) {
        guard !removals.isEmpty || !additions.isEmpty else { return }
        let coverage = try pendingCoverage()
        func key(_ item: (generation: UInt64, blocks: Range<UInt64>)) -> TreeKey {
            TreeKey(object: Self.pendingFreeBase + item.generation, kind: Self.pendingFreeKind, offset: item.blocks.lowerBound)
        }
        try changeTogether(removals.count + additions.count) { () throws(FSError) in
            for item in removals { _ = try tree.remove(key(item)) }
            for item in additions {
                var w = ByteWriter(capacity: 8)
                w.u64(UInt64(item.blocks.count))
                try tree.upsert(key(item), w.bytes)
            }
        }
        for item in removals {
            guard coverage.remove(item.blocks) else {
                throw .damagedImage("block tree: pending free \(item.blocks) of generation \(item.generation) is not in the pending frees read before")
            }
        }
        for item in additions { coverage.add(item.blocks) }
    }

    /// Runs `count` tree changes as one: every block they may need is taken before the
    /// first (so running out of space changes nothing: a change that ran out half-way
    /// would leave runs removed and not replaced, blocks looking free), and anything else
    /// failing half-way fails the tree (`groupedChange`), so no commit keeps half of them;
    /// the caller abandons them.
    func changeTogether(_ count: Int, _ body: () throws(FSError) -> Void) throws(FSError) {
        guard count > 0 else { return }
        if reservesBlocksPerChange { try tree.reserveSpares(count * (tree.sparesForOneChange + 2)) }
        try tree.groupedChange(body)
    }

    // MARK: - Changing runs

    private func adjust(_ blocks: Range<UInt64>, by change: Int64) throws(FSError) -> [Range<UInt64>] {
        guard !blocks.isEmpty else { return [] }
        let covering = try runs(overlapping: blocks)
        var cursor = blocks.lowerBound
        for run in covering {
            guard run.blocks.lowerBound <= cursor else { break }
            cursor = run.blocks.upperBound
        }
        guard cursor >= blocks.upperBound else {
            throw .invalidArgument("blocks \(blocks) are not all allocated (a gap at \(cursor))")
        }
        var replacement: [BlockRun] = []
        var freed: [Range<UInt64>] = []
        for run in covering {
            let inside = max(run.blocks.lowerBound, blocks.lowerBound)..<min(run.blocks.upperBound, blocks.upperBound)
            if run.blocks.lowerBound < inside.lowerBound {
                replacement.append(BlockRun(blocks: run.blocks.lowerBound..<inside.lowerBound, count: run.count, use: run.use))
            }
            let count = Int64(run.count) + change
            guard count >= 0, count <= Int64(UInt32.max) else {
                throw .invalidArgument("a reference count of \(count) for blocks \(inside)")
            }
            if count == 0 {
                if let last = freed.last, last.upperBound == inside.lowerBound {
                    freed[freed.count - 1] = last.lowerBound..<inside.upperBound
                } else {
                    freed.append(inside)
                }
            } else {
                replacement.append(BlockRun(blocks: inside, count: UInt32(count), use: run.use))
            }
            if inside.upperBound < run.blocks.upperBound {
                replacement.append(BlockRun(blocks: inside.upperBound..<run.blocks.upperBound, count: run.count, use: run.use))
            }
        }
        let span = covering.first!.blocks.lowerBound..<covering.last!.blocks.upperBound
        try rewrite(span, with: replacement)
        return freed
    }

    /// Replaces the runs inside `span` (which must start and end at run boundaries or in
    /// free space) by `replacement` (sorted, inside `span`), coalescing with each other and
    /// with the runs just outside `span`.
    private func rewrite(_ span: Range<UInt64>, with replacement: [BlockRun]) throws(FSError) {
        let lowerNeighbour = span.lowerBound > 0 ? try runs(overlapping: span.lowerBound - 1..<span.lowerBound).first : nil
        let upperNeighbour = span.upperBound < UInt64.max ? try runs(overlapping: span.upperBound..<span.upperBound + 1).first : nil
        var old = try runs(overlapping: span)
        var merged: [BlockRun] = []
        if let lowerNeighbour, lowerNeighbour.blocks.upperBound == span.lowerBound {
            merged.append(lowerNeighbour)
            old.insert(lowerNeighbour, at: 0)
        }
        for run in replacement {
            if let last = merged.last, last.continues(into: run) {
                merged[merged.count - 1].blocks = last.blocks.lowerBound..<run.blocks.upperBound
            } else {
                merged.append(run)
            }
        }
        if let upperNeighbour, upperNeighbour.blocks.lowerBound == span.upperBound {
            old.append(upperNeighbour)
            if let last = merged.last, last.continues(into: upperNeighbour) {
                merged[merged.count - 1].blocks = last.blocks.lowerBound..<upperNeighbour.blocks.upperBound
            } else {
                merged.append(upperNeighbour)
            }
        }
        let kept = Set(merged), before = Set(old)
        let rewrittenKeys = Set(merged.filter { !before.contains($0) }.map(\.key))
        let removals = old.filter { !kept.contains($0) && !rewrittenKeys.contains($0.key) }
        let upserts = merged.filter { !before.contains($0) }
        try changeTogether(removals.count + upserts.count) { () throws(FSError) in
            for run in removals {
                let removed = try tree.remove(run.key)
                assert(removed, "run \(run) was read but is not in the tree")
            }
            for run in upserts {
                try tree.upsert(run.key, run.encoded())
            }
        }
    }
}
