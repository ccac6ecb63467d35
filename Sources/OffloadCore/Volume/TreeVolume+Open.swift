extension TreeVolume {
    /// Numbers between mounts that no chain uses (docs/FORMAT.md, "The journal of format 2").
    static let sequenceGap: UInt64 = 1 << 32

    /// The first sequence number of a mount's chains, after a replay that ended before
    /// `replayEnd`: the first multiple of `sequenceGap` above `replayEnd + sequenceGap`. Where
    /// replay ended is not where the crashed mount stopped writing: a power cut between a
    /// chain switch and its commit's first sync keeps frames of the new chain but not the
    /// link to it, and their blocks are free again. With the numbers going on from the
    /// replay's end, a chain of this mount on those blocks whose last frame ended where one
    /// of them began, numbered as its next would be, let the next replay take that frame
    /// and the ones after it for this mount's (`TreeVolumeStaleFramesTests`).
    /// Past the gap, every frame the crashed mount wrote has a number lower than any this
    /// mount's chains expect; it would need 2^32 frames (at least 160 GiB of journal)
    /// written after its last durable frame to reach them. Numbers last 2^30 mounts; an
    /// image whose journal numbers are used up (made so, in practice) is refused.
    static func firstSequence(after replayEnd: UInt64) throws(FSError) -> UInt64 {
        let first = (replayEnd / sequenceGap + 2).multipliedReportingOverflow(by: sequenceGap)
        guard !first.overflow, first.partialValue <= Superblock.maximumCounter - sequenceGap else {
            throw .damagedImage("the journal's sequence numbers are used up (the last replayed is \(replayEnd))")
        }
        return first.partialValue
    }

    /// Writes a new, empty format 2 image of `capacityBytes` on `storage` (both slots: the
    /// first commit, and a zeroed other slot, so that nothing of an earlier image there
    /// counts) and opens it.
    /// `capacityIsSet`: the capacity was asked for (`--size`) rather than a mount's default.
    public static func format(_ storage: any ImageStorage, capacityBytes: UInt64, capacityIsSet: Bool = true,
                              imageID: UInt64, nameHashKey: SipHash24) throws(FSError) -> TreeVolume {
        guard capacityBytes >> BackingStore.blockShift > firstSpaceBlock else {
            throw .invalidArgument("a capacity of \(capacityBytes) bytes leaves no room after the commit slots")
        }
        guard imageID != 0 else { throw .invalidArgument("image id 0") }
        // Whole blocks: the block space's end is what the slots say.
        let capacityBytes = (capacityBytes >> BackingStore.blockShift) << BackingStore.blockShift
        if storage.length < capacityBytes { try storage.setLength(capacityBytes) }
        try [UInt8](repeating: 0, count: BackingStore.blockSize).withUnsafeBytes { raw in
            Result { () throws(FSError) in try storage.write(raw, at: 0) }
        }.get()
        let first = CommitSlot(imageID: imageID, generation: 1, cleanlyUnmounted: true, capacityIsSet: capacityIsSet,
                               capacityBytes: capacityBytes, unmountError: 0, nameHashKey: nameHashKey,
                               filesystemTree: nil, blockTree: nil, journal: LogSegment(start: 0, length: 0),
                               journalSequence: 0, nextInode: 2, inodeCount: 0, usedBlocks: 0)
        try CommitSlots.write(first, to: storage)
        return try open(storage)
    }

    /// Opens the image at its current commit (the slots and the two roots), replays the
    /// journal frames newer than that commit into the delta, and commits: the new slot
    /// names a new journal chain, which the frames of this mount go to (the old chain may
    /// end in a torn frame, after which nothing can be appended), and the old chain's
    /// segments are released.
    ///
    /// On a read-only storage it writes nothing: the replayed frames stay in the delta,
    /// readable, nothing is punched or committed, and every change, sync and commit throws
    /// `.readOnly` (`failure`).
    /// `capacity`: the mount's `--size` or default (nil: the slot's own), applied as
    /// `TreeVolume+Capacity.swift` says: a larger one by the opening commit, a smaller one
    /// too when everything in use lies below it, otherwise refused before anything is
    /// written (`.capacityTooSmall`) or, a default, cut to the smallest that fits. A
    /// read-only open keeps the slot's.
    /// `reserveTarget` overrides the metadata reserve's size (tests of a full image).
    /// `frameLimit`: replays only the first that many frames after the commit and leaves
    /// the rest out, as a crash after them would have (repair of a journal whose replay
    /// fails, `VolumeCheck.longestReplay`); the chain is still read to its end, so that
    /// the opening commit lets go of all of it.
    public static func open(_ storage: any ImageStorage, capacity request: CapacityRequest? = nil,
                            reserveTarget: UInt64? = nil, replayingAtMost frameLimit: Int = .max) throws(FSError) -> TreeVolume {
        let slot = try CommitSlots.read(storage).current
        var frames: [(generation: UInt64, changes: [JournalChange])] = []
        var damage: FSError?
        let journal = SlotJournal(storage, slot) { frame, _ in
            switch frame {
            case .failure(let error):
                damage = error
                return false
            case .success(let frame):
                // Past the limit nothing is replayed, so nothing needs to be right.
                guard frame.generation <= slot.generation || frames.count < frameLimit else { return true }
                // Two generations at most follow the last durable commit: the one its
                // successor was committing (closed under the namespace lock) and the one
                // requests went on in meanwhile (the maintenance commits outside that
                // lock; an operation's own commit of the next one waits for the commit
                // lock, so a third never starts before the slot). A frame of a later one
                // is damage.
                guard frame.generation <= slot.generation + Self.generationsPastTheSlot else {
                    damage = .damagedImage("a journal frame of generation \(frame.generation) after commit \(slot.generation)")
                    return false
                }
                if frame.generation > slot.generation { frames.append(frame) }
                return true
            }
        }
        if let damage { throw damage }
        let oldChain = journal.segments
        // The new chain's numbers go on past the old one's (`firstSequence(after:)`), so no
        // frame left in a reused block can pass for one of the new chain.
        let nextSequence = journal.nextSequence
        var capacity = (bytes: slot.capacityBytes, isSet: slot.capacityIsSet)
        if let request, !storage.isReadOnly {
            capacity = try Self.capacity(for: request, slot: slot, storage: storage, replaying: frames, oldChain: oldChain)
        }
        let volume = try TreeVolume(storage: storage, slot: slot, capacity: capacity, replaying: frames, oldChain: oldChain,
                                    nextSequence: nextSequence)
        if storage.isReadOnly {
            volume.failure = .readOnly
            return volume
        }
        // Claims are made: from here on the free space is scrubbed where allocations go.
        try volume.scrubFreeSpaceAsGroupsLoad()
        try volume.growFile()
        if let reserveTarget { volume.space.setReserveTarget(reserveTarget) }
        // The old chain goes with the commit that stops naming it (a pending free of it).
        for segment in oldChain { volume.logSpace.releaseLogSegment(segment.range) }
        do {
            try volume.commit()
        } catch .noSpace {
            // A full image (its last mount ran out of space in a commit, whose replay
            // needs the same room): it opens read-only, every replayed change readable,
            // and refuses changes (`failure`) until it is opened with more room.
        }
        volume.scrub.setOpening(false)
        volume.cutFile(shrunkFrom: slot.capacityBytes)
        return volume
    }

    /// How many generations' frames the journal may hold past the durable slot: the one a
    /// crashed commit was writing and the next, which requests went on in.
    public static let generationsPastTheSlot: UInt64 = 2

    /// The metadata reserve of a space of `capacityBlocks` (`BlockSpace+Reserve.swift`):
    /// a 64th of it, at least 512 KiB (a commit of one operation and a journal segment)
    /// and at most 8 MiB (a commit of a few thousand changes; the maintenance commits at
    /// every tick with changes once the image is low on free space,
    /// `VolumeCommitPolicy.isLowOnSpace`). Its blocks take disk space (they are fallocated, so that a full
    /// disk under the image still leaves the commit room), which `du` shows.
    static func reserveBlocks(capacityBlocks: UInt64) -> UInt64 {
        min(max(capacityBlocks / 64, 128), 2_048)
    }

    /// Claims what replay finds in use that the block tree does not say, in `space` (the
    /// image's at `slot`), and returns the claims of the frames' extents (`replayClaims`).
    ///
    /// The old chain's segments the block tree does not have (the chain grew after the
    /// commit): claimed before anything is allocated, so that nothing overwrites them
    /// until the commit that follows replay is durable (until then, a crash replays
    /// them again).
    /// A segment the block tree holds must be a journal run, whole; one it does not
    /// hold must be free, not pending (`claimData` checks): anything else names blocks
    /// of something else.
    static func claimReplayed(oldChain: [LogSegment], frames: [(generation: UInt64, changes: [JournalChange])],
                              of slot: CommitSlot, in space: BlockSpace) throws(FSError) -> RangeSet<UInt64> {
        for segment in oldChain {
            let blocks = (segment.start >> BackingStore.blockShift)..<(segment.range.upperBound >> BackingStore.blockShift)
            let runs = try space.blockTree.runs(overlapping: blocks)
            if runs.isEmpty {
                try space.claimData(blocks, use: .journal)
            } else if !(runs.allSatisfy { $0.use == .journal }
                        && runs.first!.blocks.lowerBound <= blocks.lowerBound && runs.last!.blocks.upperBound >= blocks.upperBound
                        && zip(runs, runs.dropFirst()).allSatisfy { $0.blocks.upperBound == $1.blocks.lowerBound }) {
                throw .damagedImage("journal segment \(segment) of commit \(slot.generation) lies on blocks that are not the journal's")
            }
        }
        return try claimBlocks(namedBy: frames.flatMap(\.changes), in: space)
    }

    /// Claims the blocks `changes`' image extents name that the block tree holds free: the
    /// write path of the mount that crashed took them, and no commit recorded them. A
    /// block pending in the tree, or outside the space, is damage (`claimData`).
    static func claimBlocks(namedBy changes: [JournalChange], in space: BlockSpace) throws(FSError) -> RangeSet<UInt64> {
        var named = RangeSet<UInt64>()
        for change in changes {
            guard case .fileRange(_, _, _, let pieces) = change else { continue }
            for piece in pieces {
                if case .mmapOffload(let offset, let size) = piece.extent, size > 0 {
                    named.insert(contentsOf: ExtentReferenceChanges.blocks(offset: offset, length: size))
                }
            }
        }
        var unrecorded = named
        for part in named.ranges {
            for run in try space.blockTree.runs(overlapping: part) {
                // A file extent over tree nodes or the journal: retaining it would let the
                // node's block be freed and reused under the extent.
                guard run.use == .data else {
                    throw .damagedImage("a journal frame's file extent names blocks \(run.blocks.clamped(to: part)), which hold \(run.use)")
                }
                unrecorded.remove(contentsOf: run.blocks)
            }
        }
        try space.claimData(unrecorded)
        return unrecorded
    }
}
