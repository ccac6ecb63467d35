/// The contents of one regular file: an ordered list of extents over the shared image.
///
/// Extents are keyed by their first file offset in a `ChunkedSortedMap`, so finding the
/// extent under any offset is O(log n), and they tile `0..<size` without gaps. Offsets
/// never shift (there is no insert-range), so a write only touches the extents it
/// overlaps. Neighbours that continue each other (adjacent image ranges, equal fills,
/// small RAM buffers) are merged after every change, so a file written sequentially in
/// small pieces ends up as few extents as one written at once.
///
/// Storage ownership: every `mmapOffload` extent holds one reference on each image block
/// it touches (see `BlockReferenceCounts`); every `inMemory` extent holds a reservation of
/// its length and its overhead (`Extent.memoryCharge`) on the `MemoryLimiter`. Every path that adds or drops an extent goes through
/// `insert`/`removeRange`, which keep both accounts.
///
/// Locking: one reader-writer lock per file. Reads share it; everything that changes the
/// extent list or writes image bytes in place takes it exclusively. The store's own
/// mutex is always taken inside this lock, never the other way round.
public final class OffloadedFile: @unchecked Sendable {
    /// The largest file size (the kernel's MAX_LFS_FILESIZE on 64-bit Linux).
    public static let maximumSize = UInt64(Int64.max)
    /// Writes shorter than this may stay in RAM, and RAM extents merge up to this length;
    /// anything larger goes to the image, which is what the image is for.
    public static let inMemoryExtentLimit = BackingStore.blockSize

    public let store: any FileBlockStore
    public let limiter: MemoryLimiter
    let lock = ReadWriteLock()
    // Guarded by `lock`:
    let extents = ChunkedSortedMap<Extent>()
    var sizeBytes: UInt64 = 0
    var storedBytes: UInt64 = 0
    /// Told about every change (the journal); nil for files nobody persists.
    var observer: (any FileChangeObserver)?
    /// Image ranges whose references the current change dropped. With an observer they
    /// are released only after it has recorded the change: a block freed before the
    /// journal says so could be reused by another file while a crash would still bring
    /// back this file's claim on it.
    var pendingReleases: [Range<UInt64>] = []
    /// The image bytes the current change dropped from the file (the part of each removed
    /// extent no kept piece covers). Marked unshared before the references are released:
    /// until the change is durable, a power cut can bring the old extent back, so whoever
    /// still shares those blocks must not overwrite them in place (`markUnshared`).
    var pendingUnshares: [Range<UInt64>] = []
    /// The store's `syncEpoch` after the last write into blocks the file already had (an
    /// overwrite in place, or the tail of its last block), nil if none. Until a sync
    /// covers it, the disk may still hold the blocks' earlier bytes, so a clone must not
    /// share them before that sync (`cloneRange`): a power cut would show the clone the
    /// source's older bytes, which the clone never held.
    var inPlaceWriteEpoch: UInt64?
    /// Where the zeros of a block this file's last write allocated begin (the block's
    /// bytes after the write's end: never written since the block was handed out, so
    /// zeros on disk too, fresh or durably punched, unless a crash left the block written
    /// and uncommitted: docs/ARCHITECTURE.md, "Left alone"), nil when no such tail is
    /// known. Only such a tail may be filled in place by the next append: any other tail
    /// may hold stale bytes (of this file before a truncate, or of a clone's source), and
    /// a power cut that kept the append's frame but not its page would show them. Every
    /// change but a write that sets it anew forgets it (`changing`).
    var zeroTail: UInt64?
    /// The `zeroTail` the change under way leaves (set by `place`).
    var zeroTailAfterChange: UInt64?

    public init(store: any FileBlockStore, limiter: MemoryLimiter) {
        self.store = store
        self.limiter = limiter
    }

    deinit {
        observer = nil
        dropAllExtents()
    }

    /// Reports every later change to `observer`, under this file's write lock and before
    /// any storage the change freed is released.
    public func attach(_ observer: any FileChangeObserver) {
        lock.withWriteLock { self.observer = observer }
    }

    /// Runs a change under the write lock: `body` returns the byte range whose contents
    /// it changed (nil: nothing changed); the observer hears of it, then freed storage is
    /// released, also when `body` throws. Returns whether anything changed.
    /// `body` must call `willChange` before it alters the file.
    @discardableResult
    func changing(_ body: () throws(FSError) -> Range<UInt64>?) throws(FSError) -> Bool {
        try lock.withWriteLock { () throws(FSError) -> Bool in
            defer { releasePending() }
            let changed: Range<UInt64>?
            defer {
                zeroTail = zeroTailAfterChange
                zeroTailAfterChange = nil
            }
            do throws(FSError) {
                changed = try body()
            } catch {
                // A failed write gave back its blocks: its tail is not the file's.
                zeroTailAfterChange = nil
                observer?.changeAbandoned()
                throw error
            }
            guard let changed else {
                observer?.changeAbandoned()
                return false
            }
            observer?.fileChanged(FileChange(size: sizeBytes, range: changed, pieces: pieces(in: changed)))
            return true
        }
    }

    private func releasePending() {
        // A cut inside one block drops bytes but no reference (`ExtentCut`): its unshared
        // marks still go to the store.
        guard !pendingReleases.isEmpty || !pendingUnshares.isEmpty else { return }
        store.release(pendingReleases, unsharing: pendingUnshares)
        pendingReleases.removeAll()
        pendingUnshares.removeAll()
    }

    /// The file's length in bytes.
    public var size: UInt64 { lock.withReadLock { sizeBytes } }

    /// Bytes really stored for this file (image and RAM), holes and fills excluded;
    /// what st_blocks reports. Shared (cloned) ranges count in every file that has them.
    public var allocatedByteCount: UInt64 { lock.withReadLock { storedBytes } }

    /// The number of extents (for tests and benchmarks).
    public var extentCount: Int { lock.withReadLock { extents.count } }

    /// A copy of the extent list (for tests and tools).
    public var extentList: [(offset: UInt64, extent: Extent)] {
        lock.withReadLock {
            var list: [(offset: UInt64, extent: Extent)] = []
            extents.forEach { list.append(($0, $1)) }
            return list
        }
    }

    // MARK: - Reading

    /// Reads up to `count` bytes at `offset`: fewer only at end of file, none past it.
    public func read(at offset: UInt64, count: Int) throws(FSError) -> [UInt8] {
        guard count >= 0 else { throw .invalidArgument("negative read length") }
        return try lock.withReadLock { () throws(FSError) -> [UInt8] in
            guard offset < sizeBytes, count > 0 else { return [] }
            var bytes = [UInt8](repeating: 0, count: Int(min(UInt64(count), sizeBytes - offset)))
            try bytes.withUnsafeMutableBytes { buffer in
                Result { () throws(FSError) in try copyOut(at: offset, into: buffer) }
            }.get()
            return bytes
        }
    }

    /// Reads into `buffer` at `offset`; returns the number of bytes read (short only at
    /// end of file).
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FSError) -> Int {
        try lock.withReadLock { () throws(FSError) -> Int in
            guard offset < sizeBytes, buffer.count > 0 else { return 0 }
            let n = Int(min(UInt64(buffer.count), sizeBytes - offset))
            try copyOut(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
            return n
        }
    }

    /// Copies `destination.count` bytes starting at `offset`, all below the size.
    /// Caller holds the lock.
    private func copyOut(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(FSError) {
        guard var i = extents.floor(offset) else { preconditionFailure("no extent at \(offset)") }
        var position = offset
        var done = 0
        while done < destination.count {
            let start = extents.key(at: i)
            let extent = extents.value(at: i)
            let within = position - start
            let n = Int(min(UInt64(destination.count - done), extent.size - within))
            let target = destination.baseAddress! + done
            switch extent {
            case .mmapOffload(let imageOffset, _):
                try store.copyOut(from: imageOffset + within, into: target, count: n)
            case .repeatingBytes(let value, _):
                target.initializeMemory(as: UInt8.self, repeating: value, count: n)
            case .inMemory(let bytes):
                bytes.withUnsafeBytes { target.copyMemory(from: $0.baseAddress! + Int(within), byteCount: n) }
            }
            done += n
            position += UInt64(n)
            if done < destination.count {
                guard let next = extents.index(after: i) else { preconditionFailure("extents end before size") }
                i = next
            }
        }
    }

    // MARK: - Writing

    /// Writes `bytes` at `offset` and returns the count written. A zero-length write
    /// changes nothing; a write past the end leaves a hole of zeros before it. Either the
    /// whole write happens or, on error, nothing does.
    @discardableResult
    public func write(at offset: UInt64, bytes: UnsafeRawBufferPointer) throws(FSError) -> Int {
        guard !bytes.isEmpty else { return 0 }
        let end = try Self.checkedEnd(offset, UInt64(bytes.count))
        try changing { () throws(FSError) in
            if try changeInsideMemoryPiece(offset..<end, { $0.copyMemory(from: bytes) }) { return offset..<end }
            if try overwriteInPlace(at: offset, bytes: bytes) { return offset..<end }
            let pieces = try place(bytes, at: offset)
            do throws(FSError) {
                // Merging with the neighbours adds at most one piece on each side.
                try willChange(pieces: pieces.count + 2, memoryBytes: pieces.reduce(0) { $0 + $1.memoryBytes })
            } catch {
                for piece in pieces { discard(piece) }
                throw error
            }
            extendWithHole(to: offset)
            replace(offset..<end, with: pieces)
            return offset..<end
        }
        return bytes.count
    }

    @discardableResult
    public func write(at offset: UInt64, bytes: [UInt8]) throws(FSError) -> Int {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(FSError) in try write(at: offset, bytes: buffer) }
        }
        return try result.get()
    }

    /// Makes `offset..<offset+range.count` of the file refer to image bytes `range`,
    /// without copying (the zero-copy path). The file takes its own reference on the
    /// blocks; the caller keeps whatever references it had. The range must be allocated
    /// in the store (`.invalidArgument` otherwise).
    @discardableResult
    public func write(at offset: UInt64, imageRange range: Range<UInt64>) throws(FSError) -> Int {
        guard !range.isEmpty else { return 0 }
        let end = try Self.checkedEnd(offset, range.length)
        try changing { () throws(FSError) in
            try willChange(pieces: 3)
            try store.retain(range)
            extendWithHole(to: offset)
            replace(offset..<end, with: [.mmapOffload(offset: range.lowerBound, size: range.length)])
            return offset..<end
        }
        return Int(range.length)  // at most maximumSize: checkedEnd passed
    }

    /// Sets the size: shrinking drops the tail, growing appends `fill` bytes. Returns
    /// false when the size was `newSize` already (nothing changed).
    @discardableResult
    public func resize(to newSize: UInt64, fill: UInt8 = 0) throws(FSError) -> Bool {
        guard newSize <= Self.maximumSize else { throw .fileTooLarge }
        return try changing { () throws(FSError) -> Range<UInt64>? in
            let old = sizeBytes
            guard newSize != old else { return nil }
            try willChange(pieces: 1)
            if newSize < old {
                removeRange(newSize..<old)
                sizeBytes = newSize
                return newSize..<old
            } else if newSize > old {
                insert([.repeatingBytes(value: fill, count: newSize - old)], at: old)
                return old..<newSize
            }
            return nil
        }
    }

    /// Empties the file. Returns false when it was empty already. Fails only when the
    /// observer refuses the change (no journal room), leaving the file as it was.
    @discardableResult
    public func truncate() throws(FSError) -> Bool {
        try changing { () throws(FSError) -> Range<UInt64>? in
            let old = sizeBytes
            guard old > 0 else { return nil }
            try willChange(pieces: 0)
            dropAllExtents()
            return 0..<old
        }
    }

    /// Frees all storage now; the file is empty afterwards.
    /// The file is gone (its drop is recorded): nothing more is reported to the observer.
    public func releaseAll() {
        lock.withWriteLock {
            observer = nil
            dropAllExtents(journaled: true)
            releasePending()
        }
    }

    // MARK: - Internals shared by the mutating operations (caller holds the write lock)

    /// `offset + length`, or `.fileTooLarge` past the maximum size (never overflows).
    static func checkedEnd(_ offset: UInt64, _ length: UInt64) throws(FSError) -> UInt64 {
        guard offset <= maximumSize, length <= maximumSize - offset else { throw .fileTooLarge }
        return offset + length
    }

    /// Overwrites bytes in place when image extents cover all of them and each owns its
    /// blocks alone. No extent changes, so rewriting data needs no new space (a
    /// preallocated or already written range never fails with ENOSPC) and no metadata.
    /// An I/O error of the image ends the copy and is thrown; bytes copied before it
    /// stay written, as after a short write(2).
    private func overwriteInPlace(at offset: UInt64, bytes: UnsafeRawBufferPointer) throws(FSError) -> Bool {
        let end = offset + UInt64(bytes.count)
        guard end <= sizeBytes, var i = extents.floor(offset) else { return false }
        // First pass: every covering extent must qualify; nothing is written until then.
        var targets: [(image: UInt64, source: Int, count: Int)] = []
        var position = offset
        while position < end {
            let start = extents.key(at: i)
            guard case .mmapOffload(let imageOffset, let size) = extents.value(at: i) else { return false }
            let n = Int(min(end, start + size) - position)
            let target = imageOffset + (position - start)
            guard store.isExclusive(target..<target + UInt64(n)) else { return false }
            targets.append((target, Int(position - offset), n))
            position += UInt64(n)
            if position < end {
                guard let next = extents.index(after: i) else { return false }
                i = next
            }
        }
        try willChange(pieces: targets.count)
        defer { inPlaceWriteEpoch = store.syncEpoch }
        for t in targets { try store.copyIn(bytes.baseAddress! + t.source, to: t.image, count: t.count) }
        return true
    }

    /// Changes bytes `range` in place when one RAM piece holds all of them (`change` gets
    /// the piece's bytes for `range`): the piece stays one piece, charged as it was. A
    /// small write inside a RAM piece needs no budget then (it became a piece of its own,
    /// in the image when the budget was spent, and cut the piece in two), and a hole
    /// punched inside one zeroes its bytes, as ext4 zeroes a hole inside a block: cut in
    /// two, the piece was charged a second overhead past the limit (the review's finding:
    /// 2,000 one-byte holes in a piece of 4,000 bytes, a byte apart, took `held_bytes`
    /// to 47 times a 64 KiB limit). The change's record carries the range's new bytes,
    /// which a commit writes out as a new RAM piece's: admitted as a write's piece is
    /// (`FileBlockStore.admitsMemoryPiece`, the blocks a commit places them in), or the
    /// change takes the usual way (`VolumeFullImageTests`).
    func changeInsideMemoryPiece(_ range: Range<UInt64>,
                                 _ change: (UnsafeMutableRawBufferPointer) -> Void) throws(FSError) -> Bool {
        guard !range.isEmpty, range.upperBound <= sizeBytes, let i = extents.floor(range.lowerBound) else { return false }
        let start = extents.key(at: i)
        guard case .inMemory(var bytes) = extents.value(at: i), range.upperBound <= start + UInt64(bytes.count),
              store.admitsMemoryPiece(byteCount: Int(range.length)) else {
            return false
        }
        try willChange(pieces: 1, memoryBytes: Int(range.length))
        let lower = Int(range.lowerBound - start), upper = Int(range.upperBound - start)
        bytes.withUnsafeMutableBytes { change(UnsafeMutableRawBufferPointer(rebasing: $0[lower..<upper])) }
        extents.setValue(.inMemory(bytes), at: i)
        return true
    }

    /// Stores `bytes` (destined for file offset `offset`, nil when they go to another
    /// file) and returns the extents that
    /// hold them: RAM if small and the budget allows, else image blocks. Image data is
    /// placed right after the image bytes of the extent that ends at `offset` when
    /// possible, so the new extent merges with it. On error nothing is held.
    func place(_ bytes: UnsafeRawBufferPointer, at offset: UInt64?) throws(FSError) -> [Extent] {
        let charge = Extent.memoryCharge(byteCount: bytes.count)
        if bytes.count < Self.inMemoryExtentLimit, limiter.tryReserve(charge) {
            if store.admitsMemoryPiece(byteCount: bytes.count) { return [.inMemory(Array(bytes))] }
            limiter.release(charge)
        }
        var pieces: [Extent] = []
        var done = 0
        var hint = offset.flatMap(imageEnd(ofExtentEndingAt:))
        let blockSize = UInt64(BackingStore.blockSize)
        // Fill the rest of the previous extent's last block when it is the zero tail the
        // last write left (see `zeroTail`) and the file owns that block alone, so the bytes
        // after its end are unreferenced.
        if let tail = hint, tail % blockSize != 0, tail == zeroTail, store.isExclusive(tail - 1..<tail) {
            let room = blockSize - tail % blockSize
            let n = Int(min(room, UInt64(bytes.count)))
            try store.copyIn(bytes.baseAddress!, to: tail, count: n)
            inPlaceWriteEpoch = store.syncEpoch
            store.retainOwned(tail..<tail + UInt64(n))
            pieces.append(.mmapOffload(offset: tail, size: UInt64(n)))
            done = n
            hint = tail + room
            if UInt64(n) < room { zeroTailAfterChange = tail + UInt64(n) }
        } else if let tail = hint, tail % blockSize != 0 {
            hint = nil
        }
        // Every block first, then the bytes: a write the space cannot hold is refused
        // before it wrote any, and gives its blocks back free at once
        // (`FileBlockStore.giveBackUnwritten`) instead of as a release, which only the
        // commits of the reuse rule make free again (each refused write on a full image
        // then paid a reclaim).
        let written = pieces.count
        var copied = done
        while done < bytes.count {
            let granted: Range<UInt64>
            do throws(FSError) {
                granted = try store.allocate(byteCount: bytes.count - done, hint: hint)
            } catch {
                for piece in pieces[..<written] { discard(piece) }
                for piece in pieces[written...] { giveBackFresh(piece) }
                throw error
            }
            // `granted` is whole blocks, never more than the data needs, just allocated.
            let n = min(granted.count, bytes.count - done)
            pieces.append(.mmapOffload(offset: granted.lowerBound, size: UInt64(n)))
            done += n
            hint = granted.upperBound
            // The block the data ends in was fresh: its tail, written by no one since it
            // was handed out, may take the next append in place (`zeroTail`). (Not for a
            // clone's pieces: they are another file's.)
            if offset != nil, n < granted.count { zeroTailAfterChange = granted.lowerBound + UInt64(n) }
        }
        for case .mmapOffload(let start, let size) in pieces[written...] {
            do throws(FSError) {
                try store.copyIn(bytes.baseAddress! + copied, to: start, count: Int(size), fresh: true)
            } catch {
                for piece in pieces { discard(piece) }
                throw error
            }
            copied += Int(size)
        }
        return pieces
    }

    /// The image offset just past the extent that ends exactly at file offset `offset`,
    /// if that extent is an image extent.
    func imageEnd(ofExtentEndingAt offset: UInt64) -> UInt64? {
        guard offset > 0, offset <= sizeBytes, let i = extents.floor(offset - 1) else { return nil }
        guard case .mmapOffload(let imageOffset, let size) = extents.value(at: i),
              extents.key(at: i) + size == offset else { return nil }
        return imageOffset + size
    }

    /// Appends a hole so that the file reaches `offset` (no-op if it already does).
    func extendWithHole(to offset: UInt64) {
        if offset > sizeBytes {
            insert([.repeatingBytes(value: 0, count: offset - sizeBytes)], at: sizeBytes)
        }
    }
}
