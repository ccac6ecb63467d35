/// A regular file's bytes as extent items, (ino, extent, file offset) (docs/FORMAT.md,
/// "Extent item"): disjoint, each inside the file's size. Bytes below the size that no
/// item covers read as zeros, so holes and zero fills take no item at all (btrfs's
/// NO_HOLES): growing a file by truncate, or punching a hole, writes nothing for the hole.
extension FileSystemTree {
    static func extentKey(_ inode: UInt64, _ offset: UInt64) -> TreeKey { key(inode, .extent, offset) }

    /// The extents of `inode` overlapping `range`, in file order, each with its file offset.
    public func extents(_ inode: UInt64, overlapping range: Range<UInt64>) throws(FSError)
        -> [(offset: UInt64, extent: ExtentItem)] {
        guard !range.isEmpty else { return [] }
        var found: [(offset: UInt64, extent: ExtentItem)] = []
        // The extent starting below the range may reach into it.
        let first = Self.extentKey(inode, range.lowerBound)
        if let floor = try tree.floor(first), floor.key < first,
           floor.key.object == inode, floor.key.kind == ItemKind.extent.rawValue {
            let extent: ExtentItem = try floor.value.withUnsafeBytes { raw in
                Result { () throws(FSError) -> ExtentItem in try Self.decode(floor.key, raw) }
            }.get()
            if try Self.end(of: extent, at: floor.key) > range.lowerBound { found.append((floor.key.offset, extent)) }
        }
        try scan(inode, .extent, range.lowerBound...range.upperBound - 1) { (offset, raw) throws(FSError) in
            let key = Self.extentKey(inode, offset)
            let extent: ExtentItem = try Self.decode(key, raw)
            _ = try Self.end(of: extent, at: key)
            if let last = found.last, last.offset + last.extent.length > offset {
                throw .damagedImage("inode \(inode): extents at \(last.offset) and \(offset) overlap")
            }
            found.append((offset, extent))
            return true
        }
        return found
    }

    /// The bytes `inode`'s extent items store (image and inline extents; fills store
    /// none): `st_blocks` of a file the delta does not change, without decoding its
    /// extents into pieces (`LayeredFileSystem.storedBytes`).
    public func storedBytes(_ inode: UInt64) throws(FSError) -> UInt64 {
        var total: UInt64 = 0
        try scan(inode, .extent) { (offset, raw) throws(FSError) in
            let key = Self.extentKey(inode, offset)
            let length: UInt64
            do throws(ByteReader.Malformed) {
                length = try ExtentItem.storedLength(raw)
            } catch {
                throw .damagedImage("filesystem tree item \(key): \(error.description)")
            }
            // A damaged image's lengths must not overflow the sum (a trap, not an error).
            let (sum, overflow) = total.addingReportingOverflow(length)
            guard !overflow, key.offset <= OffloadedFile.maximumSize, length <= OffloadedFile.maximumSize - key.offset,
                  sum <= OffloadedFile.maximumSize else {
                throw .damagedImage("extents of inode \(inode) store more than the largest file, at \(key)")
            }
            total = sum
            return true
        }
        return total
    }

    /// Where an extent item ends in its file; damage past the largest file.
    static func end(of extent: ExtentItem, at key: TreeKey) throws(FSError) -> UInt64 {
        guard key.offset <= OffloadedFile.maximumSize, extent.length <= OffloadedFile.maximumSize - key.offset else {
            throw .damagedImage("extent \(key) of \(extent.length) bytes ends past the largest file")
        }
        return key.offset + extent.length
    }

    /// `range` of the file now holds `pieces` and the file is `size` bytes long: the items
    /// overlapping the range or lying past the size are cut out (their parts outside both
    /// stay), then the pieces go in, clipped to the size. Zero fills take no item; RAM
    /// pieces become inline extents (the commit places longer ones in the image first).
    func replaceRange(_ inode: UInt64, size: UInt64, range: Range<UInt64>, with pieces: [FilePiece],
                      _ references: inout ExtentReferenceChanges) throws(FSError) {
        var added: [(offset: UInt64, extent: ExtentItem)] = []
        for piece in pieces {
            let item: ExtentItem
            switch piece.extent {
            case .repeatingBytes(0, _): continue
            case .repeatingBytes(let byte, let count): item = .fill(byte: byte, length: count)
            case .mmapOffload(let offset, let length): item = .image(offset: offset, length: length)
            case .inMemory(let bytes):
                guard bytes.count <= ExtentItem.inlineLimit else {
                    throw .invalidArgument("a RAM piece of \(bytes.count) bytes is longer than an inline extent; place it in the image first")
                }
                item = .inline(bytes)
            }
            guard piece.offset < size else { continue }
            let kept = piece.offset..<min(size, piece.offset + item.length)
            added.append((kept.lowerBound, Self.slice(item, kept.lowerBound - piece.offset, kept.count)))
        }
        // The items to cut: those overlapping the range, and those reaching past the size.
        // One search when the two meet (a file written from its start to its end, as
        // every file a copy makes): each is a floor and a scan of the tree.
        var cut: [(offset: UInt64, extent: ExtentItem)]
        if range.isEmpty || range.upperBound >= size {
            cut = try extents(inode, overlapping: min(range.isEmpty ? size : range.lowerBound, size)..<UInt64.max)
        } else {
            cut = try extents(inode, overlapping: range)
            for past in try extents(inode, overlapping: size..<UInt64.max) where !cut.contains(where: { $0.offset == past.offset }) {
                cut.append(past)
            }
        }
        var kept: [(offset: UInt64, extent: ExtentItem)] = []
        for (offset, extent) in cut {
            // What stays of it below the size (nothing, for an extent wholly past it).
            let whole = offset..<max(offset, min(size, offset + extent.length))
            let before = whole.lowerBound..<max(whole.lowerBound, min(whole.upperBound, range.lowerBound))
            let after = min(whole.upperBound, max(whole.lowerBound, range.upperBound))..<whole.upperBound
            for part in [before, after] where !part.isEmpty {
                kept.append((part.lowerBound, Self.slice(extent, part.lowerBound - offset, part.count)))
            }
        }
        let placed = Self.joined(kept + added)
        // An overwrite in place (the same image bytes, or the same fill) leaves the items as
        // they were: nothing to write, no reference to move. Random writes into a file
        // allocated earlier are all of this kind; before, each cut its extent in three and
        // the commit moved every block's reference twice.
        if placed.elementsEqual(cut.sorted { $0.offset < $1.offset }, by: { $0.offset == $1.offset && $0.extent == $1.extent }) {
            return
        }
        for (_, extent) in cut { references.release(extent) }
        for (_, extent) in placed { references.retain(extent) }
        try tree.groupedChange { () throws(FSError) in
            for (offset, _) in cut { _ = try tree.remove(Self.extentKey(inode, offset)) }
            for (offset, extent) in placed { try tree.upsert(Self.extentKey(inode, offset), extent.encoded()) }
        }
    }

    /// `items` (disjoint) in file order, neighbours that continue each other joined: image
    /// extents whose bytes follow on in the image too, fills of the same byte. Inline
    /// extents stay as they are (an inline extent has a size limit).
    static func joined(_ items: [(offset: UInt64, extent: ExtentItem)]) -> [(offset: UInt64, extent: ExtentItem)] {
        var joined: [(offset: UInt64, extent: ExtentItem)] = []
        for item in items.sorted(by: { $0.offset < $1.offset }) {
            if let last = joined.last, last.offset + last.extent.length == item.offset {
                switch (last.extent, item.extent) {
                case (.image(let start, let length), .image(let next, let more)) where start + length == next:
                    joined[joined.count - 1].extent = .image(offset: start, length: length + more)
                    continue
                case (.fill(let byte, let length), .fill(let other, let more)) where byte == other:
                    joined[joined.count - 1].extent = .fill(byte: byte, length: length + more)
                    continue
                default:
                    break
                }
            }
            joined.append(item)
        }
        return joined
    }

    /// `length` bytes of `extent` from `start` bytes into it.
    static func slice(_ extent: ExtentItem, _ start: UInt64, _ length: Int) -> ExtentItem {
        precondition(length > 0 && start + UInt64(length) <= extent.length)
        switch extent {
        case .image(let offset, _): return .image(offset: offset + start, length: UInt64(length))
        case .fill(let byte, _): return .fill(byte: byte, length: UInt64(length))
        case .inline(let bytes): return .inline(Array(bytes[Int(start)..<Int(start) + length]))
        }
    }
}
