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
}
