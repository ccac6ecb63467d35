/// The journal's segments in format 2's block space: taken as blocks of use `.journal`
/// (recorded in the block tree by the next commit, one reference each), given back as a release (a
/// pending free of the commit after the one that stopped naming them).
///
/// `@unchecked Sendable`: `BlockSpace` has one user at a time, and so does this, with the
/// volume (step 7 puts the request path's locks in front of both).
final class TreeVolumeLogSpace: MetadataLogSpace, @unchecked Sendable {
    let space: BlockSpace
    let storage: any ImageStorage

    init(space: BlockSpace, storage: any ImageStorage) {
        self.space = space
        self.storage = storage
    }

    func allocateLogSegment(byteCount: Int) throws(FSError) -> Range<UInt64> {
        let blocks = try space.allocateData(upTo: UInt64((byteCount + BackingStore.blockSize - 1) / BackingStore.blockSize),
                                           use: .journal)
        return (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
    }

    func releaseLogSegment(_ range: Range<UInt64>) {
        space.release((range.lowerBound >> BackingStore.blockShift)..<(range.upperBound >> BackingStore.blockShift))
    }

    func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try storage.write(bytes, at: offset)
    }
}
