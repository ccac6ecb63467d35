/// `offloadfs fsck --repair` of a format 2 image (docs/ARCHITECTURE.md, "Repairing format
/// 2"): both trees rebuilt from what the image still holds, written into blocks the old
/// commit does not use, and made the image's by one commit slot.
///
/// 1. The check (`VolumeCheck`); a clean image is left as it is.
/// 2. The old commit read (`OldCommit`, `TreeSalvage`): every block it uses (both trees'
///    nodes, the block tree's runs and pending frees, the extents, the journal chain),
///    and the trees' damaged nodes. When a node does not read and the previous commit
///    (kept until this one's successor is durable) checks clean, the image goes back to
///    it with the journal since it replayed (`fallBack`): that loses nothing the journal
///    holds. Otherwise, or when that does not check clean, the current commit is rebuilt.
/// 3. A new volume over the same image with empty trees claims every block the old
///    commit uses, so nothing is written over it: a crash before the slot leaves the
///    image at its old commit.
/// 4. The filesystem tree is bulk-loaded from the readable items in key order
///    (`CopyOnWriteTree.bulkLoad`), its names made to agree (`NameRepair`), then its link
///    counts, orphans and homeless inodes (`LinkRepair`, /lost+found).
/// 5. The block tree is rebuilt from a census of what the new tree's extents use, a batch
///    of blocks at a time (`recount`): a claimed block keeps one reference per extent on
///    it, and one no extent uses is freed (a pending free of the repair's commit).
/// 6. The commit (both trees, fdatasync, the slot), a second one marking the image
///    cleanly unmounted, and the check again.
///
/// Memory: the check's budget; one page per tree level; the set of blocks the old commit
/// uses as ranges (one per run of neighbouring used blocks); the changed nodes of the
/// repair and the list of files it changed, both following the damage, not the tree.
public enum VolumeRepair {
    public struct Report: Sendable {
        /// What the check found before repairing.
        public var check: VolumeCheck.Report
        /// True when the image was written.
        public var repaired = false
        /// Repairs that name no file (damaged nodes, a commit given up, the block tree).
        public var repairs: [String] = []
        /// One line per file the repair changed, by path, sorted.
        public var affected: [String] = []
        /// The check after the repair.
        public var after: VolumeCheck.Report?
        /// Inodes in the repaired tree.
        public var inodes = 0
    }

    public static func run(_ storage: any ImageStorage, budgetBytes: Int = 64 << 20,
                           progress: VolumeCheck.Progress? = nil) throws(FSError) -> Report {
        var slots = try CommitSlots.read(storage)
        var report = Report(check: try VolumeCheck.runReplaying(storage, budgetBytes: budgetBytes, progress: progress))
        guard !report.check.isClean else { return report }
        guard !storage.isReadOnly else { throw .readOnly }
        var taken = try takeJournal(storage, &report, checked: report.check, &slots, budgetBytes: budgetBytes, progress: progress)
        if taken.repaired {
            report.affected = try describeInCurrentCommit(taken.leftOut, storage)
            return report
        }
        let leftOut = taken.leftOut
        let cutLength = storage.length
        guard let cut = try restoreCutShortEnd(storage, slots, progress: progress) else {
            return try repair(storage, slots, report, earlier: leftOut, budgetBytes: budgetBytes, progress: progress)
        }
        report.repaired = true
        report.repairs.append(cut.repair)
        if let lost = journalPastTheCut(storage, slots.current, cut: cutLength) { report.repairs.append(lost) }
        let cutSlots = slots
        do {
            // With its length back, the image is checked again as fsck checks it: its
            // journal's tail too, which the cut may have hidden (its commit did not read).
            let after = try VolumeCheck.runReplaying(storage, budgetBytes: budgetBytes, progress: progress)
            guard !after.isClean else {
                report.after = after
                report.inodes = after.inodes
                report.affected = try describeInCurrentCommit(leftOut + cut.files, storage)
                return report
            }
            taken = try takeJournal(storage, &report, checked: after, &slots, budgetBytes: budgetBytes, progress: progress)
            if taken.repaired {
                report.affected = try describeInCurrentCommit(leftOut + taken.leftOut + cut.files, storage)
                return report
            }
            return try repair(storage, slots, report, earlier: leftOut + taken.leftOut + cut.files,
                              budgetBytes: budgetBytes, progress: progress)
        } catch {
            // A repair that fails before it commits leaves the image as it was, its cut
            // included: the mount still refuses it, and the next repair names the files
            // that lost bytes again. (After a crash in between, the file stays extended and
            // a second repair finds only the tree nodes that were past the cut.)
            if (try? CommitSlots.read(storage).current) == cutSlots.current { try? storage.setLength(cutLength) }
            throw error
        }
    }

    /// The repair of the commit `slots` name (the image given its length back when it was
    /// cut short; `earlier`, what was changed before: the files that lost bytes there, or
    /// whose journaled changes were left out): the fall-back to the
    /// previous commit, or both trees rebuilt.
    private static func repair(_ storage: any ImageStorage, _ slots: (current: CommitSlot, previous: CommitSlot?),
                               _ checked: Report, earlier: [FileChange], budgetBytes: Int,
                               progress: VolumeCheck.Progress?) throws(FSError) -> Report {
        var report = checked
        var earlier = earlier
        var base = slots.current
        // No volume can be rebuilt without its block space.
        try TreeVolume.checkCapacity(of: base, in: storage)
        var old = try OldCommit.read(storage, base, progress: progress)
        // Only when the journal holds the current commit's changes: a commit made whole at
        // once (a bulk load, the upgrade) has no frames, and its previous commit is not it.
        if old.hasNodeDamage, let previous = slots.previous,
           case let since = FramesSince.read(storage, since: previous), !since.frames.isEmpty,
           (try? VolumeCheck.run(storage, at: previous, laterFrames: false, budgetBytes: budgetBytes))?.isClean == true {
            // The frames the fall-back leaves out (written after the damaged commit), and
            // the files they change: read before it writes its commit over that commit's slot.
            let damaged = base
            let later = framesLeftOutByFallBack(storage, previous: previous, damaged: damaged)
            var notedLeftOut = false
            // Once, whether the fall-back's check or its close is what failed after it.
            func noteLeftOut() {
                guard !notedLeftOut else { return }
                notedLeftOut = true
                earlier += later.files
                if later.frames > 0 {
                    report.repairs.append("\(later.frames) journal frames after commit \(damaged.generation) are not replayed "
                                          + "(changes made after the damaged commit)")
                }
            }
            progress?("replaying the journal over the previous commit", 0, 0)
            do {
                try fallBack(storage, to: previous, since, numberingPast: old.nextSequence)
                report.repairs.append("commit \(base.generation) has tree nodes that do not read; the previous commit, "
                                      + "\(previous.generation), checks clean and is taken instead, with the \(since.frames.count) "
                                      + "journal frames kept since it replayed (the changes commit \(base.generation) made)")
                noteLeftOut()
                report.repaired = true
                let after = try VolumeCheck.run(storage, budgetBytes: budgetBytes, progress: progress)
                if after.isClean {
                    report.after = after
                    report.inodes = after.inodes
                    report.affected = try describeInCurrentCommit(earlier, storage)
                    return report
                }
            } catch {
                if (try? CommitSlots.read(storage).current) == damaged {
                    report.repairs.append("the previous commit, \(previous.generation), could not be brought forward "
                                          + "(\(error)); commit \(damaged.generation) is repaired instead")
                } else {
                    // Its commit is durable and its close failed: the frames it left out stay
                    // out, and the commit it made is repaired.
                    report.repairs.append("the previous commit, \(previous.generation), was brought forward, and the "
                                          + "commit that followed failed (\(error)); the commit it made is repaired")
                    noteLeftOut()
                }
            }
            base = try CommitSlots.read(storage).current
            old = try OldCommit.read(storage, base, progress: progress)
        }
        guard base.generation >= 2 else {
            throw .damagedImage("commit \(base.generation) is the first of its image: there is no tree to rebuild")
        }
        report.repairs += old.describeDamage()
        if old.framesAfter > 0 {
            report.repairs.append("\(old.framesAfter) journal frames after commit \(base.generation) are not replayed "
                                  + "(changes made after the last commit)")
            // Each file they changed is named (read before the rebuild's commits).
            earlier += leftOutChanges(storage, base, keeping: 0)
        }
        let empty = CommitSlot(imageID: base.imageID, generation: base.generation, cleanlyUnmounted: false,
                               capacityIsSet: base.capacityIsSet, capacityBytes: base.capacityBytes, unmountError: 0,
                               nameHashKey: base.nameHashKey, filesystemTree: nil, blockTree: nil,
                               journal: LogSegment(start: 0, length: 0), journalSequence: old.nextSequence,
                               nextInode: base.nextInode, inodeCount: 0, usedBlocks: 0)
        // The journal's sequence numbers go on past the old chain's
        // (`TreeVolume.firstSequence(after:)`): no frame of it left in a reused block can
        // pass for one of the new chain.
        // The rebuilt trees go to blocks the old commit does not use, so that a crash
        // leaves it whole. When none are left, a second attempt keeps only what its trees
        // and journal reach (`OldCommit.reachable`): damage that stretched a block-tree
        // run or a pending free over every block left the repair no room, in an image
        // that mounts. (The first attempt wrote only blocks free under both.)
        var claimed = old.used
        var volume: TreeVolume
        var changed: Changes
        while true {
            volume = try TreeVolume(storage: storage, slot: empty, replaying: [], oldChain: [], nextSequence: old.nextSequence)
            try volume.space.claimData(claimed)
            changed = Changes(files: earlier)
            do {
                _ = try volume.committing(closingOpen: true) { [volume, claimed] (generation, chain) throws(FSError) -> VolumeCommitReport in
                    try rebuild(volume, from: base, old, claimed: claimed, budgetBytes: budgetBytes, progress: progress, &changed)
                    return try volume.finishCommit(generation, changed.filesystemCommit!,
                                                   inodes: changed.inodeChanges, journal: chain, cleanlyUnmounted: true)
                }
                break
            } catch .noSpace where ((try? volume.space.freeBlockCount()) ?? 0) < TreeVolume.commitOverheadBlocks {
                // (A full disk under the image is the other `.noSpace`, said as it is.)
                let blocks = volume.space.endBlock - volume.space.firstBlock
                if claimed != old.reachable, Self.count(old.reachable) < Self.count(claimed) {
                    report.repairs.append("the damaged commit's block tree says it uses \(Self.count(claimed)) of the image's "
                                          + "\(blocks) blocks, leaving none for the repaired trees; they are written over the "
                                          + "blocks no tree node, extent or journal frame of it uses (a crash during the repair "
                                          + "may leave the previous commit unusable)")
                    claimed = old.reachable
                    continue
                }
                let retried = claimed == old.reachable && old.reachable != old.used
                throw .damagedImage("repair found no free block to write the repaired trees in: the damaged commit uses, "
                                    + (retried ? "even counting only what its trees, extents and journal reach, "
                                                 : "or its block tree says it uses, ")
                                    + "\(Self.count(claimed)) of the image's \(blocks) blocks (commit \(base.generation) is left "
                                    + (retried ? "as it was, but for blocks none of those use, which may have been written over)"
                                               : "as it was)"))
            }
        }
        // A second commit: both slots name the repaired trees, and the old commit's blocks
        // are punched once it is durable.
        var closed = true
        do {
            try volume.close()
        } catch .noSpace where ((try? volume.space.freeBlockCount()) ?? 0) < TreeVolume.commitOverheadBlocks {
            // The repaired trees are durable (the first commit), and nothing was left for
            // the unmount's commit: the image is repaired, not yet marked cleanly unmounted.
            closed = false
            report.repairs.append("the repaired trees are commit \(volume.current.generation); no free block was left for "
                                  + "the commit that marks the image cleanly unmounted and frees the damaged commit's "
                                  + "blocks: a mount with room makes it (a larger --size gives room)")
        }
        // Blocks the old commit used only under nodes of both trees that did not read (an
        // extent in a lost leaf whose run was in a lost block-tree leaf) were never
        // claimed: free now, they may still hold a lost file's bytes, and free space must
        // read as zeros (a block a file maps is only partly written). Neither commit
        // names them, so the whole free space is punched (pending frees are not free).
        // Best effort: the repair is done and durable; a file system that cannot punch is
        // left as it is (zeros written over a sparse image's free space could fill it).
        // (Not after a failed unmount commit: its block tree in memory is not the durable one.)
        if closed, let failure = punchFreeSpace(volume, progress: progress) { report.repairs.append(failure) }
        report.repaired = true
        report.inodes = changed.inodeChanges.added
        report.repairs += changed.repairs
        report.affected = changed.describe(in: volume.filesystem)
        progress?("checking the repaired image", 0, 0)
        report.after = try VolumeCheck.run(storage, budgetBytes: budgetBytes, progress: progress)
        return report
    }

    /// How many blocks `blocks` holds.
    static func count(_ blocks: RangeSet<UInt64>) -> UInt64 {
        blocks.ranges.reduce(UInt64(0)) { $0 + UInt64($1.count) }
    }

    /// Punches the free space of `volume` (closed, so its block tree is the durable one)
    /// and syncs; nil when done, else the report's line saying why not.
    private static func punchFreeSpace(_ volume: TreeVolume, progress: VolumeCheck.Progress?) -> String? {
        progress?("punching the free space", 0, 0)
        do {
            for blocks in try volume.space.blockTree.freeRanges(in: volume.space.firstBlock..<volume.space.endBlock) {
                try volume.storage.punch((blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift))
            }
            try volume.storage.sync()
            return nil
        } catch {
            return "the free space was not punched (\(error)): blocks no commit names may still hold bytes of lost files"
        }
    }

    /// `files` (changed by repair) by path in the image's current commit.
    private static func describeInCurrentCommit(_ files: [FileChange], _ storage: any ImageStorage) throws(FSError) -> [String] {
        guard !files.isEmpty else { return [] }
        let current = try CommitSlots.read(storage).current
        return Changes(files: files).describe(in: try VolumeCheck.filesystemTree(VolumeCheck.blockSpace(storage, current), current))
    }

    /// Steps 4 and 5, inside the repair's commit: the filesystem tree loaded at the
    /// generation before the commit's, its two passes committed in between (their scans
    /// read a committed root while the changes go to new nodes), and the references.
    static func rebuild(_ volume: TreeVolume, from base: CommitSlot, _ old: OldCommit, claimed: RangeSet<UInt64>, budgetBytes: Int,
                        progress: VolumeCheck.Progress?, _ changed: inout Changes) throws(FSError) {
        let generation = base.generation
        let tree = volume.filesystem.tree
        var salvage = TreeSalvage(io: ImageStoragePageIO(storage: volume.storage), imageID: base.imageID,
                                  treeID: TreeVolume.filesystemTreeID, blocks: volume.space.firstBlock..<volume.space.endBlock)
        salvage.candidates = old.filesystemNodes
        var loaded: UInt64 = 0
        _ = try tree.bulkLoad(generation: generation - 1) { (add) throws(FSError) in
            try salvage.walk(base.filesystemTree, node: { _ in }) { (key, value) throws(FSError) in
                try add(key, value)
                loaded += 1
                if loaded % 65_536 == 0 { progress?("rebuilding the filesystem tree", loaded, 0) }
            }
        }
        changed.lostRanges = salvage.damages.filter { $0.level == 0 }.map { ($0.lower, $0.upper) }
        var names = try NameRepair(volume: volume, root: tree.committedRoot, progress: progress)
        try names.run()
        changed.absorb(names.changes)
        try commitPass(volume, generation: generation)
        var links = try LinkRepair(volume: volume, root: tree.committedRoot, nextInode: base.nextInode, progress: progress)
        try links.run()
        changed.absorb(links.changes)
        changed.inodeChanges = links.inodeChanges
        try commitPass(volume, generation: generation + 1)
        try recount(volume, claimed: claimed, budgetBytes: budgetBytes, progress: progress)
        // What the block space records: every node handed out since the repair began and
        // still in the tree (the passes gave back the ones they replaced).
        changed.filesystemCommit = CopyOnWriteTree.Commit(root: tree.committedRoot, freedBlocks: [],
                                                          writtenBlocks: volume.filesystemPages.live.count)
    }

    /// Commits the filesystem tree's changes of one pass at `generation`; the nodes they
    /// replaced were written by this repair and never named by a slot: free at once, once
    /// punched (the free space reads as zeros and takes no disk space, as the commits
    /// leave it).
    private static func commitPass(_ volume: TreeVolume, generation: UInt64) throws(FSError) {
        let commit = try volume.filesystem.tree.commit(generation: generation)
        try TreeVolume.punch(BlockSpace.ranges(of: commit.freedBlocks.sorted()), in: volume.storage)
        volume.filesystemPages.releasePages(commit.freedBlocks)
    }

    /// Step 5: per batch of blocks (4 bytes a block of `budgetBytes`), the references the
    /// new tree's extents hold; each block the old commit used gets that many (the claim
    /// gave it one), or is freed when none.
    static func recount(_ volume: TreeVolume, claimed: RangeSet<UInt64>, budgetBytes: Int,
                        progress: VolumeCheck.Progress?) throws(FSError) {
        let space = volume.space
        let all = space.firstBlock..<space.endBlock
        let batchBlocks = UInt64(max(1, budgetBytes / 4))
        var start = all.lowerBound
        while start < all.upperBound {
            let batch = start..<min(all.upperBound, start + batchBlocks)
            start = batch.upperBound
            progress?("counting block references", batch.lowerBound - all.lowerBound, UInt64(all.count))
            let here = claimed.intersection(RangeSet(batch))
            guard !here.isEmpty else { continue }
            var counts = [UInt32](repeating: 0, count: batch.count)
            try volume.filesystem.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
                guard key.kind == ItemKind.extent.rawValue, key.object < ReservedObject.firstReserved,
                      case .image(let offset, let length)? = try? ExtentItem.decode(value), length > 0 else { return true }
                for block in ExtentReferenceChanges.blocks(offset: offset, length: length).clamped(to: batch) {
                    // The name pass kept only extents inside the space, on blocks the old
                    // commit's extents used: all claimed.
                    guard here.contains(block) else {
                        throw .damagedImage("repair: an extent of inode \(key.object) names block \(block), which the old commit did not use")
                    }
                    counts[Int(block - batch.lowerBound)] &+= 1
                }
                return true
            }
            for range in here.ranges {
                var run = range.lowerBound
                while run < range.upperBound {
                    let count = counts[Int(run - batch.lowerBound)]
                    var end = run + 1
                    while end < range.upperBound && counts[Int(end - batch.lowerBound)] == count { end += 1 }
                    if count == 0 {
                        space.release(run..<end)
                    } else {
                        for _ in 1..<count { space.retain(run..<end) }
                    }
                    run = end
                }
            }
        }
    }
}
