extension VolumeRepair {
    /// An image file shorter than the capacity its current commit states: its end was cut
    /// off (a copy that did not finish, a `truncate`), and the mount refuses it
    /// (`TreeVolume`). Repair gives the file its length back first: the blocks past the
    /// cut read as zeros, as blocks never written do. Tree nodes there no longer read
    /// (the rest of the repair rebuilds around them, as around any damaged node); file
    /// bytes there are zeros now, and each file that had some is named (`files`).
    struct CutShortEnd {
        /// The line for the report.
        var repair: String
        var files: [FileChange]
    }

    /// Extends the image to the current commit's capacity when it is shorter, and finds
    /// the files whose extents reached past the cut, in the current commit and in the
    /// previous one (repair may fall back to it), reading each tree as repair does
    /// (`OldCommit`: the leaves under a node that was cut off are found through the
    /// block tree). A file may be named that the fall-back's journal then rewrote: more,
    /// never fewer. Nil when the image is not shorter, or when the capacity is not one a
    /// volume could have (the check reports that; nothing can be restored from it).
    static func restoreCutShortEnd(_ storage: any ImageStorage, _ slots: (current: CommitSlot, previous: CommitSlot?),
                                   progress: VolumeCheck.Progress?) throws(FSError) -> CutShortEnd? {
        let cut = storage.length, capacity = slots.current.capacityBytes
        guard capacity > cut, TreeVolume.isPossibleCapacity(capacity) else { return nil }
        do {
            try storage.setLength(capacity)
            try storage.sync()
        } catch {
            throw .damagedImage("the image file is \(cut) bytes, shorter than the \(capacity) bytes of capacity commit "
                                + "\(slots.current.generation) states (its end was cut off), and its length cannot be "
                                + "given back: \(error)")
        }
        var files: [FileChange] = []
        do {
            for slot in [slots.current, slots.previous].compactMap({ $0 })
            where slot.capacityBytes <= capacity && TreeVolume.isPossibleCapacity(slot.capacityBytes) {
                files += try OldCommit.read(storage, slot, cut: cut, progress: progress).cutOff
            }
        } catch {
            // Nothing repaired: the image as it was, its cut included.
            try? storage.setLength(cut)
            throw error
        }
        return CutShortEnd(repair: "the image file was \(cut) bytes, shorter than the \(capacity) bytes of capacity "
                                   + "commit \(slots.current.generation) states (its end was cut off): given its length "
                                   + "back, the \(capacity - cut) bytes past the cut read as zeros",
                           files: files)
    }

    /// The line for the journal frames the cut took, when the chain of the commit `slot`
    /// names ran into it: its frames there are gone, and so are the operations they held,
    /// answered after that commit. Which files those changed cannot be told (their frames
    /// are what named them), so none is named: the line says so. Read once the image has
    /// its length back (the blocks past the cut read as zeros, and the chain ends there).
    /// Nil when the chain ended before the cut, at a byte where no frame of the chain's next
    /// sequence number begins; and for a cleanly unmounted commit, after which nothing was
    /// answered (its chain is an empty segment, which may lie past the cut).
    static func journalPastTheCut(_ storage: any ImageStorage, _ slot: CommitSlot, cut: UInt64) -> String? {
        guard !slot.cleanlyUnmounted else { return nil }
        var whole = 0
        let journal = SlotJournal(storage, slot) { _, _ in
            whole += 1
            return true
        }
        guard let end = journal.endOffset else { return nil }
        let next = journal.nextSequence
        func lost(_ hedge: String) -> String {
            "operations answered after commit \(slot.generation) whose frames lay past the cut are lost\(hedge), and which "
                + "files they changed cannot be told (\(whole) frames before it read whole)"
        }
        if end >= cut {
            return "commit \(slot.generation)'s journal reaches the cut (it ends at byte \(end), the image file ended at "
                + "\(cut)): \(lost(", if there were any"))"
        }
        guard beginsFrame(storage, at: end, cut: cut, slot, sequence: next) else { return nil }
        return "commit \(slot.generation)'s journal frame \(next) at byte \(end) runs past the cut (the "
            + "image file ended at \(cut)): \(lost(""))"
    }

    /// True when the bytes at `offset` before `cut` begin a frame of `slot`'s journal with
    /// `sequence` that runs past the cut: a whole header whose payload does, or as much of
    /// a header as the cut left (magic, image id, stream, sequence; not the checksum).
    private static func beginsFrame(_ storage: any ImageStorage, at offset: UInt64, cut: UInt64, _ slot: CommitSlot,
                                    sequence: UInt64) -> Bool {
        let available = Int(min(cut - offset, UInt64(FrameHeader.size)))
        guard available > 0 else { return false }
        let bytes = storage.readBytes(at: offset, count: available)
        if available == FrameHeader.size {
            guard let (header, _) = bytes.withUnsafeBytes({ FrameHeader.decode($0) }) else { return false }
            return header.imageID == slot.imageID && header.stream == 0 && header.sequence == sequence
                && offset + UInt64(FrameHeader.size) + UInt64(header.length) > cut
        }
        // The header such a frame would have: magic, image id, stream and sequence are
        // known; its checksum, length and kind are not.
        var expected = ByteWriter(capacity: FrameHeader.size)
        FrameHeader.encode(imageID: slot.imageID, stream: 0, sequence: sequence, kind: .records,
                           payload: UnsafeRawBufferPointer(start: nil, count: 0), into: &expected)
        let known = [0..<4, 8..<32]
        return bytes.indices.allSatisfy { i in !known.contains { $0.contains(i) } || bytes[i] == expected.bytes[i] }
    }
}
