import OffloadCore

// rename(2) and renameat2(2) with RENAME_NOREPLACE and RENAME_EXCHANGE.
//
// The checks follow Linux's order: flags, both parents, the source name, the target
// name (RENAME_NOREPLACE: EEXIST), "same inode: nothing to do", the cycle rule (a
// directory may not move into itself or a descendant: EINVAL), then kind rules
// (directory over non-directory: ENOTDIR; non-directory over directory: EISDIR; over a
// non-empty directory: ENOTEMPTY). Everything lives in one filesystem, so EXDEV never happens.
//
// An existing target name keeps its readdir cookie and just points at the moved inode,
// so a listing in progress neither loses nor repeats that name. The source name's slot
// goes away, and a new name is appended.

extension NamespaceState {
    mutating func rename(parent: InodeNumber, name: FileName, newParent: InodeNumber,
                         newName: FileName, flags: RenameFlags, now: Timestamp) throws(FSError) -> StorageDisposal? {
        guard flags.subtracting([.noReplace, .exchange]).isEmpty else {
            throw .invalidArgument("unknown rename flags")
        }
        guard !flags.isSuperset(of: [.noReplace, .exchange]) else {
            throw .invalidArgument("RENAME_NOREPLACE and RENAME_EXCHANGE together")
        }
        let (sourceParent, sourceDirectory) = try table.directory(parent)
        let (targetParent, targetDirectory) = try table.liveDirectory(newParent)
        guard let source = sourceDirectory.entry(named: name) else { throw .notFound }
        let target = targetDirectory.entry(named: newName)
        let move = Move(sourceParent: sourceParent, sourceDirectory: sourceDirectory, name: name,
                        targetParent: targetParent, targetDirectory: targetDirectory, newName: newName)
        // Both names as entries, and every inode involved (or its drop).
        let involved = [sourceParent, targetParent] + [source.inode, target?.inode].compactMap { number in
            number.flatMap { try? table.inode($0) }
        }
        try reserveJournal(for: involved, extra: 2 * (21 + max(name.bytes.count, newName.bytes.count)) + 18)

        if flags.contains(.exchange) {
            guard let target else { throw .notFound }
            try exchange(move, source: source, target: target, now: now)
            return nil
        }
        guard let target else {
            try moveToFreeName(move, source: source, now: now)
            return nil
        }
        if flags.contains(.noReplace) { throw .exists }
        // Two names of one inode: rename(2) does nothing and succeeds.
        if target.inode == source.inode { return nil }
        return try replace(move, source: source, target: target, now: now)
    }

    /// The two directories and names one rename works on.
    struct Move {
        let sourceParent: Inode
        let sourceDirectory: Directory
        let name: FileName
        let targetParent: Inode
        let targetDirectory: Directory
        let newName: FileName
    }

    private mutating func moveToFreeName(_ move: Move, source: Directory.Entry, now: Timestamp) throws(FSError) {
        let inode = try table.inode(source.inode)
        if source.kind == .directory {
            try table.refuseCycle(moving: source.inode, into: move.targetParent.number)
            if move.targetParent !== move.sourceParent {
                guard move.targetParent.linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
            }
        }
        move.sourceDirectory.remove(move.name)
        move.targetDirectory.insert(move.newName, inode: source.inode, kind: source.kind)
        reparent(inode, from: move.sourceParent, to: move.targetParent)
        inode.markChanged(now)
        move.sourceParent.markModified(now)
        move.targetParent.markModified(now)
    }

    private mutating func replace(_ move: Move, source: Directory.Entry, target: Directory.Entry,
                                  now: Timestamp) throws(FSError) -> StorageDisposal? {
        let inode = try table.inode(source.inode)
        let replaced = try table.inode(target.inode)
        if source.kind == .directory {
            try table.refuseCycle(moving: source.inode, into: move.targetParent.number)
            guard let replacedDirectory = replaced.directory else { throw .notDirectory }
            guard replacedDirectory.isEmpty else { throw .notEmpty }
        } else if target.kind == .directory {
            throw .isDirectory
        }
        move.sourceDirectory.remove(move.name)
        move.targetDirectory.replace(move.newName, inode: source.inode, kind: source.kind)
        if replaced.kind == .directory {
            replaced.linkCount = 0
            move.targetParent.linkCount -= 1
        } else {
            replaced.linkCount -= 1
        }
        reparent(inode, from: move.sourceParent, to: move.targetParent)
        replaced.markChanged(now)
        inode.markChanged(now)
        move.sourceParent.markModified(now)
        move.targetParent.markModified(now)
        if let file = table.removeIfUnused(replaced) { return .free(file) }
        return nil
    }

    /// RENAME_EXCHANGE: both names must exist; they swap inodes. Each directory that
    /// changes parent is checked against cycles and link limits.
    private mutating func exchange(_ move: Move, source: Directory.Entry, target: Directory.Entry,
                                   now: Timestamp) throws(FSError) {
        let first = try table.inode(source.inode)
        let second = try table.inode(target.inode)
        if first === second { return }
        let crossesDirectories = move.sourceParent !== move.targetParent
        if crossesDirectories {
            if first.kind == .directory {
                try table.refuseCycle(moving: first.number, into: move.targetParent.number)
            }
            if second.kind == .directory {
                try table.refuseCycle(moving: second.number, into: move.sourceParent.number)
            }
            let limit = Namespace.maximumLinkCount
            if first.kind == .directory && second.kind != .directory {
                guard move.targetParent.linkCount < limit else { throw .tooManyLinks }
            }
            if second.kind == .directory && first.kind != .directory {
                guard move.sourceParent.linkCount < limit else { throw .tooManyLinks }
            }
        }
        move.sourceDirectory.replace(move.name, inode: second.number, kind: second.kind)
        move.targetDirectory.replace(move.newName, inode: first.number, kind: first.kind)
        reparent(first, from: move.sourceParent, to: move.targetParent)
        reparent(second, from: move.targetParent, to: move.sourceParent)
        first.markChanged(now)
        second.markChanged(now)
        move.sourceParent.markModified(now)
        move.targetParent.markModified(now)
    }

    /// A directory that moved: its ".." now names the new parent, which gains the link
    /// the old parent loses. Nothing to do for other kinds or within one directory.
    private func reparent(_ inode: Inode, from oldParent: Inode, to newParent: Inode) {
        guard let directory = inode.directory, oldParent !== newParent else { return }
        directory.parent = newParent.number
        oldParent.linkCount -= 1
        newParent.linkCount += 1
    }
}

extension Namespace {
    /// RENAME_WHITEOUT is format 2's alone: format 1 answers EINVAL (`context` unused).
    public func rename(parent: InodeNumber, name: FileName, newParent: InodeNumber,
                       newName: FileName, flags: RenameFlags, context: RequestContext) throws(FSError) {
        let freed = try state.withLock { (state) throws(FSError) -> StorageDisposal? in
            let involved = [parent, newParent]
                + [(parent, name), (newParent, newName)].compactMap { directory, entryName in
                    (try? state.table.directory(directory))?.directory.entry(named: entryName)?.inode
                }
            let freed = try state.rename(parent: parent, name: name, newParent: newParent, newName: newName,
                                         flags: flags, now: clock())
            // Record the outcome, whichever of the rename's cases it was: both names as
            // they are now, and every inode involved (attributes, or gone).
            var records: [MetadataRecord] = []
            for (directory, entryName) in [(parent, name), (newParent, newName)] {
                if let entry = (try? state.table.directory(directory))?.directory.entry(named: entryName) {
                    records.append(.entry(directory: directory.rawValue, name: entryName.bytes, child: entry.inode.rawValue))
                } else {
                    records.append(.removeEntry(directory: directory.rawValue, name: entryName.bytes))
                }
            }
            var seen = Set<InodeNumber>()
            for number in involved where seen.insert(number).inserted {
                records.append(state.table.existing(number)?.record ?? .drop(inode: number.rawValue))
            }
            state.log(records)
            return freed
        }
        freed?.run()
    }
}
