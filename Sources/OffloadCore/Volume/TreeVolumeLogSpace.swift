/// The journal's segments in format 2's block space: taken as blocks of use `.journal`
/// (recorded in the block tree by the next commit, one reference each), given back as a
/// release (a pending free of the commit after the one that stopped naming them). Spare
/// segments are recorded only once the chain links them (`allocateSpareSegment`).
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
    /// Spare segments the chain linked, as blocks, until the commit records them
    /// (`recordLinkedSpares`). A leaf lock.
    private let linkedSpares = PthreadMutex<[Range<UInt64>]>([])

    init(space: BlockSpace, storage: any ImageStorage, lock: PthreadLock) {
        self.space = space
        self.storage = storage
        self.lock = lock
    }

    func allocateLogSegment(byteCount: Int, minimumBytes: Int) throws(FSError) -> Range<UInt64> {
        let (wanted, least) = Self.blocks(byteCount: byteCount, minimumBytes: minimumBytes)
        let blocks = try lock.withLock { () throws(FSError) -> Range<UInt64> in
            try space.allocateData(upTo: wanted, minimum: least, use: .journal, reserve: access)
        }
        return (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
    }

    /// Taken as blocks and recorded nowhere (as the metadata reserve is), so that a crash
    /// leaves a spare that no chain links free; recorded as a journal segment of the next
    /// commit once the chain links it (`linkSpareSegment`), as a segment taken then would
    /// be. A crash after the link leaves it free in the block tree and named by the chain:
    /// replay claims it, as it claims every segment taken since the last commit.
    func allocateSpareSegment(byteCount: Int, minimumBytes: Int) throws(FSError) -> Range<UInt64> {
        let (wanted, least) = Self.blocks(byteCount: byteCount, minimumBytes: minimumBytes)
        let blocks = try lock.withLock { () throws(FSError) -> Range<UInt64> in
            try space.take(wanted, minimum: least, reserve: access)
        }
        return (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
    }

    /// Queued, not recorded here: a link happens under the journal lock, during an
    /// append, and taking the space lock there would make every operation's frame wait
    /// for a commit's whole settling, which holds it (what "Journal segments ahead of a
    /// commit's space lock" removed). The commit records the queue (`recordLinkedSpares`).
    func linkSpareSegment(_ range: Range<UInt64>) {
        linkedSpares.withLock { $0.append(Self.blocks(of: range)) }
    }

    /// Records the spares linked since the last call as journal segments of the next
    /// commit. The commit calls it right after its chain switch, before it releases the
    /// chain it switched from, which may hold them: a segment's allocation reaches the
    /// block space's changes in the commit that releases it or an earlier one. A spare
    /// linked and not yet recorded when the volume stops is free in the block tree and
    /// named by the chain: replay claims it. Takes the space lock.
    func recordLinkedSpares() {
        let linked = linkedSpares.withLock { (queue) -> [Range<UInt64>] in
            defer { queue = [] }
            return queue
        }
        guard !linked.isEmpty else { return }
        lock.withLock { for blocks in linked { space.recordJournal(blocks) } }
    }

    /// Free again at once, its disk space with it (no frame was written there).
    func releaseSpareSegment(_ range: Range<UInt64>) {
        let blocks = Self.blocks(of: range)
        lock.withLock {
            space.unprepare(blocks)
            space.giveBack(blocks)
        }
    }

    /// The blocks a segment of `byteCount` bytes wants, and the fewest that hold
    /// `minimumBytes` (at least one, at most the wanted).
    private static func blocks(byteCount: Int, minimumBytes: Int) -> (wanted: UInt64, least: UInt64) {
        let wanted = UInt64((byteCount + BackingStore.blockSize - 1) / BackingStore.blockSize)
        let least = UInt64((max(minimumBytes, 1) + BackingStore.blockSize - 1) / BackingStore.blockSize)
        return (max(wanted, 1), min(max(least, 1), max(wanted, 1)))
    }

    private static func blocks(of range: Range<UInt64>) -> Range<UInt64> {
        (range.lowerBound >> BackingStore.blockShift)..<(range.upperBound >> BackingStore.blockShift)
    }

    func releaseLogSegment(_ range: Range<UInt64>) {
        lock.withLock {
            space.release(Self.blocks(of: range))
        }
    }

    func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try storage.write(bytes, at: offset)
    }
}
