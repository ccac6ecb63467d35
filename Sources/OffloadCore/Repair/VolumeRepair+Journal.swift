/// Repair of an image whose last commit checks clean and whose journal tail does not
/// replay into a clean tree (docs/ARCHITECTURE.md, "fsck checks the tree the replay
/// leaves"): the replay made the image's, whole or up to the first frame that fails, as
/// a mount (or a crash right after those frames) would leave it.
extension VolumeRepair {
    /// The journal's part of a repair, from `checked` (`VolumeCheck.runReplaying` of the
    /// image as it is now): a replay that works but leaves problems is made the image's
    /// (nothing the journal holds is lost; its tree is repaired after); one that fails
    /// keeps the frames before the first that fails and lets the rest go, and may leave a
    /// clean image (`repaired` true: `report.after` says so); when not even the commit
    /// opens without the journal, the commit is rebuilt after, the journal left out.
    /// Returns the files whose journaled changes were left out. Updates `slots`.
    static func takeJournal(_ storage: any ImageStorage, _ report: inout Report, checked: VolumeCheck.Report,
                            _ slots: inout (current: CommitSlot, previous: CommitSlot?), budgetBytes: Int,
                            progress: VolumeCheck.Progress?) throws(FSError) -> (leftOut: [FileChange], repaired: Bool) {
        let frames = checked.framesToReplay, generation = checked.generation
        switch checked.replay {
        case .checked:
            slots = try replayFirst(storage, frames: .max, progress: progress)
            report.repaired = true
            report.repairs.append("the journal's \(frames) operations after commit \(generation) replayed "
                                  + "(commit \(slots.current.generation))")
            return ([], false)
        case .failed(nil):
            return (leftOutChanges(storage, slots.current, keeping: 0), false)
        case .failed(let replayable?):
            let leftOut = leftOutChanges(storage, slots.current, keeping: replayable)
            slots = try replayFirst(storage, frames: replayable, progress: progress)
            report.repaired = true
            report.repairs.append("the journal's first \(replayable) of \(frames) operations after commit \(generation) "
                                  + "replayed (commit \(slots.current.generation)); the \(frames - replayable) from the first "
                                  + "whose replay fails on are left out")
            let after = try VolumeCheck.run(storage, budgetBytes: budgetBytes, progress: progress)
            guard !after.isClean else {
                report.after = after
                report.inodes = after.inodes
                return (leftOut, true)
            }
            return (leftOut, false)
        case .nothingToReplay, .notChecked:
            return ([], false)
        }
    }

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
        framesLeftOut(storage, chainOf: slot, after: slot.generation, keeping: kept).files
    }

    /// The frames of generations after `generation` in the chain `slot` names (and the
    /// chains it links on to), past the first `kept` of them: how many, the files they
    /// change (as `leftOutChanges`), and the chain's segments read. Stops at a frame that
    /// does not decode, as replay does.
    static func framesLeftOut(_ storage: any ImageStorage, chainOf slot: CommitSlot, after generation: UInt64,
                              keeping kept: Int) -> (frames: Int, files: [FileChange], segments: [LogSegment]) {
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
        let journal = SlotJournal(storage, slot) { frame, _ in
            guard case .success(let frame) = frame else { return false }
            guard frame.generation > generation else { return true }
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
        let files = order.map { FileChange(inode: $0, what: .leftOut(madeAs: madeAs[$0] ?? nil, after: generation)) }
        return (max(0, seen - kept), files, journal.segments)
    }
}
