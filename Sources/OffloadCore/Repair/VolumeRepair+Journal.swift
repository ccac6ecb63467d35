/// Repair of an image whose last commit checks clean and whose journal tail does not
/// replay into a clean tree (docs/ARCHITECTURE.md, "fsck checks the tree the replay
/// leaves"): the replay made the image's, whole or up to the first frame that fails, as
/// a mount (or a crash right after those frames) would leave it.
extension VolumeRepair {
    /// Opens the image replaying the first `frames` journal frames after its commit (all:
    /// `.max`) and closes it, as a mount and an unmount would: the replay is the image's
    /// (crash-safe as a mount's opening commit is), the rest of the journal let go.
    /// Returns the slots after it.
    static func replayFirst(_ storage: any ImageStorage, frames: Int,
                            progress: VolumeCheck.Progress?) throws(FSError) -> (current: CommitSlot, previous: CommitSlot?) {
        progress?("replaying the journal", 0, 0)
        let volume = try TreeVolume.open(storage, replayingAtMost: frames)
        if let failure = volume.failure { throw failure }
        try volume.close()
        return try CommitSlots.read(storage)
    }

    /// The files the journal's frames after `slot`'s commit change, past the first
    /// `kept` of them: what a replay of only those leaves out. A name's change is its
    /// child's (a name made for an inode no kept frame makes is named by its directory and
    /// name); every other change is its inode's. Reads the chain again: its frames, one
    /// at a time, are not held.
    static func leftOutChanges(_ storage: any ImageStorage, _ slot: CommitSlot, keeping kept: Int) -> [FileChange] {
        var seen = 0
        // By inode, in the order first met; the first name a left-out change gave it.
        var order: [UInt64] = []
        var madeAs: [UInt64: (directory: UInt64, name: [UInt8])?] = [:]
        func note(_ inode: UInt64, _ name: (directory: UInt64, name: [UInt8])?) {
            if let known = madeAs[inode] {
                if known == nil, let name { madeAs[inode] = name }
            } else {
                order.append(inode)
                madeAs[inode] = name
            }
        }
        _ = SlotJournal(storage, slot) { frame, _ in
            guard case .success(let frame) = frame else { return false }
            guard frame.generation > slot.generation else { return true }
            seen += 1
            guard seen > kept else { return true }
            for change in frame.changes {
                switch change {
                case .link(let directory, let entry): note(entry.child, (directory, entry.name))
                case .unlink(_, let entry): note(entry.child, nil)
                default: note(change.object, nil)
                }
            }
            return true
        }
        return order.map { FileChange(inode: $0, what: .leftOut(madeAs: madeAs[$0] ?? nil, after: slot.generation)) }
    }
}
