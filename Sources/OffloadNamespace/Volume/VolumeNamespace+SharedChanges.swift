import OffloadCore

// The changes that share the namespace lock and hold inode locks instead
// (docs/ARCHITECTURE.md, "Step 7, fifth part", "sixth part" and "seventh part"): the
// changes of names in one directory (`changingNames`: mkdir, mknod, symlink, create,
// unlink, rmdir, and the create that opens an existing name), renames within one
// directory or across two (`changingNamesOfARename`), and the changes of one or two
// inodes (`changingInodes`: setattr, setxattr, removexattr, link, open, release).
// Changes that take the same inode's lock take turns; the rest run at once.

extension VolumeNamespace {
    /// The inode locks a change sharing the namespace lock holds.
    enum InodeLockSet {
        /// A directory's, and the lock of the inode `naming` names in it, with that name's
        /// entry as looked up holding both (`withInodeLocks`).
        case names(in: UInt64, naming: FileName?)
        /// The locks of one or two inodes (the lower stripe first).
        case inodes(UInt64, UInt64?)
        /// The locks of directories `from` and `to` (one directory, or two), and of the
        /// inodes `source` in `from` and `target` in `to` name, as looked up holding them
        /// all (a rename).
        case renaming(from: UInt64, source: FileName, to: UInt64, target: FileName)
    }

    /// Runs a change of the names in directory `parent` with the namespace lock shared,
    /// holding the directory's inode lock and, when `naming` is given, the lock of the
    /// inode that name holds (docs/ARCHITECTURE.md, "Step 7, fifth part"): changes in
    /// different directories run at once, two in one directory take turns, and a file's
    /// data change (`journal`) waits for an unlink of that file's name. `body` gets the
    /// name's entry, looked up with both locks held; its changes are performed as one
    /// frame, and `after` runs with the locks still held (a create's `after` attaches the
    /// new file's journal and makes its handle, and its kernel reference is taken before an
    /// unlink of the name can decide the inode's fate). Then a journal or generation over
    /// its budget is committed, its generation closed with the lock held alone
    /// (`commitIfOverBudget`), as after a file's data change (`changingData`).
    ///
    /// What such a change may touch: the directory's entries and item, the named inode's
    /// item, orphan item, open count and handles, a new inode (its number from
    /// `nextInode`, unseen by any other operation until its frame is in the delta; a
    /// create adds its cached file and handle), and the kernel's references (leaf locks).
    /// The file cache's entries come and go under the cache's own lock: an eviction
    /// (`evictIfDone`) takes no inode lock, but only a closed, clean file, and finding a
    /// cached file and counting it open is one step (`cachedFile(opening:)`). Its frame
    /// takes no drops of forgotten inodes (`dropForgotten` decides with the lock held
    /// alone). A generation closes only with the namespace lock held alone, so the frame
    /// stays in the generation it joined.
    ///
    /// Nothing holding an inode lock reads a cached file's size (`attributes` of a file
    /// that may be open): the file's writer holds the file's lock while its frame waits
    /// for the inode's lock (`journal`). Such answers are read after the call.
    ///
    /// A change refused for want of space (journal room the changes of open files reserved
    /// meanwhile, or blocks) runs again with the lock held alone, as it ran before: a
    /// removal on a full image must not fail because writes were in flight.
    func changingNames<R, S>(in parent: UInt64, naming name: FileName? = nil,
                             _ body: (VolumeReader, NamedEntry?, inout VolumeOperation) throws(FSError) -> R,
                             then after: (R, VolumeReader) throws(FSError) -> S) throws(FSError) -> S {
        switch try changingShared(.names(in: parent, naming: name), preparingJournal: true, body, then: after) {
        case .done(let answer):
            return answer
        case .refusedForSpace:
            // Nothing was changed: the operation or its frame was refused before the frame
            // was recorded (a number the make took is skipped).
            return try changing({ (reader, operation) throws(FSError) -> R in
                let entry = try name.flatMap { (name) throws(FSError) -> NamedEntry? in
                    try reader.lookup(directory: parent, name: name.bytes)
                }
                return try body(reader, entry, &operation)
            }, then: after)
        }
    }

    /// Runs a change of inode `first`'s item (and `second`'s) with the namespace lock
    /// shared, holding their inode locks, as `changingNames` runs a change of names: a
    /// chmod, an xattr's change, an open or a close of one file runs beside those of other
    /// files and beside the changes of names in other directories, and takes turns with
    /// the changes of the same inode (its data's frames, an unlink of one of its names).
    /// `preparingJournal: false` leaves out the journal's pages made writable before the
    /// lock, for an operation that seldom writes a frame (a close).
    func changingInodes<R, S>(_ first: UInt64, _ second: UInt64? = nil, preparingJournal: Bool = true,
                              _ body: (VolumeReader, inout VolumeOperation) throws(FSError) -> R,
                              then after: (R, VolumeReader) throws(FSError) -> S) throws(FSError) -> S {
        let named = { (reader: VolumeReader, _: NamedEntry?, operation: inout VolumeOperation) throws(FSError) -> R in
            try body(reader, &operation)
        }
        switch try changingShared(.inodes(first, second), preparingJournal: preparingJournal, named, then: after) {
        case .done(let answer): return answer
        case .refusedForSpace: return try changing(preparingJournal: preparingJournal, body, then: after)
        }
    }

    /// Runs a rename of `source` in directory `parent` to `target` in `newParent` with the
    /// namespace lock shared, holding the directories' inode locks and those of the inodes
    /// both names hold (up to four stripes, ascending), as `changingNames` runs a change of
    /// one name: renames with no inode in common run at once, and beside the other
    /// changes. `body` looks the names up itself; under these locks it finds what they
    /// were taken for. A rename across directories also holds `renamesAcrossDirectories`
    /// (the kernel's `s_vfs_rename_mutex`) from before the namespace lock until its frame
    /// is written: its cycle check walks the parents of `newParent` up to the root,
    /// holding none of their locks, and only such a rename changes a directory's parent.
    func changingNamesOfARename(from parent: UInt64, _ source: FileName, to newParent: UInt64, _ target: FileName,
                                _ body: (VolumeReader, inout VolumeOperation) throws(FSError) -> Void) throws(FSError) {
        let locks = InodeLockSet.renaming(from: parent, source: source, to: newParent, target: target)
        func rename() throws(FSError) {
            let named = { (reader: VolumeReader, _: NamedEntry?, operation: inout VolumeOperation) throws(FSError) in
                try body(reader, &operation)
            }
            switch try changingShared(locks, preparingJournal: true, named, then: { (_, _) throws(FSError) in }) {
            case .done: return
            case .refusedForSpace: try changing(body)
            }
        }
        if parent == newParent { return try rename() }
        try renamesAcrossDirectories.withLock(rename)
    }

    /// `changingInodes` with nothing to do after the frame.
    func changingInodes<R>(_ first: UInt64, _ second: UInt64? = nil, preparingJournal: Bool = true,
                           _ body: (VolumeReader, inout VolumeOperation) throws(FSError) -> R) throws(FSError) -> R {
        try changingInodes(first, second, preparingJournal: preparingJournal, body) { (result, _) throws(FSError) -> R in result }
    }

    /// How `changingShared` ended: answered, or its frame refused with ENOSPC for want of
    /// journal room (nothing changed; it runs again with the lock held alone). A change
    /// whose own checks answer ENOSPC (an xattr past its limits) throws it.
    private enum ChangeOutcome<S> {
        case done(S)
        case refusedForSpace
    }

    private func changingShared<R, S>(_ locks: InodeLockSet, preparingJournal: Bool,
                                      _ body: (VolumeReader, NamedEntry?, inout VolumeOperation) throws(FSError) -> R,
                                      then after: (R, VolumeReader) throws(FSError) -> S) throws(FSError) -> ChangeOutcome<S> {
        if preparingJournal { volume.prepareJournalAppend() }
        let outcome = try sharing { () throws(FSError) -> ChangeOutcome<S> in
            let taken = try readers.take()
            defer { readers.give(taken) }
            let reader = taken.reader
            let outcome = try withInodeLocks(locks, reader) { (entry) throws(FSError) -> ChangeOutcome<S> in
                var operation = VolumeOperation()
                let result: R
                do throws(FSError) {
                    result = try body(reader, entry, &operation)
                } catch {
                    // The change's own answer (ENOSPC too: an xattr past its limits).
                    restoreDroppedFiles(&operation)
                    throw error
                }
                do throws(FSError) {
                    try writeFrame(&operation, reader, dropsForgotten: false)
                } catch {
                    restoreDroppedFiles(&operation)
                    if case .noSpace = error { return .refusedForSpace }
                    throw error
                }
                return .done(try after(result, reader))
            }
            // A change whose frame could not be written is not answered as done.
            if let journalFailure { throw journalFailure }
            return outcome
        }
        commitIfOverBudget()
        return outcome
    }

    /// Runs `body` holding the inode locks `locks` names. For a name, the named inode's
    /// lock joins the directory's in ascending stripe order: one above the directory's is
    /// taken at once; one below it means letting go and taking both, and looking the name
    /// up again, since it may name another inode by then.
    private func withInodeLocks<T>(_ locks: InodeLockSet, _ reader: VolumeReader,
                                   _ body: (NamedEntry?) throws(FSError) -> T) throws(FSError) -> T {
        switch locks {
        case .inodes(let first, let second):
            let held = second.map { inodeLocks.lock(first, $0) } ?? inodeLocks.lock(first)
            defer { inodeLocks.unlock(held) }
            return try body(nil)
        case .names(let parent, let name):
            var held = inodeLocks.lock(parent)
            defer { inodeLocks.unlock(held) }
            guard let name else { return try body(nil) }
            var entry = try reader.lookup(directory: parent, name: name.bytes)
            while let found = entry, !held.covers(found.child) {
                if held.second == nil && InodeLocks.stripe(found.child) > held.highest {
                    inodeLocks.extend(&held, with: found.child)
                } else {
                    inodeLocks.unlock(held)
                    held = inodeLocks.lock(parent, found.child)
                    entry = try reader.lookup(directory: parent, name: name.bytes)
                }
            }
            return try body(entry)
        case .renaming(let parent, let source, let newParent, let target):
            var held = parent == newParent ? inodeLocks.lock(parent) : inodeLocks.lock(parent, newParent)
            defer { inodeLocks.unlock(held) }
            while true {
                let moved = try reader.lookup(directory: parent, name: source.bytes)?.child
                let replaced = try reader.lookup(directory: newParent, name: target.bytes)?.child
                if moved.map(held.covers) ?? true, replaced.map(held.covers) ?? true { return try body(nil) }
                inodeLocks.unlock(held)
                held = inodeLocks.lock(parent, newParent, moved, replaced)
            }
        }
    }
}
