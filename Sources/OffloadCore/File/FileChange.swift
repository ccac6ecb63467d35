/// What changed in a file: its new size, and the extents now covering the byte range
/// whose contents changed (clipped to it and to the size; holes left out).
public struct FileChange: Sendable {
    public var size: UInt64
    public var range: Range<UInt64>
    public var pieces: [FilePiece]
}

/// Hears of every change to a file while the file's write lock is held, so changes to
/// one file reach it in the order they happened. It runs before the storage a change
/// freed is released (see `OffloadedFile.pendingReleases`). It must not call back into
/// the file.
///
/// Before a change alters anything, `willChange` hears how many bytes its file-range
/// records can take at most, and may refuse (a journal that has no room for them: the
/// change then fails with that error, having changed nothing). Every `willChange` is
/// followed by `fileChanged` or, when the change failed or changed nothing,
/// `changeAbandoned`.
public protocol FileChangeObserver: AnyObject, Sendable {
    func willChange(recordBytes: Int) throws(FSError)
    func fileChanged(_ change: FileChange)
    func changeAbandoned()
}

extension FileChangeObserver {
    /// An observer that keeps no journal refuses nothing.
    public func willChange(recordBytes: Int) throws(FSError) {}
    public func changeAbandoned() {}
}

extension OffloadedFile {
    /// Tells the observer the change about to be made: its file-range records hold at
    /// most `pieces` extents carrying `memoryBytes` of RAM bytes. Call before the first
    /// alteration of the file (after reversible work such as allocating). Caller holds
    /// the write lock, inside `changing`.
    func willChange(pieces: Int, memoryBytes: Int = 0) throws(FSError) {
        try observer?.willChange(recordBytes: MetadataRecord.fileRangeBound(pieces: pieces, memoryBytes: memoryBytes))
    }

    /// The extents covering `range` (clipped to it and to the size), holes left out.
    /// Caller holds the lock.
    func pieces(in range: Range<UInt64>) -> [FilePiece] {
        let clipped = range.clamped(to: 0..<sizeBytes)
        guard !clipped.isEmpty, var i = extents.floor(clipped.lowerBound) else { return [] }
        var pieces: [FilePiece] = []
        while extents.key(at: i) < clipped.upperBound {
            let start = extents.key(at: i), extent = extents.value(at: i)
            if !extent.isHole {
                let part = (start..<start + extent.size).clamped(to: clipped)
                if !part.isEmpty {
                    pieces.append(FilePiece(offset: part.lowerBound,
                                            extent: extent.slice(part.lowerBound - start..<part.upperBound - start)))
                }
            }
            guard let next = extents.index(after: i) else { break }
            i = next
        }
        return pieces
    }

    /// The whole file as a checkpoint stores it: its size and every extent but holes.
    public func snapshot() -> (size: UInt64, pieces: [FilePiece]) {
        lock.withReadLock { (sizeBytes, pieces(in: 0..<sizeBytes)) }
    }

    /// A file rebuilt by recovery. `pieces` are sorted, disjoint, inside `size`; the
    /// references of their image ranges are already counted for this file (one per
    /// block each piece touches, as `BackingStore.restoreAllocation` was told). RAM
    /// pieces go back to RAM while the budget allows, else to new image blocks; on a
    /// read-only image they all stay in RAM.
    public static func restored(store: BackingStore, limiter: MemoryLimiter, size: UInt64,
                                pieces: [FilePiece]) throws(FSError) -> OffloadedFile {
        let file = OffloadedFile(store: store, limiter: limiter)
        try file.lock.withWriteLock { () throws(FSError) in
            var cursor: UInt64 = 0
            for piece in pieces {
                precondition(piece.offset >= cursor && piece.offset + piece.extent.size <= size,
                             "restored pieces must be sorted, disjoint and inside the file")
                file.extendWithHole(to: piece.offset)
                switch piece.extent {
                case .inMemory where store.isReadOnly:
                    file.limiter.reserveRegardless(piece.extent.memoryCharge)
                    file.insert([piece.extent], at: piece.offset)
                case .inMemory(let bytes):
                    let placed = try bytes.withUnsafeBytes { buffer in
                        Result { () throws(FSError) in try file.place(buffer, at: piece.offset) }
                    }.get()
                    file.insert(placed, at: piece.offset)
                default:
                    file.insert([piece.extent], at: piece.offset)
                }
                cursor = piece.offset + piece.extent.size
            }
            file.extendWithHole(to: size)
            file.zeroTailAfterChange = nil
        }
        return file
    }
}

extension OffloadedFile {
    /// A file read back from format 2's tree (`VolumeNamespace`): `pieces` are sorted,
    /// disjoint and inside `size`. Unlike `restored`, the file takes a reference of its own
    /// on each image piece (`retainOwned`: the block tree counts the items, not the files
    /// in memory); RAM pieces (inline extents, at most 1 KiB each) stay in RAM, charged to
    /// the limiter whatever its budget, as a read-only image's do.
    public static func loaded(store: any FileBlockStore, limiter: MemoryLimiter, size: UInt64,
                              pieces: [FilePiece]) -> OffloadedFile {
        let file = OffloadedFile(store: store, limiter: limiter)
        file.lock.withWriteLock {
            for piece in pieces {
                precondition(piece.offset >= file.sizeBytes && piece.offset + piece.extent.size <= size,
                             "loaded pieces must be sorted, disjoint and inside the file")
                file.extendWithHole(to: piece.offset)
                switch piece.extent {
                case .mmapOffload(let offset, let length): store.adopt(offset..<offset + length)
                case .inMemory: limiter.reserveRegardless(piece.extent.memoryCharge)
                case .repeatingBytes: break
                }
                file.insert([piece.extent], at: piece.offset)
            }
            file.extendWithHole(to: size)
        }
        return file
    }
}
