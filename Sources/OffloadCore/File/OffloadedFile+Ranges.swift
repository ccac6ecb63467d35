/// Range operations behind fallocate, lseek and copy_file_range.
extension OffloadedFile {
    // MARK: - Holes and zeros

    /// Turns `range` (clipped to the size) into a hole, freeing what it stored. The size
    /// does not change (FALLOC_FL_PUNCH_HOLE always comes with FALLOC_FL_KEEP_SIZE).
    public func punchHole(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        _ = try Self.checkedEnd(range.lowerBound, range.length)
        try changing { () throws(FSError) -> Range<UInt64>? in
            let clipped = range.clamped(to: 0..<sizeBytes)
            guard !clipped.isEmpty else { return nil }
            if try zeroInsideMemoryPiece(clipped) { return clipped }
            try willChange(pieces: 0)
            replace(clipped, with: [.repeatingBytes(value: 0, count: clipped.length)])
            return clipped
        }
    }

    /// Zeroes `range` in place when it lies strictly inside one RAM piece (bytes of the
    /// piece on both sides of it), which a hole would cut in two
    /// (`changeInsideMemoryPiece`). A range that reaches a piece's end frees its bytes as
    /// a hole does.
    private func zeroInsideMemoryPiece(_ range: Range<UInt64>) throws(FSError) -> Bool {
        guard let i = extents.floor(range.lowerBound), case .inMemory(let bytes) = extents.value(at: i) else { return false }
        let start = extents.key(at: i)
        guard range.lowerBound > start, range.upperBound < start + UInt64(bytes.count) else { return false }
        return try changeInsideMemoryPiece(range) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    /// Makes `range` read as zeros, freeing what it stored (FALLOC_FL_ZERO_RANGE). Without
    /// `keepSize` the file grows to cover the range.
    public func zeroRange(_ range: Range<UInt64>, keepSize: Bool) throws(FSError) {
        guard !range.isEmpty else { return }
        _ = try Self.checkedEnd(range.lowerBound, range.length)
        try changing { () throws(FSError) -> Range<UInt64>? in
            let old = sizeBytes
            try willChange(pieces: 0)
            if !keepSize { extendWithHole(to: range.upperBound) }
            let clipped = range.clamped(to: 0..<sizeBytes)
            guard !clipped.isEmpty else { return sizeBytes > old ? old..<sizeBytes : nil }
            if sizeBytes == old, try zeroInsideMemoryPiece(clipped) { return clipped }
            replace(clipped, with: [.repeatingBytes(value: 0, count: clipped.length)])
            // What changed: the zeroed range, and the hole up to it when the file grew
            // (then the range ends at the new size). Nothing else: the record holds no
            // extent, as the reservation says.
            return sizeBytes > old ? min(clipped.lowerBound, old)..<sizeBytes : clipped
        }
    }

    /// Gives the holes in `range` real image blocks (fallocate mode 0 or KEEP_SIZE), so
    /// that later writes there do not need new space. Without `keepSize` the file grows
    /// to cover the range. With `keepSize`, space past the end of file is not reserved:
    /// an extent list has no way to hold bytes beyond the size.
    ///
    /// A change's record carries every piece of its range, the RAM pieces' bytes
    /// included, so a range whose pieces would make it larger than `changeRecordLimit`
    /// is done in parts, each a change of its own (ext4 allocates in chunks, each its own
    /// transaction, too): one record of a file holding 64 MiB of RAM pieces between holes
    /// passed a journal frame's 64 MiB, and the namespace failed. On error the parts done
    /// stay (as ext4's do); the part that failed changed nothing.
    public func preallocate(_ range: Range<UInt64>, keepSize: Bool) throws(FSError) {
        guard !range.isEmpty else { return }
        _ = try Self.checkedEnd(range.lowerBound, range.length)
        var from = range.lowerBound, recorded = false
        while let end = try preallocatePart(from..<range.upperBound, keepSize: keepSize, recorded: &recorded) {
            from = end
        }
    }

    /// The largest record a change of a file's range makes (`MetadataRecord.fileRangeBound`
    /// of its pieces) where the range can be cut: 1 MiB, a 64th of a journal frame. A
    /// frame claimed before a chain switch needs a free run its size on an image whose
    /// free space is in pieces (`journalRoomShort`); the crash-consistency hunt of the
    /// thirty-fifth session noted that an eighth, 8 MiB, made such frames routine.
    static let changeRecordLimit = FrameHeader.maximumPayload / 64

    /// One part of `preallocate`: from `range`'s start to the end of the range or to the
    /// start of the first kept piece that would take its record past
    /// `changeRecordLimit`. Returns where the next part starts, nil when none is left.
    /// `recorded`: whether an earlier part made a change (the times are stated then).
    private func preallocatePart(_ range: Range<UInt64>, keepSize: Bool, recorded: inout Bool) throws(FSError) -> UInt64? {
        var next: UInt64?
        let changed = try changing { () throws(FSError) -> Range<UInt64>? in
            let newSize = keepSize ? sizeBytes : max(sizeBytes, range.upperBound)
            var target = range.clamped(to: 0..<newSize)
            guard !target.isEmpty else { return nil }
            // Collect the holes first, allocate for all of them, and only then change the
            // file, so that running out of space leaves it as it was.
            var holes: [Range<UInt64>] = []
            var kept = 0, keptMemory = 0  // extents in the range that stay, for the record
            var keptPlaced: [Int] = []    // the bytes of its RAM pieces a commit writes to blocks
            if target.lowerBound < sizeBytes, var i = extents.floor(target.lowerBound) {
                while extents.key(at: i) < target.upperBound {
                    let start = extents.key(at: i), extent = extents.value(at: i)
                    if extent.isHole {
                        holes.append((start..<start + extent.size).clamped(to: target))
                    } else {
                        // The part ends before a piece that would take its record past the
                        // limit (never before its first piece).
                        if kept > 0, start > target.lowerBound,
                           MetadataRecord.fileRangeBound(pieces: kept + holes.count + 3, memoryBytes: keptMemory + extent.memoryBytes)
                            > Self.changeRecordLimit {
                            target = target.lowerBound..<start
                            next = start
                            break
                        }
                        kept += 1
                        keptMemory += extent.memoryBytes
                        if extent.memoryBytes > ExtentItem.inlineLimit { keptPlaced.append(extent.memoryBytes) }
                    }
                    guard let following = extents.index(after: i) else { break }
                    i = following
                }
            }
            if target.upperBound > sizeBytes {
                holes.append(max(sizeBytes, target.lowerBound)..<target.upperBound)
            }
            // A range with no hole changes no byte and not the size: its record is an empty
            // range, which states the size and (for the namespace) the times, as ext4 and
            // tmpfs set mtime and ctime for it. Not the pieces that stay, which the commit
            // would write out again, each RAM piece over an extent item's bytes to a block
            // of its own: a full image refused such a fallocate for want of those blocks.
            // (One such record for the whole fallocate, made by its last part when no part
            // before it changed anything.)
            guard !holes.isEmpty else {
                guard next == nil, !recorded else { return nil }
                try willChange(pieces: 0)
                return target.lowerBound..<target.lowerBound
            }
            // The record carries the RAM pieces that stay in the range again, and the
            // commit writes them out again, each longer than an extent item holds to a data
            // block of its own: promised as a write's piece is (`admitsMemoryPiece`), or the
            // commit of a full image finds no room for them (the defect hunt of the
            // thirty-fourth session). An inline one counts in the commit's load
            // (`CommitLoad.inlineBytes(of:)`). First: a promise takes its blocks from the
            // free space, which the holes' check then sees.
            for bytes in keptPlaced {
                guard store.admitsMemoryPiece(byteCount: bytes) else { throw .noSpace }
            }
            // Fail at once when the holes cannot fit, instead of taking all free space
            // for the length of the call, zeroing it and giving it back. Each hole's
            // blocks are its own: a hole's partial block is a whole one. (A range with no
            // hole takes no block: a full image does not refuse it for blocks.)
            let blockSize = UInt64(BackingStore.blockSize)
            let needed = holes.reduce(UInt64(0)) { $0 + ($1.length + blockSize - 1) / blockSize * blockSize }
            guard needed == 0 || store.hasRoom(forDataBytes: needed) else { throw .noSpace }
            var filled: [(Range<UInt64>, [Extent])] = []
            do throws(FSError) {
                var cleared = false
                for hole in holes {
                    let hint = imageEndForAllocation(before: hole.lowerBound, after: filled.last)
                    filled.append((hole, try zeroedImageExtents(count: hole.length, hint: hint, cleared: &cleared)))
                }
                // Zeros made durable before the change that maps them is journaled
                // (`zeroedImageExtents`).
                if cleared { try store.sync() }
                try willChange(pieces: kept + filled.reduce(0) { $0 + $1.1.count } + 2, memoryBytes: keptMemory)
            } catch {
                for (_, pieces) in filled { for piece in pieces { giveBackFresh(piece) } }
                throw error
            }
            let old = sizeBytes
            for (hole, pieces) in filled {
                extendWithHole(to: hole.lowerBound)
                replace(hole, with: pieces)
            }
            // The filled holes and, when the file grew, the hole up to them: the
            // extents the record holds, as reserved. Nothing past the target.
            return min(old, target.lowerBound)..<target.upperBound
        }
        if changed { recorded = true }
        return next
    }

    /// Where blocks for a hole at `offset` should go to continue the image extent before
    /// it: the end of the previous piece just allocated, or of the extent ending there.
    private func imageEndForAllocation(before offset: UInt64, after previous: (Range<UInt64>, [Extent])?) -> UInt64? {
        let end: UInt64?
        if let (range, pieces) = previous, range.upperBound == offset,
           case .mmapOffload(let o, let s) = pieces.last {
            end = o + s
        } else {
            end = imageEnd(ofExtentEndingAt: offset)
        }
        guard let end, end % UInt64(BackingStore.blockSize) == 0 else { return nil }
        return end
    }

    /// Fresh image blocks covering `count` bytes that read as zeros: the free space may
    /// hold what a crash left there (blocks written and never committed), and the file
    /// maps these without writing them. Blocks that may hold bytes are zeroed, and
    /// `cleared` set: the caller syncs before the change that maps them is journaled
    /// (`FileBlockStore.clearLeftovers`; one `lseek` a piece when there are none).
    private func zeroedImageExtents(count: UInt64, hint firstHint: UInt64?, cleared: inout Bool) throws(FSError) -> [Extent] {
        var pieces: [Extent] = []
        var done: UInt64 = 0
        var hint = firstHint
        do throws(FSError) {
            while done < count {
                let chunk = Int(min(count - done, UInt64(Int32.max) & ~UInt64(BackingStore.blockSize - 1)))
                let granted = try store.allocate(byteCount: chunk, hint: hint)
                let n = min(granted.length, count - done)
                let piece = Extent.mmapOffload(offset: granted.lowerBound, size: n)
                do throws(FSError) {
                    if try store.clearLeftovers(in: granted) { cleared = true }
                } catch {
                    // A zeroing that failed (by punch, then fallocate) may have left the
                    // blocks without disk space: released as written blocks are (the
                    // commit's punch resets what the store believes backed), not given
                    // back free.
                    discard(piece)
                    throw error
                }
                pieces.append(piece)
                done += n
                hint = granted.upperBound
            }
        } catch {
            for piece in pieces { giveBackFresh(piece) }
            throw error
        }
        return pieces
    }

    // MARK: - SEEK_DATA / SEEK_HOLE

    /// The first offset at or after `offset` that holds data (SEEK_DATA). Fill runs of a
    /// non-zero byte are data. `.noSuchOffset` (ENXIO) at or past the end, or when only
    /// holes follow.
    public func nextData(from offset: UInt64) throws(FSError) -> UInt64 {
        try lock.withReadLock { () throws(FSError) in
            guard offset < sizeBytes, var i = extents.floor(offset) else { throw .noSuchOffset }
            while true {
                if !extents.value(at: i).isHole { return max(extents.key(at: i), offset) }
                guard let next = extents.index(after: i) else { throw .noSuchOffset }
                i = next
            }
        }
    }

    /// The first offset at or after `offset` that is in a hole (SEEK_HOLE); the end of
    /// file counts as a hole. `.noSuchOffset` (ENXIO) at or past the end.
    public func nextHole(from offset: UInt64) throws(FSError) -> UInt64 {
        try lock.withReadLock { () throws(FSError) in
            guard offset < sizeBytes, var i = extents.floor(offset) else { throw .noSuchOffset }
            while true {
                if extents.value(at: i).isHole { return max(extents.key(at: i), offset) }
                guard let next = extents.index(after: i) else { return sizeBytes }
                i = next
            }
        }
    }

    // MARK: - Clone (copy_file_range)

    /// Makes `count` bytes at `offset` a copy of `source`'s bytes at `sourceOffset`, sharing
    /// the source's image blocks instead of copying them (each side copies on its next
    /// write). Stops at the source's end of file; returns the number of bytes cloned.
    /// `source` may be this file, with overlapping ranges.
    @discardableResult
    public func cloneRange(from source: OffloadedFile, sourceOffset: UInt64, count: UInt64,
                           to offset: UInt64) throws(FSError) -> UInt64 {
        guard count > 0 else { return 0 }
        _ = try Self.checkedEnd(sourceOffset, count)
        guard source.store === store, source.limiter === limiter else {
            throw .invalidArgument("files live in different images or memory budgets")
        }
        // Take the source's pieces (with their own references) under its lock, then
        // release it before taking ours: the two locks are never held together.
        let (pieces, inPlaceEpoch) = try source.lock.withReadLock { () throws(FSError) -> ([Extent], UInt64?) in
            guard sourceOffset < source.sizeBytes else { return ([], nil) }
            let length = min(count, source.sizeBytes - sourceOffset)
            _ = try Self.checkedEnd(offset, length)
            return (try source.sharedPieces(sourceOffset..<sourceOffset + length), source.inPlaceWriteEpoch)
        }
        let length = pieces.reduce(0) { $0 + $1.size }
        guard length > 0 else { return 0 }
        // Blocks the source rewrote in place may still hold older bytes on disk: make them
        // durable before sharing them (as XFS and btrfs write back a reflink's source
        // range first). The pieces' references already stop the source from rewriting
        // them again meanwhile.
        if let inPlaceEpoch, !store.isDurable(since: inPlaceEpoch) {
            do throws(FSError) {
                try store.sync()
            } catch {
                for piece in pieces { discard(piece) }
                throw error
            }
        }
        try changing { () throws(FSError) -> Range<UInt64>? in
            do throws(FSError) {
                try willChange(pieces: pieces.count + 2, memoryBytes: pieces.reduce(0) { $0 + $1.memoryBytes })
            } catch {
                for piece in pieces { discard(piece) }
                throw error
            }
            let old = sizeBytes
            extendWithHole(to: offset)
            replace(offset..<offset + length, with: pieces)
            return min(old, offset)..<offset + length
        }
        return length
    }

    /// Copies of the extents covering `range`, each holding its own storage: image ranges
    /// gain a reference, RAM bytes are reserved again or, past the budget, written to
    /// fresh image blocks. Caller holds this file's lock (shared is enough). Stops before
    /// a piece that would take the clone's record past `changeRecordLimit` (never before
    /// the first): the clone is then shorter, as copy_file_range(2) may be, and its caller
    /// goes on from there. (One record of a file's 160 MB of RAM pieces passed a journal
    /// frame's 64 MiB, and the namespace failed.)
    private func sharedPieces(_ range: Range<UInt64>) throws(FSError) -> [Extent] {
        guard var i = extents.floor(range.lowerBound) else { return [] }
        var pieces: [Extent] = []
        var memoryBytes = 0
        do throws(FSError) {
            while extents.key(at: i) < range.upperBound {
                let start = extents.key(at: i), extent = extents.value(at: i)
                let part = (start..<start + extent.size).clamped(to: range)
                let piece = extent.slice(part.lowerBound - start..<part.upperBound - start)
                memoryBytes += piece.memoryBytes
                if !pieces.isEmpty,
                   MetadataRecord.fileRangeBound(pieces: pieces.count + 3, memoryBytes: memoryBytes) > Self.changeRecordLimit {
                    break
                }
                switch piece {
                case .mmapOffload(let imageOffset, let size):
                    store.retainOwned(imageOffset..<imageOffset + size)
                    pieces.append(piece)
                case .repeatingBytes:
                    pieces.append(piece)
                case .inMemory(let bytes):
                    let placed = try bytes.withUnsafeBytes { buffer in
                        Result { () throws(FSError) in try place(buffer, at: nil) }
                    }.get()
                    pieces.append(contentsOf: placed)
                }
                guard let next = extents.index(after: i) else { break }
                i = next
            }
        } catch {
            for piece in pieces { discard(piece) }
            throw error
        }
        return pieces
    }
}
