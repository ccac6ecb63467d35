#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

/// The namespace of a format 2 image (docs/ARCHITECTURE.md, "Steps" 4d): names,
/// attributes, directories and xattrs read from the volume's layered view (the delta's
/// generations over the committed tree) and changed by one journal frame per operation,
/// with no copy of the tree in memory. Files' data (open, read, write) is the next step;
/// until then this is not a `FileSystemOperations`.
///
/// What it keeps in memory: the kernel's lookup counts of the inodes it references and
/// the open directory handles. Every answer comes from the layered view, which holds
/// every answered operation at once; the kernel's caches sit in front of it.
///
/// The POSIX rules are format 1's (`Namespace`): the same errors in the same order, the
/// same timestamps, the same ownership and ACLs of new inodes (`NewInodeRules`), an
/// inode that loses its last name living on while the kernel references it (an orphan
/// item, dropped at the last FORGET).
///
/// Locking: one lock (`lock`) around every operation, as format 1's namespace lock (the
/// request path's locks are step 7); inside it the volume's locks.
public final class VolumeNamespace: @unchecked Sendable {
    let volume: TreeVolume
    let clock: @Sendable () -> Timestamp
    let lock = PthreadLock()
    // Guarded by `lock`:
    /// References the kernel holds, by inode (absent: none).
    var lookupCounts: [UInt64: UInt64] = [:]
    /// Open directory handles and the inode each is for.
    var directoryHandles: [UInt64: UInt64] = [:]
    var nextHandle: UInt64 = 1
    /// The number the next new inode gets.
    var nextInode: UInt64

    /// The namespace of `volume`; a volume without a root gets one (mode 0755, owned by the
    /// user running the daemon, as format 1's new images). Inodes a crash or an unmount
    /// left unlinked while open (orphan items) are dropped: nothing references them in a
    /// new mount. (Drops larger than a commit's budget carry on by themselves, under their
    /// dropping orphan items.)
    public init(volume: TreeVolume, clock: @escaping @Sendable () -> Timestamp = Namespace.systemClock) throws(FSError) {
        self.volume = volume
        self.clock = clock
        nextInode = max(2, volume.current.nextInode)
        for (number, orphan) in try volume.reader().orphans() where orphan.state != .dropping {
            try volume.perform([.orphan(inode: number, nil), .drop(inode: number)])
        }
        if try volume.reader().inode(1) == nil {
            let now = clock().record
            try volume.perform([.attributes(inode: 1, InodeItem(
                type: Self.typeCode(.directory), permissions: 0o755, uid: UInt32(getuid()), gid: UInt32(getgid()),
                linkCount: 2, size: 0, rdev: 0, accessTime: now, modificationTime: now, changeTime: now,
                birthTime: now, parent: 1, nextIndex: 3))])
        }
    }

    // MARK: - Reading

    /// The inode's item; `.staleInode` when it has none (as format 1 answers an inode
    /// number it does not know).
    func item(_ number: UInt64, in reader: VolumeReader) throws(FSError) -> InodeItem {
        guard let item = try reader.inode(number) else { throw .staleInode }
        return item
    }

    /// A directory's item: `.notDirectory` for another kind.
    func directory(_ number: UInt64, in reader: VolumeReader) throws(FSError) -> InodeItem {
        let item = try item(number, in: reader)
        guard item.type == Self.typeCode(.directory) else { throw .notDirectory }
        return item
    }

    /// A directory names may be added to: removed ones are `.notFound`.
    func liveDirectory(_ number: UInt64, in reader: VolumeReader) throws(FSError) -> InodeItem {
        let item = try directory(number, in: reader)
        guard item.linkCount > 0 else { throw .notFound }
        return item
    }

    /// What stat shows.
    func attributes(_ number: UInt64, _ item: InodeItem) throws(FSError) -> Attributes {
        guard let kind = FileKind(mode: UInt32(item.type) << 12) else {
            throw .damagedImage("inode \(number) has type \(item.type)")
        }
        return Attributes(inode: InodeNumber(number), generation: InodeTable.generation, kind: kind,
                          permissions: item.permissions & 0o7777, linkCount: item.linkCount, uid: item.uid,
                          gid: item.gid, rdev: item.rdev, size: kind == .directory ? Inode.directorySize : item.size,
                          blocks: 0, accessTime: Timestamp(item.accessTime),
                          modificationTime: Timestamp(item.modificationTime), changeTime: Timestamp(item.changeTime),
                          birthTime: Timestamp(item.birthTime))
    }

    static func typeCode(_ kind: FileKind) -> UInt8 { UInt8(kind.modeBits >> 12) }

    // MARK: - Changing

    /// Runs `body` under the namespace lock with a reader of the current state; the
    /// changes it returns are performed as one journal frame.
    func changing<R>(_ body: (VolumeReader, inout [JournalChange]) throws(FSError) -> R) throws(FSError) -> R {
        try lock.withLock { () throws(FSError) -> R in
            let reader = try volume.reader()
            var changes: [JournalChange] = []
            let result = try body(reader, &changes)
            if !changes.isEmpty { try volume.perform(changes) }
            return result
        }
    }

    /// The changes that state `item`, an inode that just lost a name or a reference: its
    /// new attributes while a name is left; with only the kernel's references left, its
    /// attributes under an orphan item, its data emptied (as format 1 empties a file
    /// nothing can read again); with nothing left, its drop (and its orphan item's).
    func state(_ number: UInt64, _ item: InodeItem, hadOrphan: Bool, into changes: inout [JournalChange]) {
        var item = item
        if item.linkCount > 0 {
            changes.append(.attributes(inode: number, item))
        } else if (lookupCounts[number] ?? 0) > 0 {
            if item.type == Self.typeCode(.regular) && item.size > 0 {
                changes.append(.fileRange(inode: number, size: 0, range: 0..<item.size,
                                          pieces: [FilePiece(offset: 0, extent: .repeatingBytes(value: 0, count: item.size))]))
                item.size = 0
            }
            changes.append(.attributes(inode: number, item))
            if !hadOrphan { changes.append(.orphan(inode: number, OrphanItem(state: .unlinkedWhileOpen))) }
        } else {
            if hadOrphan { changes.append(.orphan(inode: number, nil)) }
            changes.append(.drop(inode: number))
        }
    }

    /// Hands the kernel one more reference to `number`.
    func referenced(_ number: UInt64) { lookupCounts[number, default: 0] += 1 }
}
