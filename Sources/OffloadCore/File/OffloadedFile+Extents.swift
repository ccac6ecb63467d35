// The extent list's mutation primitives, shared by every change (caller holds the write
// lock): `replace` = `removeRange` + `insert`, merging across new boundaries, and the
// storage accounting of what a change drops (released after the observer ran: see
// `pendingReleases`, `pendingUnshares`).

extension OffloadedFile {
    /// Replaces file bytes `range` (which starts at or below the size) with `pieces`,
    /// whose sizes add up to `range.count`. The pieces' storage references pass to the
    /// file; what `range` held before is released.
    func replace(_ range: Range<UInt64>, with pieces: [Extent]) {
        precondition(range.lowerBound <= sizeBytes)
        assert(pieces.reduce(0) { $0 + $1.size } == range.length)
        if range.lowerBound < sizeBytes {
            removeRange(range.lowerBound..<min(range.upperBound, sizeBytes))
        }
        insert(pieces, at: range.lowerBound)
    }

    /// Removes the extents covering `range` (within the size), keeping the parts of the
    /// boundary extents outside it. Leaves a gap that the caller fills, or shrinks the
    /// file when `range` reaches the end.
    func removeRange(_ range: Range<UInt64>) {
        precondition(range.upperBound <= sizeBytes && !range.isEmpty)
        guard var i = extents.floor(range.lowerBound) else { preconditionFailure("no extent at \(range.lowerBound)") }
        var kept: [(UInt64, Extent)] = []
        var removed: [Extent] = []
        var references: [ExtentCut] = []
        while true {
            let start = extents.key(at: i)
            guard start < range.upperBound else { break }
            let extent = extents.value(at: i)
            let end = start + extent.size
            if start < range.lowerBound {
                kept.append((start, extent.slice(0..<range.lowerBound - start)))
            }
            if end > range.upperBound {
                kept.append((range.upperBound, extent.slice(range.upperBound - start..<extent.size)))
            }
            removed.append(extent)
            if case .mmapOffload(let imageOffset, let size) = extent {
                let dropped = (max(start, range.lowerBound) - start)..<(min(end, range.upperBound) - start)
                references.append(ExtentCut(image: imageOffset..<imageOffset + size, dropped: dropped))
                if observer != nil {
                    pendingUnshares.append(imageOffset + dropped.lowerBound..<imageOffset + dropped.upperBound)
                }
            }
            guard let next = extents.remove(at: i) else { break }
            i = next
        }
        // The kept parts keep their blocks' references: only the net change of each block
        // reaches the store. Dropping the whole extent and retaining the kept parts again
        // (the first version) changed the references of every block of the extent, so on
        // format 2 one copied 4 KiB block of a 1 MiB extent marked all 256 touched, and
        // every later write into them copied too until the next commit was published.
        // The second references come first, so shared blocks never pass through zero.
        for change in references {
            if let twice = change.heldTwice { store.retainOwned(twice) }
        }
        var keptMemory = 0
        for (_, piece) in kept { keptMemory += piece.memoryCharge }
        // RAM: the kept slices keep part of the removed extents' reservation (each slice
        // its bytes and an overhead).
        var removedMemory = 0
        for extent in removed {
            removedMemory += extent.memoryCharge
            storedBytes -= extent.storedBytes
        }
        for change in references {
            if let released = change.released { dropStorage(of: released) }
        }
        // A RAM piece cut in two keeps two overheads where it had one: a cut that drops
        // fewer bytes than that charges the difference (past the budget: the bytes are
        // held already).
        if removedMemory >= keptMemory {
            limiter.release(removedMemory - keptMemory)
        } else {
            limiter.reserveRegardless(keptMemory - removedMemory)
        }
        for (start, piece) in kept {
            extents.insert(start, piece)
            storedBytes += piece.storedBytes
        }
        if range.upperBound == sizeBytes { sizeBytes = range.lowerBound }
    }

    /// Inserts `pieces` (already holding their storage) into the gap at `offset`, then
    /// merges across every new boundary.
    func insert(_ pieces: [Extent], at offset: UInt64) {
        var position = offset
        for piece in pieces where piece.size > 0 {
            extents.insert(position, piece)
            storedBytes += piece.storedBytes
            position += piece.size
        }
        sizeBytes = max(sizeBytes, position)
        // Merge from the right so earlier keys stay valid.
        mergeWithPrevious(at: position)
        var boundaries: [UInt64] = []
        position = offset
        for piece in pieces where piece.size > 0 {
            boundaries.append(position)
            position += piece.size
        }
        for boundary in boundaries.reversed() { mergeWithPrevious(at: boundary) }
    }

    /// Merges the extent starting at `offset` into the one before it when the second
    /// continues the first.
    fileprivate func mergeWithPrevious(at offset: UInt64) {
        guard let i = extents.find(offset), let p = extents.index(before: i) else { return }
        let previous = extents.value(at: p), current = extents.value(at: i)
        let merged: Extent
        switch (previous, current) {
        case let (.mmapOffload(a, aSize), .mmapOffload(b, bSize)) where a + aSize == b:
            merged = .mmapOffload(offset: a, size: aSize + bSize)
            // Both touched the block holding the boundary; the merged extent touches it once.
            if b % UInt64(BackingStore.blockSize) != 0 { store.release(b..<b + 1) }
        case let (.repeatingBytes(x, aCount), .repeatingBytes(y, bCount)) where x == y:
            merged = .repeatingBytes(value: x, count: aCount + bCount)
        case let (.inMemory(a), .inMemory(b)) where a.count + b.count <= Self.inMemoryExtentLimit:
            merged = .inMemory(a + b)
            // One piece now, charged one overhead.
            limiter.release(Extent.memoryPieceOverhead)
        default:
            return
        }
        extents.setValue(merged, at: p)
        extents.remove(at: i)
    }

    /// Gives back a piece this file allocated and never let anything name, to which
    /// nothing but zeros was written (a refused write's, `place`; a refused fallocate's,
    /// `zeroedImageExtents`): free at once (`FileBlockStore.giveBackUnwritten`), not a
    /// release that only the commits of the reuse rule make free again (a refusal on a
    /// full image then left every other writer refused until a reclaim's commits).
    func giveBackFresh(_ piece: Extent) {
        guard case .mmapOffload(let offset, let size) = piece else { return discard(piece) }
        store.giveBackUnwritten(offset..<offset + size)
    }

    /// Gives back the storage of a piece that never became part of the file (a failed
    /// write's or clone's leftovers): no record ever named it, so it needs no journal
    /// first, and this may run under the read lock (a clone's source).
    func discard(_ piece: Extent) {
        switch piece {
        case .mmapOffload(let offset, let size): store.release(offset..<offset + size)
        case .inMemory: limiter.release(piece.memoryCharge)
        case .repeatingBytes: break
        }
    }

    /// Gives back the storage an extent of the file holds (after the observer, see
    /// `pendingReleases`). Caller holds the write lock.
    func dropStorage(of extent: Extent, journaled: Bool = false) {
        switch extent {
        case .mmapOffload(let offset, let size): dropStorage(of: offset..<offset + size, journaled: journaled)
        case .inMemory: limiter.release(extent.memoryCharge)
        case .repeatingBytes: break
        }
    }

    /// Drops one reference on every block `image` touches: after the observer when the
    /// change is journaled, at once otherwise.
    private func dropStorage(of image: Range<UInt64>, journaled: Bool = false) {
        if observer != nil || journaled {
            pendingReleases.append(image)
        } else {
            store.release(image)
        }
    }

    /// Lets a clean file go from memory: every extent is dropped, its image references
    /// handed back with `abandon` (the image's records keep them: format 2 marks nothing
    /// touched), its RAM bytes given back to the limiter; no observer hears of it. For a
    /// file whose every change the image holds (loaded with `loaded`, changes committed).
    public func unload() {
        lock.withWriteLock {
            observer = nil
            precondition(pendingReleases.isEmpty && pendingUnshares.isEmpty, "unloading a file in the middle of a change")
            extents.forEach { _, extent in
                switch extent {
                case .mmapOffload(let offset, let size): store.abandon(offset..<offset + size)
                case .inMemory: limiter.release(extent.memoryCharge)
                case .repeatingBytes: break
                }
            }
            extents.removeAll()
            sizeBytes = 0
            storedBytes = 0
        }
    }

    /// Removes every extent, giving back all storage. Caller holds the lock (or is deinit).
    /// `journaled`: the drop is recorded already (`releaseAll`), so the image ranges go
    /// through `pendingReleases` like those of an observed change, then `releasePending`.
    func dropAllExtents(journaled: Bool = false) {
        let deferred = observer != nil || journaled
        extents.forEach { _, extent in
            if deferred, case .mmapOffload(let offset, let size) = extent { pendingUnshares.append(offset..<offset + size) }
            dropStorage(of: extent, journaled: journaled)
        }
        extents.removeAll()
        sizeBytes = 0
        storedBytes = 0
    }
}

/// What cutting `dropped` (offsets within the extent) out of an image extent does to its
/// blocks' references, the kept slices holding theirs: the blocks only the dropped bytes
/// touch lose one, and a block both kept slices touch (a cut inside one block) gains one.
/// Every other block keeps its count.
struct ExtentCut {
    let heldTwice: Range<UInt64>?
    let released: Range<UInt64>?

    init(image: Range<UInt64>, dropped: Range<UInt64>) {
        precondition(!image.isEmpty && !dropped.isEmpty && dropped.upperBound <= image.length)
        let blockSize = UInt64(BackingStore.blockSize)
        let whole = BackingStore.blocks(touchedBy: image)
        // The left slice is image[..<dropped.lower], the right one image[dropped.upper...].
        let leftEnd = dropped.lowerBound > 0
            ? BackingStore.blocks(touchedBy: image.lowerBound..<image.lowerBound + dropped.lowerBound).upperBound
            : whole.lowerBound
        let rightStart = dropped.upperBound < image.length
            ? BackingStore.blocks(touchedBy: image.lowerBound + dropped.upperBound..<image.upperBound).lowerBound
            : whole.upperBound
        heldTwice = rightStart < leftEnd ? rightStart * blockSize..<leftEnd * blockSize : nil
        released = leftEnd < rightStart ? leftEnd * blockSize..<rightStart * blockSize : nil
    }
}
