extension TreeVolume {
    /// Upgrades a format 1 image in place to format 2 (docs/ARCHITECTURE.md, "The version 1
    /// upgrade"): the tree `replay` recovered (read-only, checked clean by `analysis`)
    /// becomes the first generation of a volume over the same blocks, and two commits make
    /// it the image's.
    ///
    /// Until the second commit's slot is durable the image is format 1 (when its copy 1 is
    /// valid; with copy 1 damaged, from the first slot on, which names the whole tree):
    /// every block format 1 uses (its files' data, its metadata chains, and the previous
    /// commit's, kept for repair) is claimed before anything is allocated, so the trees,
    /// the placed RAM pieces and the journal go only to blocks format 1 holds free; the
    /// first commit writes slot 2 over copy 0, and while copy 1 is a valid format 1
    /// superblock the image is format 1 to both formats (a format 1 recovery punches the
    /// unreferenced new blocks, and the upgrade can run again); the second commit writes
    /// slot 3 over copy 1, and from then on it is format 2. Data blocks keep
    /// their offsets: every extent item names the bytes its format 1 piece named, and the
    /// commit counts their references from the items (a block shared by two files, or two
    /// pieces, gets two). The claimed blocks no item names (the metadata chains, data of
    /// inodes no name reaches) are released in the first commit and punched by the second,
    /// once no format 1 superblock can name them.
    ///
    /// `previousSegments`: the previous format 1 commit's metadata segments
    /// (`ImageReplay.previousCommitSegments`), claimed with the rest. `capacityBytes`: the
    /// upgraded image's capacity (nil: the superblock's; never below the file's length),
    /// kept if the superblock keeps one.
    ///
    /// Memory: format 1's recovery holds the whole tree already; the upgrade adds it once
    /// more as one generation of changes, and the new tree's nodes until its commit.
    ///
    /// `progress` hears each step and how far it got: the inodes stated in the generation
    /// (`.recording`), then each commit's steps (`TreeVolume.commit(progress:)`).
    public static func upgrade(_ storage: any ImageStorage, from replay: ImageReplay, analysis: ImageAnalysis,
                               previousSegments: [LogSegment], capacityBytes requested: UInt64? = nil,
                               nameHashKey: SipHash24,
                               progress: CommitProgress? = nil) throws(FSError) -> TreeVolume {
        guard analysis.isClean else {
            throw .damagedImage("the format 1 image has problems (\(analysis.problems.prefix(3).joined(separator: "; "))); `offloadfs fsck --repair` it before the upgrade")
        }
        // Two valid format 1 copies must be the same commit: the first slot overwrites copy
        // 0, and copy 1 is then the image's truth until the second slot (after a crash
        // between format 1's two superblock writes, copy 1 is an older commit; format 1's
        // next checkpoint rewrites both). One valid copy is fine: a damaged other copy, or
        // the first slot of an upgrade a crash interrupted, which this one redoes.
        let copies = (0..<Superblock.blocks).map { block in
            Superblock.decode(storage.readBytes(at: block << BackingStore.blockShift, count: BackingStore.blockSize))
        }
        let valid = copies.compactMap { copy -> Superblock? in if case .valid(let superblock) = copy { superblock } else { nil } }
        guard valid.contains(replay.superblock), valid.allSatisfy({ $0 == replay.superblock }) else {
            throw .invalidArgument("the format 1 image's two superblock copies differ; mount it as format 1 once (its first checkpoint rewrites both) before the upgrade")
        }
        let superblock = replay.superblock
        // Blocks the file holds past the capacity are in use too (a lowered capacity).
        let fileBlocks = (storage.length + UInt64(BackingStore.blockSize) - 1) >> BackingStore.blockShift
        let kept = ((requested ?? superblock.capacityBytes) >> BackingStore.blockShift) << BackingStore.blockShift
        guard kept <= maximumCapacity else { throw BackingStore.capacityPastTheLimit(kept) }
        let capacityBytes = max(kept, fileBlocks << BackingStore.blockShift)
        if storage.length < capacityBytes { try storage.setLength(capacityBytes) }
        // Format 1 reads an image id of 0 (only damage makes one); a commit slot with it
        // is no commit (FORMAT.md), so such an image gets a new one. Nothing of format 1
        // is read by it afterwards: every node and frame of format 2 is written new.
        let imageID = superblock.imageID != 0 ? superblock.imageID : Superblock.newImageID()
        let slot = CommitSlot(imageID: imageID, generation: 1, cleanlyUnmounted: false,
                              capacityIsSet: superblock.capacityIsSet, capacityBytes: capacityBytes, unmountError: 0,
                              nameHashKey: nameHashKey, filesystemTree: nil, blockTree: nil,
                              journal: LogSegment(start: 0, length: 0), journalSequence: 0,
                              nextInode: replay.nextInode, inodeCount: 0, usedBlocks: 0)  // the commit counts them
        // The journal's sequence numbers go on past format 1's (`firstSequence(after:)`): a
        // frame of format 1's chains left in a block the new chain reuses cannot pass for
        // one of it.
        let volume = try TreeVolume(storage: storage, slot: slot, replaying: [], oldChain: [],
                                    nextSequence: replay.nextJournalSequence)
        var used = RangeSet<UInt64>()
        for run in analysis.runs { used.insert(contentsOf: run.blocks) }
        for segment in replay.metadataSegments + previousSegments where segment.length > 0 {
            used.insert(contentsOf: ExtentReferenceChanges.blocks(offset: segment.start, length: segment.length))
        }
        // Files no name reaches (a checkpoint written while a file unlinked while open was
        // still open holds it): their blocks are claimed too, so the first commit releases
        // them and the second punches them, as format 1's open frees them. The analysis
        // checks only reachable files' pieces: one outside the space is left out.
        let spaceEnd = capacityBytes >> BackingStore.blockShift
        for (number, file) in replay.files where !analysis.reachable.contains(number) {
            for piece in file.pieceList {
                guard case .mmapOffload(let offset, let size) = piece.extent, size > 0,
                      case (let end, false) = offset.addingReportingOverflow(size),
                      end <= spaceEnd << BackingStore.blockShift else { continue }
                used.insert(contentsOf: ExtentReferenceChanges.blocks(offset: offset, length: size))
            }
        }
        used.remove(contentsOf: 0..<Self.firstSpaceBlock)
        try volume.space.claimData(used)
        // As replay's claims: the first commit's extents take them, the rest is released.
        volume.replayClaims = used
        let inodes = analysis.reachable.sorted()
        progress?.began(.recording)
        let ticket = volume.delta.join()
        do {
            defer { volume.delta.leave(ticket) }
            for (done, inode) in inodes.enumerated() {
                if let progress, progress.isDue(done) { progress.report(done, inodes.count) }
                try volume.delta.record(try changes(of: inode, replay, analysis), in: ticket)
            }
        }
        try volume.commit(progress: progress)
        try volume.commit(progress: progress)
        return volume
    }

    /// Format 2's changes stating inode `number` of a format 1 tree: its attributes, the
    /// names in it (a directory: indexes 3, 4, ... in name order), its xattrs, its symlink
    /// target, its file bytes.
    static func changes(of number: UInt64, _ replay: ImageReplay, _ analysis: ImageAnalysis) throws(FSError) -> [JournalChange] {
        guard let record = replay.inodes[number] else { throw .damagedImage("inode \(number) is reachable but has no record") }
        let entries = (replay.entries[number] ?? [:]).sorted { $0.key.lexicographicallyPrecedes($1.key) }
        let file = replay.files[number]
        let size: UInt64
        switch record.type {
        case 8: size = file?.size ?? 0
        case 10: size = UInt64(record.symlinkTarget.count)
        default: size = 0
        }
        let item = InodeItem(type: record.type, permissions: record.permissions, uid: record.uid, gid: record.gid,
                             linkCount: analysis.linkCounts[number] ?? record.linkCount, size: size, rdev: record.rdev,
                             accessTime: record.accessTime, modificationTime: record.modificationTime,
                             changeTime: record.changeTime, birthTime: record.birthTime,
                             // The parent the names give (format 1's restore takes it so
                             // too; the record's own field is not checked by the analysis).
                             parent: record.type == 4 ? (analysis.parents[number] ?? record.parent) : 0,
                             nextIndex: record.type == 4 ? 3 + UInt64(entries.count) : 0)
        var changes: [JournalChange] = [.attributes(inode: number, item)]
        for (position, entry) in entries.enumerated() {
            guard let child = replay.inodes[entry.value] else {
                throw .damagedImage("entry '\(String(decoding: entry.key, as: UTF8.self))' of directory \(number) names inode \(entry.value), which has no record")
            }
            changes.append(.link(directory: number, NamedEntry(name: entry.key, child: entry.value, type: child.type,
                                                               index: 3 + UInt64(position))))
        }
        // Names format 1's mount drops as it loads them (its namespace stores no other), so
        // no upgraded item holds one that does not decode.
        for xattr in record.xattrs where XattrItem.isStoredName(xattr.name) {
            changes.append(.setXattr(inode: number, name: xattr.name, value: xattr.value))
        }
        if record.type == 10, !record.symlinkTarget.isEmpty { changes.append(.symlinkTarget(inode: number, record.symlinkTarget)) }
        if let file, file.size > 0 {
            changes.append(.fileRange(inode: number, FileChange(size: file.size, range: 0..<file.size, pieces: file.pieceList)))
        }
        return changes
    }
}
