#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

// Names on format 2: lookup, forget, mknod, mkdir, symlink, readlink, link, unlink, rmdir.
// Each success that returns attributes hands the kernel one reference.

extension VolumeNamespace {
    /// The name is looked up first: only a directory holds names, so a name found answers
    /// for its parent, and the parent's item is read only to tell why a name is missing
    /// (ENOENT, ENOTDIR, ESTALE). A cold lookup in a large tree read three leaves (the
    /// parent's item, the name, the child's item) before, two now.
    public func lookup(parent: InodeNumber, name: FileName) throws(FSError) -> Attributes {
        try reading { (reader) throws(FSError) -> Attributes in
            guard let entry = try reader.lookup(directory: parent.rawValue, name: name.bytes) else {
                _ = try directory(parent.rawValue, in: reader)
                throw .notFound
            }
            let attributes = try attributes(entry.child, try item(entry.child, in: reader), reader)
            referenced(entry.child)
            return attributes
        }
    }

    /// Gives back `lookups` references; an inode with no name left goes with the last one.
    /// The count drops without the namespace lock, and the common case, an inode that
    /// still has a name, ends there, with nothing read (`KernelReferences`). A nameless
    /// inode's drop waits for the next frame an operation writes (`dropForgotten`): an
    /// `rm` is an unlink and, a moment later, its FORGET, and each FORGET's frame of its
    /// own was a second hold of the lock alone and a second frame for every file removed.
    /// Drops wait for at most `forgottenBatch` FORGETs, the maintenance's next tick, a
    /// statfs or the unmount, whichever comes first (`dropForgottenNow`). An orphan that
    /// a crash keeps is dropped at the next mount, as before: no frame waits for it.
    public func forget(inode number: InodeNumber, lookups: UInt64) {
        guard kernelReferences.forget(number.rawValue, lookups: lookups, batch: Self.forgottenBatch),
              number != .root else { return }
        dropForgottenNow()
    }

    /// FORGETs whose drops wait at most for a frame of their own (each drop is two changes).
    static let forgottenBatch = 64

    /// Before a data change refused for space runs again after a reclaim (no namespace
    /// lock held): waits for the FORGETs of the files an `rm` just unlinked, 200 ms at most
    /// (`FileDataRules.forgetWaitNanoseconds`). A regular file with bytes unlinked while the kernel referenced it keeps
    /// its data until its last FORGET (`state`); for `rm big && echo > small` the kernel
    /// sends it as the unlink's syscall ends, before the next request, but the daemon's
    /// thread that reads it may not have counted it yet. Waited for: such files with no
    /// handle, not waited for by an earlier refusal (an `O_PATH` descriptor or a process's
    /// working directory keeps a reference for as long as it likes, and ext4 keeps such a
    /// file's blocks too: each refused change waited for it again before).
    func awaitForgetsOfUnlinkedFiles() {
        let marked = kernelReferences.unlinkedInodes()
        let waitedBefore = forgetsWaitedFor.withLock { waited in
            waited.formIntersection(marked)
            return waited
        }
        let candidates = marked.filter { number in
            !waitedBefore.contains(number) && fileCache.changing(number) { ($0.files[number]?.openCount ?? 0) == 0 }
        }
        guard !candidates.isEmpty, let taken = try? readers.take() else { return }
        let waiting = candidates.filter { number in
            guard let item = try? taken.reader.inode(number) else { return false }
            // A mark is a superset (an operation that failed after marking leaves one).
            return item.linkCount == 0 && item.type == Self.typeCode(.regular) && item.size > 0
        }
        readers.give(taken)
        guard !waiting.isEmpty else { return }
        let deadline = MonotonicClock.nanoseconds() &+ FileDataRules.forgetWaitNanoseconds
        while waiting.contains(where: kernelReferences.isReferenced), MonotonicClock.nanoseconds() < deadline {
            usleep(500)
        }
        forgetsWaitedFor.withLock { $0.formUnion(waiting.filter(kernelReferences.isReferenced)) }
    }

    /// The drops of the inodes forgotten so far, in a frame of their own (caller holds
    /// the lock alone): before a reclaim's commits, which then make their blocks
    /// reusable.
    func writeForgottenDrops() {
        guard kernelReferences.hasForgotten, let taken = try? readers.take() else { return }
        defer { readers.give(taken) }
        var operation = VolumeOperation()
        let dropped = dropForgotten(taken.reader, into: &operation)
        guard !dropped.isEmpty else { return }
        do throws(FSError) {
            try writeFrame(&operation, taken.reader, dropsForgotten: false)
        } catch {
            // They wait for the next frame, as any drop whose frame fails.
            kernelReferences.giveBack(dropped)
        }
    }

    /// Writes the drops of the inodes forgotten so far in a frame of their own, when any
    /// can go, with the namespace lock shared (docs/ARCHITECTURE.md, "Step 7, seventh
    /// part"), holding the forgotten inodes' locks (`InodeLocks.lock(all:)`, ascending;
    /// about `forgottenBatch` of them, more when the drops of a failed frame wait too):
    /// what a drop changes is the inode's own (its items, its orphan item, its cached
    /// file) and the leaves, as a last close's drop. Before, the frame held the lock
    /// alone, every `forgottenBatch` FORGETs, and every change waited for it. A forgotten
    /// inode is one the kernel references no more, so nothing asks for it meanwhile; each
    /// is decided again under its lock with a reader taken after (`drops(of:)`). Drops
    /// whose frame fails wait for the next one.
    func dropForgottenNow() {
        guard kernelReferences.hasForgotten else { return }
        volume.prepareJournalAppend()
        _ = try? sharing { () throws(FSError) in
            let forgotten = kernelReferences.takeForgotten()
            guard !forgotten.isEmpty else { return }
            let held = inodeLocks.lock(all: forgotten)
            defer { inodeLocks.unlock(all: held) }
            let taken: (reader: VolumeReader, open: UInt64)
            do throws(FSError) {
                taken = try readers.take()
            } catch {
                // No FORGET brings them back: they wait for the next frame.
                kernelReferences.giveBack(forgotten)
                throw error
            }
            defer { readers.give(taken) }
            var operation = VolumeOperation()
            let dropped = drops(of: forgotten, taken.reader, into: &operation)
            do throws(FSError) {
                try writeFrame(&operation, taken.reader, dropsForgotten: false)
            } catch {
                kernelReferences.giveBack(dropped)
                throw error
            }
        }
        commitIfOverBudget()
    }

    /// Appends the drops of the inodes forgotten since the last frame to the frame being
    /// made, and returns those inodes (`drops(of:)`). Caller holds the lock alone.
    func dropForgotten(_ reader: VolumeReader, into operation: inout VolumeOperation) -> [UInt64] {
        let forgotten = kernelReferences.takeForgotten()
        guard !forgotten.isEmpty else { return [] }
        return drops(of: forgotten, reader, into: &operation)
    }

    /// Appends the drops of `forgotten` to the frame being made, and returns the inodes
    /// dropped. Each is looked at again, as its FORGET would have: an inode the kernel
    /// references again, one with a name or without an item, or one still open, is not
    /// dropped (the last close drops an open one). One the frame's operation changes
    /// waits for the next frame: `reader` does not see this frame, and an unlink or
    /// rename that marked it unlinked while its FORGET came would still show its name
    /// there (a reply that failed makes the bridge FORGET from another thread). One whose
    /// items cannot be read is left as an orphan, which the next mount drops. Caller holds
    /// the lock alone, or shared with the locks of every inode in `forgotten`.
    private func drops(of forgotten: [UInt64], _ reader: VolumeReader, into operation: inout VolumeOperation) -> [UInt64] {
        let own = operation.changes.count
        var dropped: [UInt64] = [], later: [UInt64] = []
        for number in forgotten where !dropped.contains(number) {
            guard !operation.changes[..<own].contains(where: { $0.mentions(number) }) else {
                later.append(number)
                continue
            }
            let item: InodeItem?, hadOrphan: Bool
            do throws(FSError) {
                item = try reader.inode(number)
                hadOrphan = try reader.orphan(number) != nil
            } catch {
                continue
            }
            guard let item, item.linkCount == 0 else {
                // A mark left by an operation that failed after making it, or of an inode
                // gone already.
                kernelReferences.clearUnlinked(number)
                continue
            }
            guard fileCache.changing(number, { ($0.files[number]?.openCount ?? 0) == 0 }) else { continue }
            state(number, item, hadOrphan: hadOrphan, into: &operation)
            dropped.append(number)
        }
        kernelReferences.giveBack(later, atEnd: true)
        return dropped
    }

    public func getattr(inode number: InodeNumber) throws(FSError) -> Attributes {
        try reading { (reader) throws(FSError) -> Attributes in
            try attributes(number.rawValue, try item(number.rawValue, in: reader), reader)
        }
    }

    public func readlink(inode number: InodeNumber) throws(FSError) -> [UInt8] {
        try reading { (reader) throws(FSError) -> [UInt8] in
            guard try item(number.rawValue, in: reader).type == Self.typeCode(.symlink),
                  let target = try reader.symlinkTarget(number.rawValue) else {
                throw .invalidArgument("not a symbolic link")
            }
            return target
        }
    }

    /// Regular files (empty: their data is the next step), FIFOs, sockets and device
    /// nodes, as format 1's `mknod`.
    public func mknod(parent: InodeNumber, name: FileName, mode: UInt32, rdev: UInt64,
                      context: RequestContext) throws(FSError) -> Attributes {
        let (kind, rdev) = try NewInodeArguments.mknod(mode: mode, rdev: rdev)
        return try makeNode(parent: parent, name: name, kind: kind, permissions: mode, rdev: rdev, target: nil, context: context)
    }

    public func mkdir(parent: InodeNumber, name: FileName, mode: UInt32,
                      context: RequestContext) throws(FSError) -> Attributes {
        try makeNode(parent: parent, name: name, kind: .directory, permissions: mode, rdev: 0, target: nil, context: context)
    }

    public func symlink(parent: InodeNumber, name: FileName, target: [UInt8],
                        context: RequestContext) throws(FSError) -> Attributes {
        try NewInodeArguments.checkSymlinkTarget(target)
        return try makeNode(parent: parent, name: name, kind: .symlink, permissions: 0o777, rdev: 0, target: target,
                            context: context)
    }

    /// A new inode under `parent`/`name`: its attributes, its name at the parent's next
    /// index, the parent's new attributes, its target and inherited ACLs, in one frame.
    /// Changes names in `parent` alone (`changingNames`): makes in different directories
    /// run at once.
    private func makeNode(parent: InodeNumber, name: FileName, kind: FileKind, permissions: UInt32, rdev: UInt64,
                          target: [UInt8]?, context: RequestContext) throws(FSError) -> Attributes {
        try changingNames(in: parent.rawValue) { (reader, _, operation) throws(FSError) -> (number: UInt64, item: InodeItem) in
            try newNode(parent: parent, name: name, kind: kind, permissions: permissions, rdev: rdev, target: target,
                        context: context, reader, &operation)
        } then: { (made, reader) throws(FSError) -> Attributes in
            // Counted once the attributes are read: a read that throws answers the
            // request with the error, and the kernel forgets no reference it never got.
            let attributes = try attributes(made.number, made.item, reader)
            referenced(made.number)
            return attributes
        }
    }

    /// The default ACL of `directory`, remembering its absence
    /// (`directoriesWithoutDefaultACLHolder`). Caller holds the lock, or shares it with the
    /// directory's inode lock, which a default ACL's setxattr holds too.
    func defaultACL(of directory: UInt64, _ reader: VolumeReader) throws(FSError) -> [UInt8]? {
        if directoriesWithoutDefaultACLHolder.withLock({ $0.contains(directory) }) {
            // A read that fails is not this check's to report.
            assert((try? reader.xattr(directory, name: PosixACL.defaultName)) == nil, "directory \(directory) has a default ACL")
            return nil
        }
        let value = try reader.xattr(directory, name: PosixACL.defaultName)
        if value == nil {
            directoriesWithoutDefaultACLHolder.withLock { known in
                if known.count >= Self.maximumDirectoriesWithoutDefaultACL { known.removeAll() }
                known.insert(directory)
            }
        }
        return value
    }

    /// The changes that make a new inode under `parent`/`name`, appended to `changes`,
    /// and the inode's number and item. The name must not exist (EEXIST); a caller that
    /// has just looked it up with `reader` says so (`nameLookedUp`), and it is not looked up again.
    func newNode(parent: InodeNumber, name: FileName, kind: FileKind, permissions: UInt32, rdev: UInt64,
                 target: [UInt8]?, context: RequestContext, _ reader: VolumeReader,
                 _ operation: inout VolumeOperation, nameLookedUp: Bool = false) throws(FSError) -> (number: UInt64, item: InodeItem) {
        var parentItem = try liveDirectory(parent.rawValue, in: reader)
        if !nameLookedUp {
            guard try reader.lookup(directory: parent.rawValue, name: name.bytes) == nil else { throw .exists }
        }
        if kind == .directory {
            guard parentItem.linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
        }
        let start = NewInodeStart(kind: kind, requested: permissions, parentPermissions: parentItem.permissions,
                                  parentGID: parentItem.gid, parentDefaultACL: try defaultACL(of: parent.rawValue, reader),
                                  context: context)
        let now = clock().record
        let index = try parentItem.takeEntryIndex(of: parent.rawValue)
        // Taken last, once nothing can refuse the operation but its frame.
        let number = try takeInodeNumber()
        let item = InodeItem(type: Self.typeCode(kind), permissions: start.permissions, uid: context.uid, gid: start.gid,
                             linkCount: kind == .directory ? 2 : 1, size: UInt64(target?.count ?? 0), rdev: rdev,
                             accessTime: now, modificationTime: now, changeTime: now, birthTime: now,
                             parent: kind == .directory ? parent.rawValue : 0, nextIndex: kind == .directory ? 3 : 0)
        if kind == .directory { parentItem.linkCount += 1 }
        parentItem.modificationTime = now
        parentItem.changeTime = now
        // One at a time into room for them all (a drop may follow): `+= [...]` makes and
        // frees an array of its own. Here, not in `changing`: an operation that changes
        // nothing allocates nothing.
        // The new inode whole before its name: a reader (no namespace lock, `reading`)
        // that finds the name (a frame is recorded change by change) finds its item,
        // target and ACLs.
        operation.changes.reserveCapacity(operation.changes.count + 4)
        operation.changes.append(.attributes(inode: number, item))
        if let target { operation.changes.append(.symlinkTarget(inode: number, target)) }
        if let access = start.accessACL { operation.changes.append(.setXattr(inode: number, name: PosixACL.accessName, value: access)) }
        if let inherited = start.defaultACL { operation.changes.append(.setXattr(inode: number, name: PosixACL.defaultName, value: inherited)) }
        operation.changes.append(.link(directory: parent.rawValue, NamedEntry(name: name.bytes, child: number, type: item.type, index: index)))
        operation.changes.append(.attributes(inode: parent.rawValue, parentItem))
        operation.born = number
        return (number, item)
    }

    /// The number of a new inode: ENOSPC once the numbers run into the reserved objects
    /// (a commit slot's next number is below them), as ext4 answers with no free inode.
    /// A damaged image's slot may say a number close to them.
    func takeInodeNumber() throws(FSError) -> UInt64 {
        var number = nextInode.load(ordering: .relaxed)
        while true {
            guard number < ReservedObject.firstReserved - 1 else { throw .noSpace }
            let (exchanged, original) = nextInode.compareExchange(expected: number, desired: number + 1, ordering: .relaxed)
            if exchanged { return number }
            number = original
        }
    }

    /// A hard link. Directories cannot be linked (EPERM), an unlinked file cannot get a
    /// name again (ENOENT), more than `maximumLinkCount` names is EMLINK. Holds the new
    /// directory's lock and the inode's, the namespace lock shared (`changingInodes`):
    /// both items change, and the name is added under the lock every change of the
    /// directory's names holds. The answer's attributes are read after.
    public func link(inode number: InodeNumber, newParent: InodeNumber, newName: FileName) throws(FSError) -> Attributes {
        let linked = try changingInodes(number.rawValue, newParent.rawValue) { (reader, operation) throws(FSError) -> InodeItem in
            var item = try item(number.rawValue, in: reader)
            guard item.type != Self.typeCode(.directory) else { throw .notPermitted }
            var parentItem = try liveDirectory(newParent.rawValue, in: reader)
            guard try reader.lookup(directory: newParent.rawValue, name: newName.bytes) == nil else { throw .exists }
            guard item.linkCount > 0 else { throw .notFound }
            guard item.linkCount < Namespace.maximumLinkCount else { throw .tooManyLinks }
            let now = clock().record
            item.linkCount += 1
            item.changeTime = now
            let index = try parentItem.takeEntryIndex(of: newParent.rawValue)
            parentItem.modificationTime = now
            parentItem.changeTime = now
            operation.changes = [
                .link(directory: newParent.rawValue, NamedEntry(name: newName.bytes, child: number.rawValue, type: item.type, index: index)),
                .attributes(inode: number.rawValue, item), .attributes(inode: newParent.rawValue, parentItem),
            ]
            return item
        } then: { (item, _) throws(FSError) -> InodeItem in
            // Before an unlink of the name can decide the inode's fate.
            referenced(number.rawValue)
            return item
        }
        do {
            return try reading { (reader) throws(FSError) -> Attributes in try attributes(number.rawValue, linked, reader) }
        } catch {
            // The kernel does not get the reference with an error.
            forget(inode: number, lookups: 1)
            throw error
        }
    }

    /// Changes names in `parent` alone, with the unlinked inode's lock (`changingNames`).
    public func unlink(parent: InodeNumber, name: FileName) throws(FSError) {
        try changingNames(in: parent.rawValue, naming: name) { (reader, entry, operation) throws(FSError) in
            var parentItem = try directory(parent.rawValue, in: reader)
            guard let entry else { throw .notFound }
            guard entry.type != Self.typeCode(.directory) else { throw .isDirectory }
            var item = try item(entry.child, in: reader)
            guard item.linkCount > 0 else { throw .io("a named inode has no links") }
            let now = clock().record
            item.linkCount -= 1
            item.changeTime = now
            parentItem.modificationTime = now
            parentItem.changeTime = now
            operation.changes = [.unlink(directory: parent.rawValue, entry), .attributes(inode: parent.rawValue, parentItem)]
            state(entry.child, item, hadOrphan: false, into: &operation)
        } then: { (_, _) throws(FSError) in }
    }

    /// Removes an empty directory: its link count becomes 0 and the parent loses the
    /// link its ".." held. Changes names in `parent` alone, with the removed directory's
    /// lock, which every change of names in it holds too (`changingNames`).
    public func rmdir(parent: InodeNumber, name: FileName) throws(FSError) {
        try changingNames(in: parent.rawValue, naming: name) { (reader, entry, operation) throws(FSError) in
            var parentItem = try directory(parent.rawValue, in: reader)
            guard let entry else { throw .notFound }
            guard entry.type == Self.typeCode(.directory) else { throw .notDirectory }
            var item = try directory(entry.child, in: reader)
            guard try reader.entries(directory: entry.child, from: 3, limit: 1).isEmpty else { throw .notEmpty }
            let now = clock().record
            item.linkCount = 0
            item.changeTime = now
            parentItem.linkCount -= 1
            parentItem.modificationTime = now
            parentItem.changeTime = now
            operation.changes = [.unlink(directory: parent.rawValue, entry), .attributes(inode: parent.rawValue, parentItem)]
            state(entry.child, item, hadOrphan: false, into: &operation)
        } then: { (_, _) throws(FSError) in }
    }
}


extension InodeItem {
    /// Takes directory `directory`'s next entry number for a new name: ENOSPC when it has
    /// none left (2^64 - 4 names made in it: the last number is none), EIO when its item
    /// says one no entry may have (below 3, a damaged image's; fsck reports it).
    mutating func takeEntryIndex(of directory: UInt64) throws(FSError) -> UInt64 {
        guard nextIndex >= 3 else { throw .damagedImage("directory \(directory): its next entry number \(nextIndex) is below 3") }
        guard nextIndex < UInt64.max else { throw .noSpace }
        defer { nextIndex += 1 }
        return nextIndex
    }
}
