#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import Synchronization

// Regular files on format 2: open, create, read, write, flush, release, fsync, fallocate,
// lseek, copy_file_range, and every change of a file's data (setattr's size, O_TRUNC, the
// emptying of a file only the kernel still references) through its `OffloadedFile` over
// the volume's blocks (`VolumeFileBlocks`).
//
// The cache (docs/ARCHITECTURE.md, step 4d): a regular file's `OffloadedFile` is loaded
// from its committed extent items when it is first needed, and kept while it is open or
// while it has changes no commit holds yet (the delta's file ranges are not read back:
// the cached file is their truth until the commit); otherwise it goes at its last close.
//
// Every change of a file runs under the namespace lock, and the maintenance closes a
// generation only with it held alone, so a change and its frame never straddle that close,
// which keeps the blocks' touched marks sound ("Files on format 2"). Writes, fallocate and
// copy_file_range share it (`changingData`: the file's own lock orders a file's calls),
// and so do create (`changingNames`), open and release (`changingInodes`: the inode's lock
// orders an open, a close, an unlink and the frames of one file; the file cache's lock
// makes finding a cached file and counting it open one step, so an eviction cannot take a
// file being opened), and so does setattr's size (its resize as a write, through a handle
// of its own). Reads, lseek, flush and the handle checks of fsync and fsyncdir take no
// namespace lock (`readingOpenFile`), nor does a last close's eviction; fsync syncs
// outside every lock.

extension VolumeNamespace {
    /// The frame of one file change, with the inode's new size and its mtime and ctime
    /// marked, using the journal room its change reserved. The file has changed already
    /// (`fileChanged` cannot refuse), so a frame that cannot be made or written leaves
    /// memory ahead of the journal: the namespace fails (`journalFailure`), and every
    /// later operation throws it.
    ///
    /// Caller holds the namespace lock (shared or alone) and the file's write lock. The
    /// inode's item (remembered from the last frame that stated it, else read) is written
    /// back whole, under the inode's lock: the operations that change an inode's
    /// attributes otherwise hold the namespace lock alone, or share it with that lock
    /// (`changingNames`, `changingInodes`), and the file's changes are serialised by its
    /// write lock.
    func journal(_ number: UInt64, _ change: FileChange, reserved: Int) {
        // The reservation ends at the frame's `perform`, or here when none is made.
        var unused = reserved
        defer { volume.releaseRoom(unused) }
        let held = inodeLocks.lock(number)
        defer { inodeLocks.unlock(held) }
        do throws(FSError) {
            let cached = fileCache.file(number)
            var item: InodeItem
            if let known = cached?.journaledItem {
                // Where the view reads at all: a damaged image (one cut short under the
                // daemon) answers its reads with errors, which the frame does not need.
                assert(viewedItem(number).map { $0 == known } ?? true, "inode \(number)'s remembered item is not the view's")
                item = known
            } else {
                let taken = try readers.take()
                defer { readers.give(taken) }
                guard let read = try taken.reader.inode(number) else {
                    throw .io("inode \(number) changed its data but has no attributes")
                }
                item = read
            }
            let now = clock().record
            item.size = change.size
            item.modificationTime = now
            item.changeTime = now
            unused = 0
            try volume.perform([.attributes(inode: number, item), .fileRange(inode: number, change)],
                               reserved: reserved, commitsAtBudget: false)
            cached?.journaledItem = item
            cached?.changedIn.store(volume.delta.openNumber, ordering: .relaxed)
        } catch {
            failJournal(.io("a file change could not be journaled (\(error)); the namespace stops taking requests: unmount, and the image mounts again at its last journaled state"))
        }
    }

    /// The inode's item in the layered view, nil when it has none or cannot be read (the
    /// debug check of `journaledItem`).
    private func viewedItem(_ number: UInt64) -> InodeItem? {
        guard let taken = try? readers.take() else { return nil }
        defer { readers.give(taken) }
        return try? taken.reader.inode(number)
    }

    /// The cached file of regular file `number`, loaded from its extents in the layered
    /// view when not cached; with `opening`, counted as open (`openCount`) in the same
    /// hold of the cache's lock that finds or adds it, so an eviction (which takes only
    /// closed files) cannot take it in between. Caller holds the namespace lock alone, or
    /// shared with the inode's lock (an open, `changingInodes`), which every change of the
    /// inode's extents in the view holds (an unlink's emptying, `state`; a file change's
    /// frame, `journal`, needs the file cached). Loaded outside the file cache's lock;
    /// every loader holds the inode's lock or the namespace lock alone, so two loads of
    /// one file do not meet, but should a copy be added meanwhile, it wins and this one is
    /// unloaded.
    func cachedFile(_ number: UInt64, _ item: InodeItem, _ reader: VolumeReader,
                    opening: Bool = false) throws(FSError) -> VolumeCachedFile {
        let found = fileCache.changing(number) { cache -> VolumeCachedFile? in
            guard let cached = cache.files[number] else { return nil }
            if opening { cached.openCount += 1 }
            return cached
        }
        if let found { return found }
        let pieces = try reader.view.filePieces(number, size: item.size)
        let data = OffloadedFile.loaded(store: try volume.fileBlocks(), limiter: memoryLimiter, size: item.size, pieces: pieces)
        let loaded = VolumeCachedFile(data: data, inode: number, namespace: self)
        let kept = fileCache.changing(number) { cache -> VolumeCachedFile in
            let kept = cache.files[number] ?? loaded
            cache.files[number] = kept
            if opening { kept.openCount += 1 }
            return kept
        }
        // A loaded copy holds its own references (`OffloadedFile.loaded`); letting it go
        // without `unload` would release the tree's.
        if kept !== loaded { loaded.data.unload() }
        return kept
    }

    /// Lets go of a cached file nothing needs: closed, and every change of it committed;
    /// a closed file whose changes wait for a commit goes when one has committed them
    /// (`evictCommittedFiles`). The file's data is unloaded after the cache's lock is let go
    /// (unloading takes the file's lock), once `evicted` tells readers still holding the
    /// file to answer from the inode's item. Caller holds no inode lock, and the namespace
    /// lock alone or no namespace lock (a last close, `evictCommittedFiles` after a
    /// maintenance commit). A file with no handle left has no change in flight: the
    /// kernel sends a handle's RELEASE only once no request uses it.
    func evictIfDone(_ number: UInt64) {
        let committed = volume.committedGeneration
        // The sweep's set changes inside the shard's hold (shard, then sweep), so a note
        // and its removal keep the order of the decisions they follow.
        let clean = fileCache.changing(number) { cache -> VolumeCachedFile? in
            guard let cached = cache.files[number], cached.openCount == 0 else { return nil }
            guard cached.changedIn.load(ordering: .relaxed) <= committed else {
                fileCache.sweep.withLock { _ = $0.awaitingCommit.insert(number) }
                return nil
            }
            // Clean: its references stay the tree's, not a change (no touched marks, which
            // made writes after the next open copy their blocks until a commit).
            cache.files[number] = nil
            fileCache.sweep.withLock { _ = $0.awaitingCommit.remove(number) }
            cached.evicted.store(true, ordering: .releasing)
            return cached
        }
        clean?.data.unload()
    }

    /// Evicts the closed files a commit since the last call has made clean. Every
    /// operation that holds the lock alone calls it (cheap when no commit happened), and
    /// the maintenance after each of its commits, so the cache holds open files and
    /// changes of the open generations only (and, after an operation's own commit, files
    /// it made clean until the next change or maintenance commit). Caller holds the lock
    /// alone, or no namespace lock (the maintenance): it takes only the file cache's lock,
    /// and evicts as a last close does (`evictIfDone`), beside every change.
    func evictCommittedFiles() {
        let committed = volume.committedGeneration
        let waiting = fileCache.sweep.withLock { cache -> Set<UInt64> in
            guard committed != cache.lastEvictedAt, !cache.awaitingCommit.isEmpty else { return [] }
            cache.lastEvictedAt = committed
            return cache.awaitingCommit
        }
        for number in waiting { evictIfDone(number) }
    }

    /// The file behind `handle` (EBADF for one not given out for this inode).
    func openedFile(_ number: InodeNumber, _ handle: FileHandle) throws(FSError) -> (file: VolumeCachedFile, handle: VolumeFileHandle) {
        guard let opened = fileCache.opened(number.rawValue, handle: handle.rawValue) else { throw .badHandle }
        return opened
    }

    // MARK: - Handles

    /// Opens with the inode's lock, the namespace lock shared (`changingInodes`): opens of
    /// different files run at once. O_TRUNC truncates here, after the handle is made
    /// (`truncateOnOpen`).
    public func open(inode number: InodeNumber, flags: Int32, context: RequestContext) throws(FSError) -> FileHandle {
        let (handle, permissions) = try changingInodes(number.rawValue) { (reader, _) throws(FSError) -> (FileHandle, UInt32) in
            let item = try item(number.rawValue, in: reader)
            return (try openHandle(number.rawValue, item, flags: flags, reader), item.permissions)
        }
        if flags & O_TRUNC != 0 {
            try truncateOnOpen(number, handle, referenced: false, setID: permissions & SetIDRules.bits, context: context)
        }
        return handle
    }

    /// A new regular file, or, when the name exists and O_EXCL is not set, that file
    /// opened (and truncated with O_TRUNC).
    ///
    /// A new file is made with the names of `parent` alone changing (`changingNames`), so
    /// creates in different directories run at once; its data is made empty rather than
    /// read from the tree (it has no extents). A name that exists is opened holding the
    /// directory's lock and the file's, as open holds the file's. Between the two the name
    /// may go (the create tries again) or come (it is opened).
    public func create(parent: InodeNumber, name: FileName, mode: UInt32, flags: Int32,
                       context: RequestContext) throws(FSError) -> (Attributes, FileHandle) {
        while true {
            if let made = try createNew(parent: parent, name: name, mode: mode, flags: flags, context: context) { return made }
            if let opened = try openExisting(parent: parent, name: name, flags: flags, context: context) { return opened }
        }
    }

    /// The new file of `create`; nil when the name exists (and O_EXCL is not set).
    private func createNew(parent: InodeNumber, name: FileName, mode: UInt32, flags: Int32,
                           context: RequestContext) throws(FSError) -> (Attributes, FileHandle)? {
        enum Found { case existing, made(UInt64, InodeItem, any FileBlockStore) }
        return try changingNames(in: parent.rawValue) { (reader, _, operation) throws(FSError) -> Found in
            if try reader.lookup(directory: parent.rawValue, name: name.bytes) != nil {
                _ = try liveDirectory(parent.rawValue, in: reader)
                guard flags & O_EXCL == 0 else { throw .exists }
                return .existing
            }
            let store = try volume.fileBlocks()
            let made = try newNode(parent: parent, name: name, kind: .regular, permissions: mode & 0o7777, rdev: 0, target: nil,
                                   context: context, reader, &operation, nameLookedUp: true)
            return .made(made.number, made.item, store)
        } then: { (found, reader) throws(FSError) -> (Attributes, FileHandle)? in
            guard case .made(let number, let item, let store) = found else { return nil }
            let made = VolumeCachedFile(data: OffloadedFile(store: store, limiter: memoryLimiter), inode: number, namespace: self)
            // A new file has no capability: the kernel's GETXATTR before its first
            // write (every file `cp -a` makes) is answered without the tree.
            made.markCapabilityAbsent(ifStill: made.capabilityWord)
            // Through the kernel no one finds the name before the create answers (it holds
            // the directory's `i_rwsem`); an in-process open that did found it empty in the
            // view, and its copy stays.
            fileCache.changing(number) { cache in if cache.files[number] == nil { cache.files[number] = made } }
            let handle = try openHandle(number, item, flags: flags, reader)
            referenced(number)
            // Its size is known, and its data's lock is not taken under the directory's
            // inode lock.
            return (try attributes(number, item, reader, sizes: (0, 0)), handle)
        }
    }

    /// The existing file of `create`, opened holding the directory's and the file's inode
    /// locks; nil when the name has gone meanwhile. Its attributes are read after (the
    /// file may be open and written: `changingNames`).
    private func openExisting(parent: InodeNumber, name: FileName, flags: Int32,
                              context: RequestContext) throws(FSError) -> (Attributes, FileHandle)? {
        let opened = try changingNames(in: parent.rawValue, naming: name) { (reader, entry, _) throws(FSError) -> (UInt64, FileHandle, UInt32)? in
            guard let entry else { return nil }
            _ = try liveDirectory(parent.rawValue, in: reader)
            guard flags & O_EXCL == 0 else { throw .exists }
            let item = try item(entry.child, in: reader)
            let handle = try openHandle(entry.child, item, flags: flags, reader)
            referenced(entry.child)
            return (entry.child, handle, item.permissions)
        } then: { (opened, _) throws(FSError) -> (UInt64, FileHandle, UInt32)? in opened }
        guard let (number, handle, permissions) = opened else { return nil }
        // The attributes below are read after: the kernel takes the mode from this reply.
        if flags & O_TRUNC != 0 {
            try truncateOnOpen(InodeNumber(number), handle, referenced: true, setID: permissions & SetIDRules.bits,
                               context: context)
        }
        do {
            return (try reading { (reader) throws(FSError) -> Attributes in
                try attributes(number, try item(number, in: reader), reader)
            }, handle)
        } catch {
            abandonOpen(InodeNumber(number), handle, referenced: true)
            throw error
        }
    }

    /// A handle on regular file `number`, counted open on its cached file. Caller holds
    /// the inode's lock (or the namespace lock alone).
    func openHandle(_ number: UInt64, _ item: InodeItem, flags: Int32, _ reader: VolumeReader) throws(FSError) -> FileHandle {
        switch FileKind(mode: UInt32(item.type) << 12) {
        case .regular?: break
        case .directory?: throw .isDirectory
        case .symlink?: throw .symlinkLoop
        default: throw .notSupported
        }
        _ = try cachedFile(number, item, reader, opening: true)
        let handle = handles.take()
        let opened = VolumeFileHandle(inode: number, writable: flags & O_ACCMODE != O_RDONLY, append: flags & O_APPEND != 0)
        fileCache.changing(number) { $0.handles[handle] = opened }
        return FileHandle(handle)
    }

    /// O_TRUNC of an open: the file's data is cut to 0 through its handle, as a write
    /// changes it (`changingData`: its frame marks the times); a file empty already gets
    /// its mtime and ctime marked all the same, in a frame of their own. A file that had
    /// set-id bits when it was opened (`setID`) loses those `context` may not keep
    /// (`SetIDRules`), in that frame or one of their own. When any of it fails, the open
    /// fails: its handle is closed (and the kernel reference the open took, `referenced`,
    /// given back), since the kernel never learns of them.
    private func truncateOnOpen(_ number: InodeNumber, _ handle: FileHandle, referenced: Bool, setID: UInt32,
                                context: RequestContext) throws(FSError) {
        do throws(FSError) {
            let cut = try changingData { () throws(FSError) -> Bool in try openedFile(number, handle).file.data.truncate() }
            guard !cut || setID != 0 else { return }
            try changingInodes(number.rawValue) { (reader, operation) throws(FSError) in
                var item = try item(number.rawValue, in: reader)
                let now = clock().record
                if !cut { item.modificationTime = now }
                // The caller's groups and capabilities are read (rarely) under the lock.
                let dropped = item.permissions & SetIDRules.bits == 0 ? 0
                    : SetIDRules.droppedByTruncatingOpen(permissions: item.permissions, fileGID: item.gid, caller: context)
                guard !cut || dropped != 0 else { return }
                item.permissions &= ~dropped
                item.changeTime = now
                operation.changes.append(.attributes(inode: number.rawValue, item))
            }
        } catch {
            abandonOpen(number, handle, referenced: referenced)
            throw error
        }
    }

    /// Undoes an open that fails after its handle was made: the handle is released and
    /// the kernel reference it took, if any, given back.
    private func abandonOpen(_ number: InodeNumber, _ handle: FileHandle, referenced: Bool) {
        release(inode: number, handle: handle)
        if referenced { forget(inode: number, lookups: 1) }
    }

    public func flush(inode number: InodeNumber, handle: FileHandle) throws(FSError) {
        try readingOpenFile { () throws(FSError) in _ = try openedFile(number, handle) }
    }

    /// Drops a handle (also one of the namespace's own, a truncate's, `resize`); an
    /// unlinked file with no handle left is dropped, or, while the kernel still
    /// references it, kept with its data under its orphan item. Holds the inode's lock,
    /// the namespace lock shared (`changingInodes`), so an open, an unlink or a change of
    /// the file's data waits; the file leaves the cache (`evictIfDone`) after that lock is
    /// let go. Most closes write no frame, so the journal's pages are not prepared for one
    /// (a close that does write may fault on them under the lock).
    public func release(inode number: InodeNumber, handle: FileHandle) {
        // The handle goes once, even when the change runs again with the lock held alone
        // (its frame refused for want of space).
        var closed = false, lastClose = false
        _ = try? changingInodes(number.rawValue, preparingJournal: false) { (reader, operation) throws(FSError) in
            if !closed {
                closed = true
                lastClose = fileCache.changing(number.rawValue) { cache -> Bool in
                    guard let opened = cache.handles.removeValue(forKey: handle.rawValue), opened.inode == number.rawValue,
                          let cached = cache.files[number.rawValue] else { return false }
                    cached.openCount -= 1
                    return cached.openCount == 0
                }
            }
            guard lastClose, let item = try reader.inode(number.rawValue), item.linkCount == 0 else { return }
            state(number.rawValue, item, hadOrphan: try reader.orphan(number.rawValue) != nil, into: &operation)
        }
        guard lastClose else { return }
        // The eviction needs no namespace lock: the cache's lock decides it, and a reader
        // holding the file sees its mark (`VolumeCachedFile.evicted`).
        evictIfDone(number.rawValue)
    }

    /// Every change is in the journal when it is answered; fsync makes the image durable.
    /// The sync runs outside the namespace lock: it covers every operation answered before
    /// it began, and requests need not wait for the disk meanwhile.
    public func fsync(inode number: InodeNumber, handle: FileHandle?, dataOnly: Bool) throws(FSError) {
        try readingOpenFile { () throws(FSError) in
            if let handle { _ = try openedFile(number, handle) }
        }
        try volume.sync()
    }

    // MARK: - Data

    public func read(inode number: InodeNumber, handle: FileHandle, offset: UInt64, count: Int) throws(FSError) -> [UInt8] {
        guard count >= 0 else { throw .invalidArgument("negative read size") }
        return try readingOpenFile { () throws(FSError) -> [UInt8] in
            try openedFile(number, handle).file.data.read(at: offset, count: count)
        }
    }

    public func read<R>(inode number: InodeNumber, handle: FileHandle, offset: UInt64, count: Int,
                        _ body: ([ReadRegion]) -> R) throws(FSError) -> R {
        guard count >= 0 else { throw .invalidArgument("negative read size") }
        return try readingOpenFile { () throws(FSError) -> R in
            try openedFile(number, handle).file.data.withReadRegions(at: offset, count: count, body)
        }
    }

    public func write(inode number: InodeNumber, handle: FileHandle, offset: UInt64,
                      data: UnsafeRawBufferPointer) throws(FSError) -> Int {
        try changingData { () throws(FSError) -> Int in
            let (file, opened) = try openedFile(number, handle)
            guard opened.writable else { throw .badHandle }
            guard data.count > 0 else { return 0 }
            try FileDataRules.write(file.data, appendLock: file.appendLock, appends: opened.append, offset: offset,
                                    bytes: data)
            return data.count
        }
    }

    public func fallocate(inode number: InodeNumber, handle: FileHandle, offset: UInt64,
                          length: UInt64, mode: AllocationMode) throws(FSError) {
        try changingData { () throws(FSError) in
            let (file, opened) = try openedFile(number, handle)
            try FileDataRules.fallocate(file.data, writable: opened.writable, offset: offset, length: length, mode: mode)
        }
    }

    public func lseek(inode number: InodeNumber, handle: FileHandle, offset: UInt64,
                      target: SeekTarget) throws(FSError) -> UInt64 {
        try readingOpenFile { () throws(FSError) -> UInt64 in
            try FileDataRules.seek(try openedFile(number, handle).file.data, from: offset, to: target)
        }
    }

    public func copyFileRange(from source: InodeNumber, sourceHandle: FileHandle, sourceOffset: UInt64,
                              to destination: InodeNumber, destinationHandle: FileHandle,
                              destinationOffset: UInt64, length: UInt64) throws(FSError) -> UInt64 {
        try changingData { () throws(FSError) -> UInt64 in
            let input = try openedFile(source, sourceHandle)
            let output = try openedFile(destination, destinationHandle)
            return try FileDataRules.copyRange(from: input.file.data, source, at: sourceOffset, to: output.file.data, destination,
                                               at: destinationOffset, length: length, outputWritable: output.handle.writable,
                                               outputAppends: output.handle.append)
        }
    }

    /// Runs a change of an open file's data (write, fallocate, copy_file_range) with the
    /// namespace lock shared, so changes of different files run at once and reads do not
    /// wait for them (docs/ARCHITECTURE.md, "Step 7, third part"). What keeps each change
    /// and its frame in one generation is that the generation closes only under the lock
    /// held alone. The file's write lock orders the changes of one file; the volume's
    /// locks (space, journal) those of the blocks and frames; the journal room each change
    /// reserves before it changes anything keeps a full image from failing a frame that
    /// another change's frame took the room of.
    ///
    /// When the change finds no free space (it changed nothing), it runs again after the
    /// commits that make what earlier operations freed reusable
    /// (`TreeVolume.reclaimFreedSpace`), as format 1 runs its reclaim before it answers
    /// ENOSPC; those commits close generations, so the lock is held alone for them.
    /// Afterwards, a journal or generation over its budget is committed, its generation
    /// closed with the lock held alone (`commitIfOverBudget`).
    func changingData<R>(_ change: () throws(FSError) -> R) throws(FSError) -> R {
        let result: R
        do {
            result = try sharing { () throws(FSError) -> R in
                let result = try change()
                // A change whose frame could not be written is not answered as done.
                if let journalFailure { throw journalFailure }
                return result
            }
        } catch .noSpace {
            // Without the namespace lock: the FORGETs of files an `rm` just unlinked.
            awaitForgetsOfUnlinkedFiles()
            result = try locked { () throws(FSError) -> R in
                try afterReclaim(change)
            }
        }
        commitIfOverBudget()
        return result
    }

    /// Runs `change` (which, refused for want of space, changed nothing) after the
    /// commits that make what earlier operations freed reusable
    /// (`TreeVolume.reclaimFreedSpace`), and after another round of them while each gives
    /// space back and `change` is still refused, `reclaimRounds` at most; ENOSPC when it
    /// is still refused after a round that gave nothing back. A round stops once a
    /// megabyte came back, which an old journal chain alone can give (since "Journal
    /// segments ahead of a commit's space lock", up to 16 MiB) before the blocks an rm
    /// freed a commit later: a 64 MiB fallocate after its truncate on a full image failed
    /// with ENOSPC after one round.
    /// Reads take no namespace lock, so they run during the reclaim's commits: the readers
    /// they give back to the pool are let go, and the reads in flight waited for briefly,
    /// before each commit (`readersCatchUp`). Caller holds the lock alone.
    func afterReclaim<T>(_ change: () throws(FSError) -> T) throws(FSError) -> T {
        // Read before the reclaim: a release during it makes the next refusal reclaim.
        let releases = volume.releaseCount
        // Refused the free blocks held for the commits of the changes that wait
        // (`TreeVolume.blocksHeldForCommits`): one commit gives them back, without a
        // reclaim's rounds of up to four.
        if volume.holdsFreeBlocksForCommits {
            try volume.commit()
            evictCommittedFiles()
            dropIdleReaders()
            do throws(FSError) {
                return try change()
            } catch .noSpace {
                // On to the reclaim.
            }
        }
        // Nothing released since a reclaim that found nothing, and nothing a commit would
        // settle (changes waiting, RAM pieces promised blocks): another finds nothing.
        // Blocks a refused write gave back since, counted as no release
        // (`FileBlockStore.giveBackUnwritten`), may be what this change needs (another
        // file's larger write held them when this one was refused): it is tried once more
        // then, which costs no commit.
        if fruitlessReclaim.foundNothing(since: releases), volume.waitsForNoCommit {
            guard fruitlessReclaim.blocksGivenBack(countNow: volume.givenBackCount) else { throw .noSpace }
            return try change()
        }
        // What an `rm` just before freed waits for the kernel's FORGET: the drops of the
        // inodes forgotten so far go first (`writeForgottenDrops`).
        writeForgottenDrops()
        for _ in 0..<Self.reclaimRounds {
            let grew = try volume.reclaimFreedSpace(beforeEachCommit: dropIdleReaders)
            evictCommittedFiles()
            // Tried whether or not the free count grew: the commits also give the journal a
            // new chain, and refill the metadata reserve from what came back.
            do throws(FSError) {
                return try change()
            } catch .noSpace {
                // Only a round that gave nothing back says the next would not either (after
                // rounds that did, more may come: a drop continued over commits).
                guard grew else {
                    fruitlessReclaim.record(releases, givenBack: volume.givenBackCount)
                    throw .noSpace
                }
            }
        }
        throw .noSpace
    }

    /// A block released in generation g is reusable after commit g + 4 (the reuse rule:
    /// `settlingCommits`), a reclaim runs up to four commits and may stop after one: four
    /// rounds see any release through.
    static let reclaimRounds = 4
}
