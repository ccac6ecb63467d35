import Synchronization

/// Format 2's block allocator on top of the persisted block tree (docs/ARCHITECTURE.md,
/// "Metadata at scale", step 3): it hands out blocks for file data and for tree nodes,
/// records the generation's reference changes, and applies them to the block tree at the
/// commit (`commit(generation:trees:)`, the fixed point).
///
/// The block tree's committed state is the truth: a block is free when no run holds it
/// and no pending free names it. In memory the allocator keeps only what the tree does
/// not say yet, all of it bounded by the changes of a generation or two, not by the
/// image:
/// - `takenBlocks`: blocks handed out since the last commit and not yet recorded as runs (data
///   allocations and tree nodes of this generation, the commit's node pool);
/// - `held`: blocks whose pending frees a commit deleted, free in the tree but reusable
///   only once that commit is durable (`commitIsDurable`);
/// - the free runs of a few groups (`LoadedBlockGroups`), loaded from the tree (the
///   complement of the group's runs and pending frees, minus `takenBlocks` and `held`) when an
///   allocation goes there, and dropped when others are needed. Groups are chosen by
///   their summaries (`BlockGroupSummary`), read in key order only as far as a group that
///   can serve the request.
/// Opening reads the block tree's root and nothing else.
///
/// The reuse rule: a block released in generation g stays in its run until commit g,
/// which turns it into a pending free of g (still used); commit g' > g deletes the
/// pending free once commit g is durable (the caller punched its data blocks meanwhile),
/// and the block is handed out again only after commit g' is durable. So a block is
/// never reused while a durable root, or the previous commit kept for repair, can
/// reference it. Readers of older roots (reader epochs) are the caller's: it calls
/// `commitIsDurable` only when none is older than that commit. Freed tree nodes may
/// instead stay pending, unpunched, and become nodes again under the same rule
/// (`ReusableNodes`, when `reusesFreedNodes`).
///
/// Not thread-safe: one owner (later: per-group locks, "Locks on the request path").
public final class BlockSpace {
    public let blockTree: BlockReferenceTree
    /// The block tree's node store: it takes blocks only from the pool a commit reserves.
    let blockTreePages: BlockTreePoolPages
    let io: any TreePageIO
    /// Blocks `firstBlock..<endBlock` may be handed out (the image's header lies below).
    public let firstBlock: UInt64
    public let endBlock: UInt64
    let loaded: LoadedBlockGroups
    /// Kept as `BlockRanges`, not a `RangeSet`: every block a file or a commit takes goes
    /// in here, and `RangeSet`'s generic code, not specialised across the module boundary,
    /// looked up metadata at each call (1.5% of the daemon's samples under `tar -x` and
    /// `cp -a` of /usr/include, in `take` and `finish`).
    var takenBlocks = BlockRanges()
    /// `takenBlocks` as a `RangeSet`, for checks (tests).
    var taken: RangeSet<UInt64> { takenBlocks.rangeSet }
    /// Blocks freed for good by a commit, by that commit's generation, until it is durable.
    var held: [(generation: UInt64, blocks: [Range<UInt64>])] = []
    /// The open generation's reference changes, in order.
    public internal(set) var changes: [BlockReferenceChange] = []
    /// The last generation committed, and the last one the caller said is durable.
    public internal(set) var committedGeneration: UInt64 {
        didSet { settledMirror.store(committedGeneration, ordering: .relaxed) }
    }
    /// `committedGeneration` for callers without the space lock (`TreeVolume.admit`): a
    /// commit's generation from the moment its block space settled (its nodes taken),
    /// before the slot is published.
    public var settledGeneration: UInt64 { settledMirror.load(ordering: .relaxed) }
    private let settledMirror = Atomic<UInt64>(0)
    public internal(set) var durableGeneration: UInt64
    /// Where the last allocation was served: the next one starts there (locality).
    var currentGroup: UInt64
    /// The metadata reserve: blocks taken out of the free space (in `takenBlocks`, recorded
    /// nowhere) that file data never gets (`BlockSpace+Reserve.swift`).
    var reserve = RangeSet<UInt64>() {
        didSet {
            reserveCount = reserve.ranges.reduce(0) { $0 + UInt64($1.count) }
            noteRoom()
        }
    }
    /// The reserve's blocks (`reserveBlocks`), counted when it changes.
    private(set) var reserveCount: UInt64 = 0
    /// How many blocks the reserve is refilled to (`setReserveTarget`).
    public internal(set) var reserveTarget: UInt64 = 0
    /// Gives blocks from the free space disk space before anyone writes them (fallocate:
    /// a full disk under the image is then `.noSpace` here, not a failed write in a commit
    /// or a fault through the mapping). Set by `TreeVolume`; nil: nothing to do.
    public var prepareBlocks: ((Range<UInt64>) throws(FSError) -> Void)?
    /// Gives the disk space of prepared blocks that were never written back (punch),
    /// where they go back unused; failures are left alone (a hole is only an economy).
    public var unprepareBlocks: ((Range<UInt64>) -> Void)?

    /// Makes the free blocks of a group read as zeros before any of them is handed out:
    /// called with the group's free runs the first time the group is loaded, once
    /// `TreeVolume.open` has claimed what replay found in use (a crashed mount may have
    /// left bytes in blocks the block tree holds free, which a file's fresh block would
    /// show after a power cut that kept its frame but not its bytes: docs/ARCHITECTURE.md,
    /// "The free space scrubbed where allocations go"). Returns the runs it punched: they
    /// are held, as retired blocks are, until a commit after the punch is durable (its
    /// sync makes the punch durable), so no sync runs here, under the caller's lock.
    /// A scrub that throws leaves the group unscrubbed and the load failed. Nil: nothing
    /// to do (tools, repair, which punches the free space itself).
    public var scrubFreeRuns: (([Range<UInt64>]) throws(FSError) -> [Range<UInt64>])? {
        didSet {
            // Every group loads (and is scrubbed) afresh: a group's free runs in memory are
            // what a load computes from the tree, `takenBlocks` and `held`.
            loaded.removeAll()
            scrubbedGroups.removeAll()
        }
    }
    /// The groups `scrubFreeRuns` has made read as zeros (their free runs stay so: what this
    /// volume frees is punched before it is free again).
    private(set) var scrubbedGroups = Set<UInt64>()

    /// `unprepareBlocks` of `blocks`, when there are any.
    func unprepare(_ blocks: Range<UInt64>) {
        if !blocks.isEmpty { unprepareBlocks?(blocks) }
    }
    /// Free blocks, kept without reading the group summaries: counted once
    /// (`refreshFreeEstimate`, when files first need it), then less every take, plus every
    /// give-back and every block a durable commit hands out again (`commitIsDurable`).
    /// What data can still get, for admitting RAM-held bytes
    /// (`VolumeFileBlocks.admitsMemoryPiece`); commits assert it equals `freeBlockCount`.
    public internal(set) var freeEstimate: UInt64 = 0 {
        didSet { noteRoom() }
    }
    /// Free blocks promised to RAM pieces the next commit places (`VolumeFileBlocks`
    /// keeps it, under the space lock).
    var promisedBlocks: UInt64 = 0 {
        didSet { noteRoom() }
    }
    /// Blocks the disk under the image can still give it (`TreeVolume.refreshHostRoom`,
    /// from `ImageStorage.hostAvailableBytes`; `UInt64.max` where there is no such limit).
    /// A free block of the image takes disk space once written, so where the disk is
    /// smaller than the free space, the disk is what the room is.
    public internal(set) var hostFreeBlocks: UInt64 = .max {
        didSet { noteRoom() }
    }
    /// Sets `hostFreeBlocks` from `ImageStorage.hostAvailableBytes` (nil: no limit).
    func noteHostRoom(availableBytes: UInt64?) {
        hostFreeBlocks = availableBytes.map { $0 >> BackingStore.blockShift } ?? .max
    }
    /// The free blocks that can be written: the free estimate, or fewer where the disk
    /// has fewer left (`hostFreeBlocks`). What data, RAM pieces and commits are admitted
    /// against.
    public var usableFree: UInt64 { min(freeEstimate, hostFreeBlocks) }
    /// What commits can still take: the free estimate and the reserve, less the blocks
    /// promised to RAM pieces, mirrored for callers without the space lock
    /// (`TreeVolume.admit`, at every operation that grows the tree); `UInt64.max` until the
    /// estimate is kept (`refreshFreeEstimate`: a volume used without files, as tools and
    /// some tests use it, admits every operation as before).
    public var metadataRoom: UInt64 { roomMirror.load(ordering: .relaxed) }
    private let roomMirror = Atomic<UInt64>(.max)
    private var roomKept = false
    /// Set while a change of the reserve moves blocks between it and the free space
    /// (`withRoomNotedOnce`): the mirror then skips the step between, where the room
    /// looked a reserve's worth short.
    private var roomNotesHeld = false

    /// Runs `body`, publishing the room once at its end.
    func withRoomNotedOnce<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        roomNotesHeld = true
        defer {
            roomNotesHeld = false
            noteRoom()
        }
        return try body()
    }

    private func noteRoom() {
        guard roomKept, !roomNotesHeld else { return }
        let room = usableFree + reserveCount
        roomMirror.store(room - min(room, promisedBlocks), ordering: .relaxed)
    }
    /// What metadata allocations may take of the reserve now: a quarter of it between
    /// commits (journal segments), all of it during a commit (`TreeVolume` sets it).
    public var reserveAccess = ReserveAccess.journal
    /// Whether the nodes the trees free are kept, unpunched, for later commits' nodes
    /// (`ReusableNodes`). Only a caller that punches pending frees itself and reopens
    /// with a punch of every pending free may turn it on (`TreeVolume` does).
    public var reusesFreedNodes = false
    /// The freed nodes kept (when `reusesFreedNodes`), and the bound on how many wait
    /// after a commit (nil: `reusableNodeBound(written:)`; tests set a small one).
    var reusableNodes = ReusableNodes()
    var reusableNodeLimit: Int?

    /// Opens the block space of the block tree at `root` (nil: an empty tree), a root
    /// that is durable (it was read from a commit slot). `durableGeneration` is the last
    /// generation whose pending frees the next commit may retire (nil: the root's): a
    /// caller that punches pending frees only after a later commit passes less.
    public init(io: any TreePageIO, imageID: UInt64, blockTreeID: UInt32, root: CopyOnWriteTree.Root?,
                firstBlock: UInt64, endBlock: UInt64,
                blocksPerGroup: UInt64 = BlockGroupSummary.formatBlocksPerGroup,
                maximumLoadedGroups: Int = 16, durableGeneration: UInt64? = nil) throws(FSError) {
        precondition(firstBlock < endBlock && endBlock <= BlockReferenceTree.pendingFreeBase)
        self.io = io
        self.firstBlock = firstBlock
        self.endBlock = endBlock
        blockTreePages = BlockTreePoolPages(io: io, blocks: firstBlock..<endBlock)
        blockTree = BlockReferenceTree(tree: try CopyOnWriteTree(pages: blockTreePages, imageID: imageID, treeID: blockTreeID, root: root),
                                       blocksPerGroup: blocksPerGroup)
        blockTree.blockLimit = endBlock
        loaded = LoadedBlockGroups(capacity: maximumLoadedGroups)
        committedGeneration = root?.generation ?? 0
        settledMirror.store(committedGeneration, ordering: .relaxed)
        self.durableGeneration = min(committedGeneration, durableGeneration ?? committedGeneration)
        currentGroup = firstBlock / blocksPerGroup
    }

    public var blocksPerGroup: UInt64 { blockTree.blocksPerGroup }
    /// Groups read from the block tree so far (each load reads that group's runs).
    public var groupLoads: Int { loaded.loads }
    public var loadedGroupCount: Int { loaded.count }
    /// Blocks handed out and not yet recorded in the block tree.
    public var unrecordedBlocks: UInt64 { takenBlocks.ranges.reduce(0) { $0 + UInt64($1.count) } }

    // MARK: - Data

    /// Hands out at least `minimum` and at most `wanted` contiguous free blocks for file
    /// data (one reference each, recorded for the commit): a run of `wanted` where one
    /// exists (at most a group), else a run of at least `minimum` (`take`). `.noSpace`
    /// when no such run is free.
    public func allocateData(upTo wanted: UInt64, minimum: UInt64 = 1, use: BlockRun.Use = .data,
                             reserve access: ReserveAccess? = nil) throws(FSError) -> Range<UInt64> {
        precondition(use == .data || use == .journal, "tree nodes come through pages(forTree:)")
        let blocks = try take(wanted, minimum: minimum, reserve: access)
        changes.append(.allocate(blocks, use))
        return blocks
    }

    /// Takes at least one and at most `wanted` free blocks for file data without recording
    /// them: a file's write path takes them, and the commit whose extents first reference
    /// them records their allocation (`recordData`). Until then they are neither free nor
    /// in the block tree, so a crash leaves them free (`VolumeFileBlocks`).
    public func takeData(upTo wanted: UInt64) throws(FSError) -> Range<UInt64> {
        try take(wanted, reserve: ReserveAccess.none, prepare: false)
    }

    /// Records blocks taken by `takeData` as allocated for data, one reference each (the
    /// reference of the extents that first name them), at the next commit.
    public func recordData(_ blocks: Range<UInt64>) {
        guard !blocks.isEmpty else { return }
        assert(takenBlocks.containsAll(blocks), "recording blocks \(blocks) that were not taken")
        changes.append(.allocate(blocks, .data))
    }

    /// Records blocks taken by `take` as a journal segment, one reference each, at the next
    /// commit: a spare segment the journal's chain links (`TreeVolumeLogSpace`).
    func recordJournal(_ blocks: Range<UInt64>) {
        guard !blocks.isEmpty else { return }
        assert(takenBlocks.containsAll(blocks), "recording journal blocks \(blocks) that were not taken")
        changes.append(.allocate(blocks, .journal))
    }

    /// Blocks that may still be handed out: free in the committed block tree (its group
    /// summaries) and neither taken nor held in memory. Reads every group summary.
    public func freeBlockCount() throws(FSError) -> UInt64 {
        let stored = try blockTree.storedGroupSummaries()
        var free: UInt64 = 0
        for group in firstBlock / blocksPerGroup...(endBlock - 1) / blocksPerGroup {
            let blocks = blockTree.blocks(of: group).clamped(to: firstBlock..<endBlock)
            // A summary counts the blocks outside the space as free: they are not.
            let outside = blocksPerGroup - UInt64(blocks.count)
            let counted = stored[group].map { UInt64($0.freeBlocks) } ?? blocksPerGroup
            free += counted - min(counted, outside)
        }
        var unavailable = takenBlocks
        for entry in held { for blocks in entry.blocks { unavailable.insert(contentsOf: blocks) } }
        let withheld = unavailable.ranges.reduce(UInt64(0)) { $0 + UInt64($1.count) }
        return free - min(free, withheld)
    }

    /// Sets `freeEstimate` to the free blocks now (`freeBlockCount`: every group summary).
    public func refreshFreeEstimate() throws(FSError) {
        let free = try freeBlockCount()
        roomKept = true
        freeEstimate = free
    }

    /// Adds a reference to blocks in use (recorded; checked against the tree at the commit).
    public func retain(_ blocks: Range<UInt64>) {
        guard !blocks.isEmpty else { return }
        changes.append(.retain(blocks))
    }

    /// Drops a reference from blocks in use (recorded; checked at the commit). A block
    /// left with none becomes a pending free of the commit, not free.
    public func release(_ blocks: Range<UInt64>) {
        guard !blocks.isEmpty else { return }
        changes.append(.release(blocks))
    }

    /// A block for a tree node (`BlockSpacePages`): a kept freed node whose pending free
    /// no root the caller keeps uses, else one from the free space.
    func takeNode() throws(FSError) -> UInt64 {
        // Written over before this commit is durable: the pending free must be of a
        // generation neither the durable root nor the commit before it uses (retirement's
        // rule: a block retired by commit g' is handed out after g' is durable).
        let through = min(durableGeneration, max(committedGeneration, 1) - 1)
        if reusesFreedNodes, let block = reusableNodes.take(through: through) { return block }
        return try take(1).lowerBound
    }

    /// Gives back a node block `takeNode` handed out and its tree never wrote.
    func giveBackNode(_ block: UInt64) {
        if !reusableNodes.giveBack(block) { giveBack(block..<block + 1) }
    }

    /// Freed nodes kept for reuse and not yet reused (tests, reports).
    public var reusableNodeCount: Int { reusableNodes.count }

    /// The store for the nodes of tree `treeID`, allocating here.
    public func pages(forTree treeID: UInt32) -> BlockSpacePages { BlockSpacePages(space: self, treeID: treeID) }

    // MARK: - Taking and giving back

    /// Takes at least `minimum` (at most a group) and at most `wanted` contiguous free
    /// blocks out of the free space, without recording them anywhere (the caller records
    /// them, or gives them back): a run of `wanted` where a group has one, else the front
    /// of a run of at least `minimum` in the first group that has one, its longest class
    /// first (`FreeSpaceMap.takeFront`). (With no minimum
    /// passed down, a journal segment that needed more than the first group's longest run
    /// was refused while another group had one: the spares of large frames, "Shared
    /// locks off the request path".)
    /// When the free space has none, metadata (`access`, else `reserveAccess`) may take
    /// from the metadata reserve (`BlockSpace+Reserve.swift`); file data passes `.none`.
    /// Blocks from the free space get disk space first (`prepareBlocks`) unless `prepare`
    /// is false (file data, which its store reserves itself); when the disk under the
    /// image has none, they go back and the reserve (prepared when it was filled) serves.
    func take(_ wanted: UInt64, minimum: UInt64 = 1, reserve access: ReserveAccess? = nil,
              prepare: Bool = true) throws(FSError) -> Range<UInt64> {
        precondition(wanted > 0 && minimum > 0 && minimum <= wanted)
        let fitting = min(wanted, blocksPerGroup), least = min(minimum, fitting)
        // The group of the last allocation serves first while it is loaded and can: its
        // free runs are in memory, and asking the summaries is a descent of the block
        // tree (every node a commit's trees write comes through here).
        var blocks = loaded.free(currentGroup)?.take(count: fitting)
        if blocks == nil { blocks = try takeSomewhere(fitting, atLeast: fitting) }
        if blocks == nil, least < fitting {
            // The current group's runs in memory first: they may be longer than its stored
            // summary says (blocks freed since the last commit).
            blocks = loaded.free(currentGroup)?.takeFront(ofRunOfAtLeast: least, upTo: fitting)
            if blocks == nil { blocks = try takeSomewhere(fitting, atLeast: least) }
        }
        if let found = blocks, prepare, let prepareBlocks {
            do {
                try prepareBlocks(found)
            } catch .noSpace {
                makeFree(found)
                blocks = nil
            } catch {
                // Free again, as they were: kept out of the group's runs in memory, they
                // were lost to allocations until the group was loaded again, while the
                // free estimate still counted them (the defect hunt of the thirty-fourth
                // session).
                makeFree(found)
                throw error
            }
        }
        if blocks == nil, let reserved = takeFromReserve(fitting, atLeast: least, access ?? reserveAccess) { return reserved }
        guard let blocks else { throw .noSpace }
        takenBlocks.insert(contentsOf: blocks)
        freeEstimate -= min(freeEstimate, UInt64(blocks.count))
        return blocks
    }

    /// Gives back blocks taken and never recorded: free again at once.
    func giveBack(_ blocks: Range<UInt64>) {
        guard !blocks.isEmpty else { return }
        assert(takenBlocks.containsAll(blocks), "giving back blocks \(blocks) that were not taken")
        takenBlocks.remove(contentsOf: blocks)
        freeEstimate += UInt64(blocks.count)
        makeFree(blocks)
    }

    /// Blocks that became free in memory: into the loaded groups that hold them (others
    /// read them from the tree when loaded).
    func makeFree(_ blocks: Range<UInt64>) {
        var start = blocks.lowerBound
        while start < blocks.upperBound {
            let group = start / blocksPerGroup
            let end = min(blocks.upperBound, (group + 1) * blocksPerGroup)
            loaded.free(group)?.insert(start..<end)
            start = end
        }
    }

    /// The groups from the current one up, then from the first one, each tried where its
    /// stored summary allows a run of `least` blocks: `count` blocks from it when `least`
    /// is `count`, else the front of a run that holds `least`, up to `count`
    /// (`FreeSpaceMap.takeFront`: its largest class's first run). The summaries are the
    /// last commit's: a group's runs in memory may be shorter (blocks taken since), and
    /// longer (blocks freed since, which this search does not see but in the current
    /// group, tried before it).
    private func takeSomewhere(_ count: UInt64, atLeast least: UInt64) throws(FSError) -> Range<UInt64>? {
        let lastGroup = (endBlock - 1) / blocksPerGroup, firstGroup = firstBlock / blocksPerGroup
        var spans = [(from: currentGroup, through: lastGroup)]
        if currentGroup > firstGroup { spans.append((firstGroup, currentGroup - 1)) }
        for (from, through) in spans {
            var group = from
            while group <= through,
                  let candidate = try blockTree.firstGroup(from: group, through: through, withRunOf: least) {
                let free = try freeRuns(of: candidate)
                if let blocks = least == count ? free.take(count: count)
                                               : free.takeFront(ofRunOfAtLeast: least, upTo: count) {
                    currentGroup = candidate
                    return blocks
                }
                group = candidate + 1
            }
        }
        return nil
    }

    /// The free runs of `group` in memory, loaded from the tree when not loaded.
    func freeRuns(of group: UInt64) throws(FSError) -> FreeSpaceMap {
        if let free = loaded.free(group) { return free }
        let blocks = max(firstBlock, group * blocksPerGroup)..<min(endBlock, (group + 1) * blocksPerGroup)
        var available = RangeSet(try blockTree.freeRanges(in: blocks))
        for range in takenBlocks.restricted(to: blocks).ranges { available.remove(contentsOf: range) }
        for entry in held { available.subtract(RangeSet(entry.blocks)) }
        if let scrubFreeRuns, !scrubbedGroups.contains(group) {
            let punched = try scrubFreeRuns(available.ranges.map { $0 })
            scrubbedGroups.insert(group)
            if !punched.isEmpty {
                assert(punched.allSatisfy { run in available.ranges.contains { $0.lowerBound <= run.lowerBound && run.upperBound <= $0.upperBound } },
                       "the scrub punched blocks that are not free")
                available.subtract(RangeSet(punched))
                // Until the next commit is durable: its sync comes after the punch (a commit
                // settling now, whose pool this load may serve, syncs after it settles,
                // and `committedGeneration` moves only when it has).
                held.append((committedGeneration + 1, punched))
                freeEstimate -= min(freeEstimate, punched.reduce(0) { $0 + UInt64($1.count) })
            }
        }
        let free = FreeSpaceMap()
        for range in available.ranges { free.insert(range) }
        loaded.add(group, free)
        return free
    }

    /// Tells that the commit of `generation` (and every one before it) is durable and no
    /// reader of an older root remains: the blocks those commits freed for good may be
    /// handed out, and the next commit may delete the pending frees they recorded (the
    /// caller punched the data blocks among them after they became durable).
    public func commitIsDurable(generation: UInt64) {
        precondition(generation <= committedGeneration, "generation \(generation) was not committed")
        durableGeneration = max(durableGeneration, generation)
        let (done, waiting) = (held.filter { $0.generation <= generation }, held.filter { $0.generation > generation })
        held = waiting
        for entry in done {
            for blocks in entry.blocks {
                makeFree(blocks)
                freeEstimate += UInt64(blocks.count)
            }
        }
    }
}
