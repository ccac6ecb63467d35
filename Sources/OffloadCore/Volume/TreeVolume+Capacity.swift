// A mount's capacity on format 2 (docs/ARCHITECTURE.md, "Format 2 mounted", "Capacity"):
// `--size`, or the default, is honoured at every mount as format 1 honours it. The block
// space's end is the capacity, so changing it is a matter of where the space ends, which
// the mount decides before anything is written:
// - larger: the new blocks are free space at once. Nothing is written for them: a group
//   summary counts the blocks past the capacity as free (`BlockGroupSummary`), so the last
//   group's and the new groups' summaries (none: all free) are right as they stand. The
//   file grows (sparse) to the new end before the opening commit, whose slot names the
//   new capacity after its sync; a crash before that slot leaves the old capacity in a
//   longer file, which is valid.
// - smaller: allowed when every block in use (runs, pending frees, the journal and data
//   replay claims) lies below the new end and the free space below it holds the metadata
//   reserve and a journal segment; otherwise `--size` is refused before anything is
//   written (`.capacityTooSmall`, with the smallest capacity that would do), and a default
//   is raised to that smallest one. Nothing is moved to make room: format 1 moves nothing
//   either (its capacity counts live blocks wherever they lie; format 2's is where the
//   space ends). Once the opening commit's slot names the smaller capacity, the file is
//   cut to it.

extension TreeVolume {
    /// The smallest capacity a format 2 image has: its first journal segments and tree
    /// nodes need room besides files.
    public static let minimumCapacity: UInt64 = 4 << 20
    /// The largest: what an image may map (as format 1's).
    public static let maximumCapacity = BackingStore.maximumCapacity

    /// A capacity a volume can have: a block past the two slots, at most `maximumCapacity`.
    static func isPossibleCapacity(_ bytes: UInt64) -> Bool {
        bytes >> BackingStore.blockShift > firstSpaceBlock && bytes <= maximumCapacity
    }

    /// Refuses a commit whose capacity no volume has (no block past the slots, more than
    /// the 64 TiB an image can map), or that is past the end of the image file (its end
    /// was cut off: `fsck --repair` gives it its length back). Opening, fsck's check and
    /// repair all ask this before they read the block space.
    static func checkCapacity(of slot: CommitSlot, in storage: any ImageStorage) throws(FSError) {
        guard isPossibleCapacity(slot.capacityBytes) else {
            throw .damagedImage("a capacity of \(slot.capacityBytes) bytes in commit \(slot.generation), in an image file of \(storage.length)")
        }
        guard slot.capacityBytes <= storage.length else {
            // When the filesystem tree's root went with the cut, repair finds no file: say
            // so before it runs (an administrator's `fsck --repair` of such an image emptied
            // the tree, naming nothing: the admin hunt of the thirty-fifth session).
            var rootLost = ""
            if let root = slot.filesystemTree, root.block >= storage.length >> BackingStore.blockShift {
                rootLost = "; the root of its filesystem tree (block \(root.block)) lies past the cut, so repair finds no "
                    + "file in it (a full copy of the image keeps them)"
            }
            throw .damagedImage("the image file is \(storage.length) bytes, shorter than the \(slot.capacityBytes) bytes of "
                                + "capacity commit \(slot.generation) states: its end was cut off" + rootLost)
        }
    }

    /// The capacity (bytes, whole blocks, and whether it is kept) that opening the image
    /// at `slot` with `request` gives it. Reads only: a smaller capacity is checked against
    /// the block space as replay will find it (`frames` and `oldChain` claimed, as opening
    /// claims them).
    static func capacity(for request: CapacityRequest, slot: CommitSlot, storage: any ImageStorage,
                         replaying frames: [(generation: UInt64, changes: [JournalChange])],
                         oldChain: [LogSegment]) throws(FSError) -> (bytes: UInt64, isSet: Bool) {
        let (asked, isSet) = request.resolved(keptIn: slot)
        let bytes = (asked >> BackingStore.blockShift) << BackingStore.blockShift
        guard bytes <= maximumCapacity else { throw BackingStore.capacityPastTheLimit(asked) }
        guard bytes < slot.capacityBytes else { return (bytes, isSet) }
        // The slot's own capacity, as opening checks it (the block space below needs one).
        try checkCapacity(of: slot, in: storage)
        let space = try BlockSpace(io: ImageStoragePageIO(storage: storage), imageID: slot.imageID, blockTreeID: blockTreeID,
                                   root: slot.blockTree, firstBlock: firstSpaceBlock,
                                   endBlock: slot.capacityBytes >> BackingStore.blockShift)
        _ = try claimReplayed(oldChain: oldChain, frames: frames, of: slot, in: space)
        let (needed, live) = try smallestCapacity(of: space)
        if bytes >= needed { return (bytes, isSet) }
        // A default too small for what the image holds (the disk under it filled up):
        // as small as it can be, not smaller than it was.
        guard isSet else { return (min(needed, slot.capacityBytes), false) }
        throw .capacityTooSmall(capacityBytes: bytes, neededBytes: needed, liveBytes: live)
    }

    /// The smallest capacity `space` fits in, and the bytes it holds in use: every block
    /// in use lies below it, and the free space below it holds the metadata reserve of
    /// that capacity and the first segment of the journal chain the opening commit starts
    /// (the opening commit's nodes come from the reserve). At least `minimumCapacity`.
    static func smallestCapacity(of space: BlockSpace) throws(FSError) -> (needed: UInt64, live: UInt64) {
        let used = try space.usedBlockCount()
        let journal = UInt64(MetadataLog.firstJournalSegmentBytes) >> BackingStore.blockShift
        var end = max(try space.usedEnd(), minimumCapacity >> BackingStore.blockShift)
        // Every block in use lies below `end`: the free space below it is the rest. Each
        // round raises `end` by what is missing; the reserve grows by a 64th of that at
        // most, so a few rounds settle.
        while true {
            let free = end - firstSpaceBlock - used
            let wanted = reserveBlocks(capacityBlocks: end - firstSpaceBlock) + journal
            if free >= wanted { break }
            end += wanted - free
        }
        return (end << BackingStore.blockShift, used << BackingStore.blockShift)
    }

    /// Before the opening commit: a capacity larger than the file grows the file to it
    /// (a sparse file, as `format` makes it), so the space's new blocks exist before any
    /// is handed out and before a slot names them (the commit syncs the length with its
    /// nodes, before its slot).
    func growFile() throws(FSError) {
        let end = space.endBlock << BackingStore.blockShift
        if storage.length < end { try storage.setLength(end) }
    }

    /// After the opening commit: when it made the capacity smaller than `previous` and its
    /// slot is durable, cuts the file to the new capacity (nothing in use lies past it,
    /// `capacity(for:…)` checked). A failure, or a crash before the cut, leaves a file
    /// longer than its capacity, which is valid (a format 1 image's file is often longer
    /// than its capacity too); the disk blocks past it were punched or never written.
    func cutFile(shrunkFrom previous: UInt64) {
        let end = space.endBlock << BackingStore.blockShift
        guard failure == nil, end < previous, current.capacityBytes == end, storage.length > end else { return }
        try? storage.setLength(end)
    }
}
