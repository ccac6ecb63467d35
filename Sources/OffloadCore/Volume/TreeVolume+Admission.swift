extension TreeVolume {
    /// Blocks the commit of one changed object may take on a full image: a leaf of the
    /// filesystem tree written anew, a leaf of the block tree for the old leaf's release,
    /// and its share of the journal and of both trees' inner nodes.
    static let commitBlocksPerObject: UInt64 = 3
    /// Blocks a commit takes whatever it writes: its new journal chain's first segment (16),
    /// both trees' paths to their roots, the block tree's leaves for the old chain.
    static let commitOverheadBlocks: UInt64 = 32

    /// Blocks the commits of `load` may take on a full image: `commitBlocksPerObject` an
    /// object, the leaves its items fill (`CommitLoad.itemBytes`), and two for each leaf
    /// elsewhere in the tree its keys may land in (`CommitLoad.scatteredLeaves`).
    static func commitBlocks(_ load: CommitLoad) -> UInt64 {
        commitBlocksPerObject * UInt64(load.objects)
            + UInt64((load.itemBytes + CommitLoad.leafBytes - 1) / CommitLoad.leafBytes)
            + UInt64(CommitLoad.scatteredKeyBlocks * load.scatteredLeaves)
    }

    /// The free blocks file data must leave for the commits of `load`, the changes not
    /// yet committed, beside what the metadata reserve of `space` is sure to give a
    /// commit (its blocks, less the quarter of its target that journal segments may still
    /// take): nothing while the reserve covers them. docs/ARCHITECTURE.md, "Commits that
    /// fit a full image".
    static func blocksHeldForCommits(of load: CommitLoad, space: BlockSpace) -> UInt64 {
        let need = commitOverheadBlocks + commitBlocks(load)
        let sure = min(space.reserveBlocks, space.reserveTarget - space.reserveTarget / 4)
        return need > sure ? need - sure : 0
    }

    /// Refuses with ENOSPC, before it joins (nothing changed), an operation whose commit
    /// may take `load` (`CommitLoad.of`: its changes, every key taken as new) that grows
    /// the tree on a nearly full image (`isNearlyFull`) when that commit would not fit,
    /// with those of the changes waiting and those admitted before it, in the room the
    /// commits can take, keeping aside the overhead of five commits
    /// (`growthAsideBlocks`). Without it, creates on a full image, committed at each
    /// maintenance tick, took the reserve until a commit found nothing and failed the
    /// volume. docs/ARCHITECTURE.md, "Commits that fit a full image".
    /// Returns the blocks admitted (0 where the image is not nearly full), counted in
    /// `admittedBlocks` until `endAdmission`: the caller ends it once the delta counts
    /// the changes, and on every way out.
    func admit(_ load: CommitLoad) throws(FSError) -> Int {
        guard isNearlyFull(metadataRoom) else { return 0 }
        do {
            return try admitOnce(load)
        } catch {
            // The disk under the image may have room again (files beside the image were
            // deleted, or it refused a punch and is no limit any more) since it was last
            // read: read it, and ask once more.
            refreshHostRoom()
            return try admitOnce(load)
        }
    }

    /// `admit`'s one look at the counts and the room (caller holds no volume lock).
    private func admitOnce(_ load: CommitLoad) throws(FSError) -> Int {
        let blocks = Int(Self.commitBlocks(load))
        return try admissionLock.withLock { () throws(FSError) -> Int in
            // The admitted count first: an operation leaving it between the two reads
            // counts twice, never not at all (it records before it leaves). The room after
            // the counts: a commit settling between them took its blocks already.
            let admitted = admittedBlocks.load(ordering: .sequentiallyConsistent)
            let waiting = delta.commitLoad(after: space.settledGeneration)
            let room = metadataRoom
            let need = growthAsideBlocks + Self.commitBlocks(waiting) + UInt64(admitted + blocks)
            if room < need { throw .noSpace }
            admittedBlocks.add(blocks, ordering: .sequentiallyConsistent)
            return blocks
        }
    }

    /// `admit` of an operation's `changes` (`born`: the inode numbers it gave out), counted
    /// only where the image is nearly full: elsewhere one atomic load.
    func admit(_ changes: [JournalChange], born: Range<UInt64>) throws(FSError) -> Int {
        guard isNearlyFull(metadataRoom) else { return 0 }
        return try admit(CommitLoad.of(changes, born: born))
    }

    /// Ends an admission (`admit`) of `admitted` blocks; sets it to 0.
    func endAdmission(_ admitted: inout Int) {
        guard admitted > 0 else { return }
        let before = admittedBlocks.subtract(admitted, ordering: .sequentiallyConsistent).oldValue
        precondition(before >= admitted, "an admission ended twice")
        admitted = 0
    }

    /// Reads what the disk under the image can still give it into the block space
    /// (`BlockSpace.hostFreeBlocks`): at each maintenance tick (other files on the disk
    /// change it), after each commit's punch and refill, and after file data took disk
    /// space (`VolumeFileBlocks.noteHostRoom`).
    public func refreshHostRoom() {
        // Read before the lock: statvfs may be a round trip (NFS).
        let bytes = storage.hostAvailableBytes
        spaceLock.withLock { space.noteHostRoom(availableBytes: bytes) }
    }

    /// `refreshHostRoom` with the space lock held.
    func noteHostRoom() {
        space.noteHostRoom(availableBytes: storage.hostAvailableBytes)
    }

    /// What the commits can take (`BlockSpace.metadataRoom`).
    var metadataRoom: UInt64 { space.metadataRoom }

    /// True when the room left is under twice the metadata reserve's target: file data
    /// took the rest. Only then does `admit` read the counts (elsewhere an
    /// operation costs them one atomic load).
    func isNearlyFull(_ room: UInt64) -> Bool {
        room < 2 * space.reserveTarget
    }

    /// True when the room left is under twice the metadata reserve's target
    /// (`isNearlyFull`): a change refused for space then runs after a reclaim.
    public var isNearlyFullNow: Bool { isNearlyFull(metadataRoom) }

    /// The room `admit` keeps aside from what grows the tree: five commits' overhead (what
    /// a commit frees is handed out again four commits later, and the maintenance keeps
    /// committing meanwhile), at most three quarters of the reserve's target (a reserve at
    /// its 128-block minimum holds less than five).
    var growthAsideBlocks: UInt64 {
        let target = space.reserveTarget
        return min(5 * Self.commitOverheadBlocks, target - target / 4)
    }

    /// `.reached` when the open generation (not empty) must be committed before `admit`
    /// refuses what grows the tree: the commits of the changes waiting, and an operation's
    /// worth more (`changesAhead`), need all of the room left after the aside; `.nearing`
    /// at three quarters of it.
    func roomUse(openObjects: Int) -> BudgetUse {
        guard openObjects > 0 else { return .under }
        let room = metadataRoom
        // Not only on a nearly full image: a generation whose estimate outgrew the room
        // while the image was not (metadata changes alone, on an image of a few GiB) would
        // otherwise meet admission, once the image filled, with a commit larger than the
        // room. Past `ampleRoomBlocks` no count is read.
        guard room < Self.ampleRoomBlocks else { return .under }
        let usable = room - min(room, growthAsideBlocks)
        // With the changes admitted and not yet recorded: what admission counts.
        let waiting = delta.commitLoad(after: space.settledGeneration)
        let need = Self.commitBlocks(waiting) + UInt64(admittedBlocks.load(ordering: .relaxed))
            + Self.commitBlocksPerObject * UInt64(Self.changesAhead)
        if need >= usable { return .reached }
        return 4 * need >= 3 * usable ? .nearing : .under
    }

    /// Changes an operation may bring (a rename's, about), for `roomUse`.
    static let changesAhead = 8

    /// Room past which `roomUse` reads no counts: the commits of four generations at
    /// the default dirty cap fit in it (about 938 MiB).
    static let ampleRoomBlocks: UInt64 = 5 * commitOverheadBlocks + 4 * 20_000 * commitBlocksPerObject

    /// True when file data is refused blocks that are free, held for the commits of the
    /// changes not yet committed (`blocksHeldForCommits`): one commit gives them back.
    public var holdsFreeBlocksForCommits: Bool {
        guard let files else { return false }
        return spaceLock.withLock {
            let held = files.heldForCommits, promised = files.unbackedPromisedBlocks, free = space.usableFree
            return held > 0 && free > promised && free <= promised + held
        }
    }
}
