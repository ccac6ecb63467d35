/// A file's extent list as replay rebuilds it from `fileRange` records: the pieces that
/// are not holes, keyed by file offset, and the size. Applying a record replaces what the
/// record's range held and cuts everything at or past the record's size.
public final class ReplayedFile {
    public private(set) var size: UInt64 = 0
    let pieces = ChunkedSortedMap<Extent>()

    public init() {}

    public func apply(size newSize: UInt64, range: Range<UInt64>, pieces newPieces: [FilePiece]) {
        remove(range)
        if newSize < size || newSize < (pieces.isEmpty ? 0 : lastEnd) {
            remove(newSize..<UInt64.max)
        }
        for piece in newPieces where piece.offset < newSize {
            let end = min(piece.offset + piece.extent.size, newSize)
            let kept = end - piece.offset < piece.extent.size ? piece.extent.slice(0..<end - piece.offset) : piece.extent
            _ = pieces.insert(piece.offset, kept)
        }
        size = newSize
    }

    /// The pieces in offset order.
    public var pieceList: [FilePiece] {
        var list: [FilePiece] = []
        pieces.forEach { list.append(FilePiece(offset: $0, extent: $1)) }
        return list
    }

    private var lastEnd: UInt64 {
        guard let i = pieces.floor(UInt64.max) else { return 0 }
        return pieces.key(at: i) + pieces.value(at: i).size
    }

    /// Removes whatever lies in `range`, keeping the parts of pieces outside it.
    private func remove(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        var cursor = pieces.floor(range.lowerBound) ?? pieces.ceiling(range.lowerBound)
        var kept: [(UInt64, Extent)] = []
        while let i = cursor {
            let start = pieces.key(at: i), extent = pieces.value(at: i)
            guard start < range.upperBound else { break }
            let end = start + extent.size
            guard end > range.lowerBound else {
                cursor = pieces.index(after: i)
                continue
            }
            if start < range.lowerBound { kept.append((start, extent.slice(0..<range.lowerBound - start))) }
            if end > range.upperBound {
                kept.append((range.upperBound, extent.slice(range.upperBound - start..<extent.size)))
            }
            cursor = pieces.remove(at: i)
        }
        for (start, extent) in kept { _ = pieces.insert(start, extent) }
    }
}
