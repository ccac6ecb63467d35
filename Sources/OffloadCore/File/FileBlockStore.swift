/// What an `OffloadedFile` needs of the image: blocks to own, and their bytes.
///
/// The seam between the files and the two image formats (docs/ARCHITECTURE.md, "Metadata
/// at scale", step 4d): format 1's `BackingStore` counts every block's references in
/// memory and frees blocks through its quarantine; format 2's `VolumeFileBlocks` hands
/// out blocks of the block space, whose references the volume's commits record from the
/// extents they write. Both share the bytes' side (`ImageMapping`).
///
/// Ownership: `allocate` hands the caller one reference on each block of the range;
/// `retain` and `retainOwned` add one on every block a range touches, `release` drops
/// one. An extent of a file holds one reference on every block its bytes touch.
public protocol FileBlockStore: AnyObject, Sendable {
    /// The image's mapping: reads, writes and syncs of the bytes.
    var image: ImageMapping { get }

    /// Bytes that can still be allocated for file data: what `df` shows as available.
    var availableBytes: UInt64 { get }

    /// False when `allocate` cannot hand out `byteCount` bytes (rounded up to whole
    /// blocks) now, in all: the check a fallocate makes before it takes anything
    /// (`OffloadedFile.preallocate`). Never false where `allocate` would hand them out.
    /// Format 2 counts what its `allocate` keeps back for RAM pieces' promises and for
    /// the commits of waiting changes, which `availableBytes` (the free blocks) does not.
    func hasRoom(forDataBytes byteCount: UInt64) -> Bool

    /// Allocates up to `byteCount` bytes (rounded up to whole blocks) and returns the byte
    /// range of the blocks, one reference each for the caller. Shorter than asked when
    /// free space is fragmented, never empty; the blocks have disk space. Their bytes are
    /// the free space's: zeros, except where a crash left blocks written and never
    /// committed (format 2), so a caller that maps them without writing them first makes
    /// them read as zeros (`clearLeftovers`).
    /// `hint` is the block-aligned byte offset the caller would like the range to start at.
    func allocate(byteCount: Int, hint: UInt64?) throws(FSError) -> Range<UInt64>

    /// Adds a reference to every block that `range` touches; `.invalidArgument` when a
    /// block is not in use.
    func retain(_ range: Range<UInt64>) throws(FSError)

    /// `retain` of a range the caller holds a reference on already (splitting or sharing
    /// an extent it has), so it cannot fail.
    func retainOwned(_ range: Range<UInt64>)

    /// Drops a reference from every block each of `ranges` touches. `dropped` are the
    /// image bytes a file let go of in a change that is journaled but maybe not durable:
    /// until a sync, a power cut can bring that file's claim on them back, so whoever
    /// still shares their blocks must not overwrite them in place.
    func release(_ ranges: [Range<UInt64>], unsharing dropped: [Range<UInt64>])

    /// True when the one extent covering `range` may overwrite its blocks in place: no one
    /// else references them, now or in what a power cut could bring back.
    func isExclusive(_ range: Range<UInt64>) -> Bool

    /// True when the block holding byte `offset` is in use (invariant checks).
    func isInUse(byte offset: UInt64) -> Bool

    /// Whether `byteCount` bytes may be held in RAM (a small write) rather than written to
    /// blocks now: true when the space they will need once they are written out later is
    /// there, and counted as promised. Format 1 writes them into its checkpoint, whose
    /// room its metadata reserve keeps; format 2's commit writes them to data blocks
    /// (`VolumeFileBlocks`).
    func admitsMemoryPiece(byteCount: Int) -> Bool

    /// Takes over, for a file loaded into memory, references the image's records already
    /// hold (format 2: a file's committed extent items, which its block tree counts).
    /// Loading is not a change: format 2 marks nothing touched for it.
    func adopt(_ range: Range<UInt64>)

    /// Lets go of references a clean file held, leaving memory while the image's records
    /// keep them (the inverse of `adopt`).
    func abandon(_ range: Range<UInt64>)

    /// Gives back a range `allocate` handed out that nothing named and no byte but zeros
    /// was written to (a write refused before it wrote any: `OffloadedFile.place`; a
    /// fallocate's pieces, their leftovers zeroed: `preallocate`): its blocks are as the
    /// free space gave them, or zeros, so they may be free again at once, and letting go
    /// of them gives nothing back that was not free before (format 2 does not count it as
    /// a release, `VolumeFileBlocks.releases`).
    func giveBackUnwritten(_ range: Range<UInt64>)
}

extension FileBlockStore {
    public func admitsMemoryPiece(byteCount: Int) -> Bool { true }

    /// Where data allocations keep nothing back beyond what `availableBytes` leaves out
    /// (format 1: the metadata reserve), the available bytes are the room.
    public func hasRoom(forDataBytes byteCount: UInt64) -> Bool { byteCount <= availableBytes }

    /// Where references are all counted in memory (format 1), loading one counts it.
    public func adopt(_ range: Range<UInt64>) { retainOwned(range) }
    public func abandon(_ range: Range<UInt64>) { release(range) }
    /// Format 1 frees through its quarantine whatever was written: a release.
    public func giveBackUnwritten(_ range: Range<UInt64>) { release(range) }

    /// `release` of one range that no journaled change dropped.
    public func release(_ range: Range<UInt64>) { release([range], unsharing: []) }

    /// `allocate` without a placement hint.
    public func allocate(byteCount: Int) throws(FSError) -> Range<UInt64> {
        try allocate(byteCount: byteCount, hint: nil)
    }

    // The bytes' side, forwarded to the mapping.

    @inline(__always)
    public func copyOut(from offset: UInt64, into destination: UnsafeMutableRawPointer, count: Int) throws(FSError) {
        try image.copyOut(from: offset, into: destination, count: count)
    }

    @inline(__always)
    public func copyIn(_ source: UnsafeRawPointer, to offset: UInt64, count: Int, fresh: Bool = false) throws(FSError) {
        try image.copyIn(source, to: offset, count: count, fresh: fresh)
    }

    public func copyIn(_ bytes: [UInt8], to offset: UInt64) throws(FSError) { try image.copyIn(bytes, to: offset) }

    public func bytes(at offset: UInt64, count: Int) -> UnsafeRawBufferPointer { image.bytes(at: offset, count: count) }

    @inline(__always)
    public func checkReadable(_ bytes: UnsafeRawBufferPointer) throws(FSError) { try image.checkReadable(bytes) }

    /// Makes blocks the caller owns, and maps without writing them, read as zeros: when
    /// they may hold bytes (`ImageStorage.mayHoldData`: a crash left them written and
    /// uncommitted) they are zeroed, keeping their disk space (`ImageStorage.zero`), and
    /// the result is true. The caller then syncs before the change that maps them is
    /// journaled, so that no power cut keeps the change without the zeros.
    public func clearLeftovers(in range: Range<UInt64>) throws(FSError) -> Bool {
        guard image.storage.mayHoldData(range) else { return false }
        try image.storage.zero(range)
        return true
    }

    public func sync() throws(FSError) { try image.sync() }
    public var syncEpoch: UInt64 { image.syncEpoch }
    public func isDurable(since epoch: UInt64) -> Bool { image.isDurable(since: epoch) }
}
