extension JournalChange {
    /// The format 2 record of a file's change: `change.pieces` leave holes out, a record's
    /// pieces tile its range, so each gap becomes a fill of zeros (which the tree keeps no
    /// item for, btrfs's NO_HOLES). The range keeps its part past the new size: the tree
    /// drops the extents there.
    public static func fileRange(inode: UInt64, _ change: FileChange) -> JournalChange {
        var pieces: [FilePiece] = []
        pieces.reserveCapacity(change.pieces.count * 2 + 1)
        var cursor = change.range.lowerBound
        for piece in change.pieces {
            precondition(piece.offset >= cursor && piece.offset + piece.extent.size <= change.range.upperBound,
                         "file change pieces out of order or outside their range")
            if piece.offset > cursor {
                pieces.append(FilePiece(offset: cursor, extent: .repeatingBytes(value: 0, count: piece.offset - cursor)))
            }
            pieces.append(piece)
            cursor = piece.offset + piece.extent.size
        }
        if cursor < change.range.upperBound {
            pieces.append(FilePiece(offset: cursor, extent: .repeatingBytes(value: 0, count: change.range.upperBound - cursor)))
        }
        return .fileRange(inode: inode, size: change.size, range: change.range, pieces: pieces)
    }
}
