/// fsck's check of a format 2 image (docs/ARCHITECTURE.md, "Checking format 2"): read
/// only, in memory bounded by a budget, not by the tree.
///
/// What it checks, at the current commit slot:
/// 1. both trees, node by node (`CopyOnWriteTree.check`: checksums, levels, key ranges,
///    no node reached twice);
/// 2. the filesystem tree's items, one object at a time in key order
///    (`VolumeCheck+Items.swift`): every item decodes and belongs to an inode that has
///    its inode item; link counts match the back references (directories: 2 and one per
///    subdirectory); every name has its index item, every index item its name and the
///    child's back reference, every back reference its index item; extents in order,
///    inside the file's size and the image; symlink targets; orphans;
/// 3. the block references (`VolumeCheck+References.swift`), a batch of block groups at a
///    time: what the extents, both trees' nodes and the journal chain the slot names use,
///    counted per block, against the block tree's runs, pending frees and group summaries;
/// 4. the journal frames after the slot decode.
///
/// Memory: one object's counters, the random reads' nodes, one batch's per-block counts
/// (`budgetBytes`, 5 bytes a block), and the tree walk's set of visited nodes (8 bytes a
/// node, about 1/500 of the tree). Time: one pass over the items, one lookup per name and
/// per link, and one pass over the extents and nodes per batch.
public struct VolumeCheck {
    public struct Report: Sendable {
        /// What is wrong, one line each (at most `problemLimit`; `problemCount` counts all).
        public var problems: [String] = []
        public var problemCount = 0
        public var inodes = 0, directories = 0, names = 0, extents = 0, orphans = 0
        public var filesystemNodes = 0, blockTreeNodes = 0
        public var journalFrames = 0
        /// The commit checked, and the journal frames after it that a mount replays (the
        /// operations answered after that commit: what a kill or a crash left to replay).
        public var generation: UInt64 = 0
        public var framesToReplay = 0
        /// Whether the counts and problems are of the tree the journal's replay leaves
        /// (`runReplaying`), and if not, why.
        public var replay: Replay = .nothingToReplay
        /// Passes over the extents and nodes the reference census took (one per batch).
        public var referencePasses = 0
        /// Scans of all of an inode's back references (`FileSystemTree.links(of:)`): one
        /// an inode, not one a link (a file of 10,000 links took 28.7 s when it was).
        public var linkScans = 0
        public var isClean: Bool { problemCount == 0 }

        mutating func add(_ problem: String) {
            problemCount += 1
            if problems.count < VolumeCheck.problemLimit { problems.append(problem) }
        }
    }

    /// What `runReplaying` made of the journal frames after the commit checked.
    public enum Replay: Sendable, Equatable {
        /// None follow it (or the check was of the commit only, `run`).
        case nothingToReplay
        /// They were replayed into memory, as the next mount replays them, and the tree
        /// that leaves was checked: the report is that tree's.
        case checked
        /// They were not replayed (the reason): the report is the commit's.
        case notChecked(String)
        /// Their replay failed, as the next mount's would: one of the report's problems.
        /// `replayable`: how many of the first frames replay (`longestReplay`), what repair
        /// keeps; nil when the commit does not open even with none.
        case failed(replayable: Int?)
    }

    public static let problemLimit = 1000
    /// Nodes the lookups keep between reads (4 KiB each; 8 MiB in all, whatever the
    /// tree's size). Without them every lookup read each level of its path again, even
    /// the root.
    static let lookupCachedLeaves = 1024
    static let lookupCachedInteriorNodes = 1024
    /// Reports the phase, and how far it got of how much.
    public typealias Progress = (_ phase: String, _ done: UInt64, _ total: UInt64) -> Void

    let storage: any ImageStorage
    let slot: CommitSlot
    let space: BlockSpace
    let filesystem: FileSystemTree
    /// The same tree at the same root for the lookups made while `filesystem` is scanned
    /// (a tree reads nodes into buffers of its own, one a level, which a nested read on
    /// the scanned tree would overwrite under the scan).
    let lookups: FileSystemTree
    let budgetBytes: Int
    let progress: Progress?
    var report = Report()
    /// The journal chain the slot names: its segments (the census counts them).
    var journalSegments: [LogSegment] = []
    /// The highest inode number with an inode item (checked against the slot's next one).
    var highestInode: UInt64 = 0
    /// False when the journal may hold frames of generations after the one following
    /// the slot (the previous commit's chain, read on into the current one's).
    var laterFramesAreProblems = true

    /// Checks the image on `storage` at its current commit. Throws only when there is
    /// nothing to check (`CommitSlots.read`: no commit slot, or a format 1 superblock
    /// left, an image not yet upgraded); every other fault, a tree whose root does not
    /// read included, is a line of the report.
    /// `chosen`: the commit to check, the current one when nil. Repair checks the
    /// previous one, whose journal chain goes on into the current commit's: frames of
    /// later generations are expected there (`laterFrames: false` passes over them).
    public static func run(_ storage: any ImageStorage, at chosen: CommitSlot? = nil, laterFrames: Bool = true,
                           budgetBytes: Int = 64 << 20, progress: Progress? = nil) throws(FSError) -> Report {
        let slot: CommitSlot
        if let chosen { slot = chosen } else { slot = try CommitSlots.read(storage).current }
        var report = Report()
        // As `TreeVolume` refuses it (and a capacity past the file would make the census
        // pass over blocks that are not there, in as many batches as it says).
        do {
            try TreeVolume.checkCapacity(of: slot, in: storage)
        } catch {
            if case .damagedImage(let why) = error { report.add(why) } else { report.add("\(error)") }
            return report
        }
        let space: BlockSpace
        do {
            space = try blockSpace(storage, slot)
        } catch {
            report.add("block tree: its root does not read: \(error)")
            return report
        }
        let tree: FileSystemTree, second: FileSystemTree
        do {
            tree = try filesystemTree(space, slot)
            second = try filesystemTree(space, slot)
            second.tree.cacheNodes(in: NodeReadCache(leafCapacity: lookupCachedLeaves, interiorCapacity: lookupCachedInteriorNodes,
                                                     shardCount: 1))
        } catch {
            report.add("filesystem tree: its root does not read: \(error)")
            return report
        }
        var check = VolumeCheck(storage: storage, slot: slot, space: space, filesystem: tree, lookups: second,
                                budgetBytes: max(budgetBytes, 5), progress: progress)
        check.laterFramesAreProblems = laterFrames
        // The item scan and the census walk the trees again without a set of visited
        // nodes: only trees that checked (a hostile node pointing at one subtree from all
        // its entries would have them visit it over and over).
        let treesHold = check.checkTrees()
        check.checkJournal()
        if treesHold {
            check.checkItems()
            check.checkReferences()
        }
        check.report.linkScans = tree.linkScans + second.linkScans
        return check.report
    }

    /// The block space of `slot`'s commit, read-only (its capacity checked by the caller).
    static func blockSpace(_ storage: any ImageStorage, _ slot: CommitSlot) throws(FSError) -> BlockSpace {
        try BlockSpace(io: ImageStoragePageIO(storage: storage), imageID: slot.imageID, blockTreeID: TreeVolume.blockTreeID,
                       root: slot.blockTree, firstBlock: TreeVolume.firstSpaceBlock,
                       endBlock: slot.capacityBytes >> BackingStore.blockShift)
    }

    /// `slot`'s filesystem tree, read through `space`.
    static func filesystemTree(_ space: BlockSpace, _ slot: CommitSlot) throws(FSError) -> FileSystemTree {
        let tree = try CopyOnWriteTree(pages: space.pages(forTree: TreeVolume.filesystemTreeID), imageID: slot.imageID,
                                       treeID: TreeVolume.filesystemTreeID, root: slot.filesystemTree)
        return FileSystemTree(tree: tree, hashes: ItemHashes(siphash: slot.nameHashKey))
    }

    /// 1: the trees node by node; true when both hold together (the other checks walk
    /// them again).
    mutating func checkTrees() -> Bool {
        progress?("checking the trees", 0, 2)
        var hold = true
        do {
            report.filesystemNodes = try filesystem.tree.check().nodes
        } catch {
            report.add("filesystem tree: \(error)")
            hold = false
        }
        do {
            report.blockTreeNodes = try space.blockTree.tree.check().nodes
        } catch {
            report.add("block tree: \(error)")
            hold = false
        }
        return hold
    }

    /// 4: the journal chain the slot names, read to its end (a torn tail is its end);
    /// every frame must decode and be of a generation after the slot's, or the one it
    /// wrote.
    mutating func checkJournal() {
        let tail = Self.journalTail(storage, slot, laterFramesAreProblems: laterFramesAreProblems)
        report.journalFrames = tail.frames
        report.generation = slot.generation
        report.framesToReplay = tail.toReplay
        for problem in tail.problems { report.add(problem) }
        journalSegments = tail.segments
    }

    /// 4 on its own: the journal chain `slot` names, read frame by frame (nothing else of
    /// the image): how many frames it holds, how many a mount replays (the operations
    /// answered after the commit), and what is wrong with it.
    static func journalTail(_ storage: any ImageStorage, _ slot: CommitSlot, laterFramesAreProblems later: Bool = true)
        -> (frames: Int, toReplay: Int, problems: [String], segments: [LogSegment]) {
        var frames = 0, replayed = 0
        var problems: [String] = []
        let journal = SlotJournal(storage, slot) { frame, _ in
            frames += 1
            switch frame {
            case .success(let frame):
                if frame.generation > slot.generation && frame.generation <= slot.generation + TreeVolume.generationsPastTheSlot {
                    replayed += 1
                }
                if frame.generation > slot.generation + TreeVolume.generationsPastTheSlot, later {
                    problems.append("journal frame \(frames): generation \(frame.generation) after commit \(slot.generation)")
                }
                return true
            case .failure(let error):
                problems.append("journal frame \(frames): \(error)")
                return false
            }
        }
        return (frames, replayed, problems, journal.segments)
    }
}
