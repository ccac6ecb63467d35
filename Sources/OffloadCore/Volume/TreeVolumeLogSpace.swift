/// The journal's segments in format 2's block space: taken as blocks of use `.journal`
/// (recorded in the block tree by the next commit, one reference each), given back as a release (a
/// pending free of the commit after the one that stopped naming them).
///
/// Segments are taken and given back under the volume's space lock, which this takes
/// itself: a chain's calls come from operations holding only the journal lock, and from a
/// commit's chain switch before it takes the space lock (`@unchecked Sendable`: the block
/// space is reached only under that lock). Operations' segments may use the first quarter
/// of the metadata reserve, the commit's new chain all of it (`BlockSpace+Reserve.swift`).
final class TreeVolumeLogSpace: MetadataLogSpace, @unchecked Sendable {
    let space: BlockSpace
    let storage: any ImageStorage
    let lock: PthreadLock
    /// How much of the reserve segments may take: `.journal`, or `.commit` while a commit
    /// switches chains (set and read under the volume's journal lock, which every chain
    /// call holds).
    var access: ReserveAccess = .journal

    init(space: BlockSpace, storage: any ImageStorage, lock: PthreadLock) {
        self.space = space
        self.storage = storage
        self.lock = lock
    }

    func allocateLogSegment(byteCount: Int) throws(FSError) -> Range<UInt64> {
        let blocks = try lock.withLock { () throws(FSError) -> Range<UInt64> in
            try space.allocateData(upTo: UInt64((byteCount + BackingStore.blockSize - 1) / BackingStore.blockSize),
                                   use: .journal, reserve: access)
        }
        return (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
    }

    func releaseLogSegment(_ range: Range<UInt64>) {
        lock.withLock {
            space.release((range.lowerBound >> BackingStore.blockShift)..<(range.upperBound >> BackingStore.blockShift))
        }
    }

    func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try storage.write(bytes, at: offset)
    }
}
