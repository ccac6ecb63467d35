/// Where a `MetadataLog` takes its segments and writes its frames: format 1's
/// `BackingStore`, or format 2's block space (`TreeVolumeLogSpace`). The seam is three
/// calls, and three for spare segments that have defaults, so the log's framing, linking
/// and reading are one code for both formats.
public protocol MetadataLogSpace: AnyObject, Sendable {
    /// A block-aligned byte range of the image for a segment: contiguous, about
    /// `byteCount` bytes (fewer when the space has no such run). The log needs at least
    /// `minimumBytes` (at most `byteCount`): a store looks for a run that long before it
    /// hands out a shorter one, and the log refuses one too short and gives it back.
    func allocateLogSegment(byteCount: Int, minimumBytes: Int) throws(FSError) -> Range<UInt64>
    /// Gives a segment back, once nothing on disk names it.
    func releaseLogSegment(_ range: Range<UInt64>)
    /// Writes frame bytes at a byte offset inside a segment of the log.
    func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError)

    /// `allocateLogSegment` for a spare: a segment taken ahead, which the chain links
    /// later (`linkSpareSegment`) or gives back (`releaseSpareSegment`). Until it is
    /// linked, no chain on disk names it, so a store that records its segments (format
    /// 2's block tree) must not record it yet: a crash would leave it recorded and named
    /// by nothing.
    func allocateSpareSegment(byteCount: Int, minimumBytes: Int) throws(FSError) -> Range<UInt64>
    /// The chain links a spare (`allocateSpareSegment`): from now on it is one of the
    /// chain's segments.
    func linkSpareSegment(_ range: Range<UInt64>)
    /// Gives back a spare the chain never linked.
    func releaseSpareSegment(_ range: Range<UInt64>)
}

extension MetadataLogSpace {
    /// A store that records nothing of its segments (format 1: a mount finds what is in
    /// use from its checkpoint and chains) treats a spare as any segment.
    public func allocateSpareSegment(byteCount: Int, minimumBytes: Int) throws(FSError) -> Range<UInt64> {
        try allocateLogSegment(byteCount: byteCount, minimumBytes: minimumBytes)
    }

    public func linkSpareSegment(_ range: Range<UInt64>) {}

    public func releaseSpareSegment(_ range: Range<UInt64>) { releaseLogSegment(range) }
}

extension BackingStore: MetadataLogSpace {
    /// Format 1 leaves `minimumBytes` to the log's check, as before the seam had it: its
    /// allocator's fallback takes the first run of its largest size class (or the space
    /// above its high-water mark), which may be shorter than a longer run elsewhere.
    /// (Format 1 images are upgraded at their first read-write mount unless
    /// `mount --format 1` keeps them.)
    public func allocateLogSegment(byteCount: Int, minimumBytes: Int) throws(FSError) -> Range<UInt64> {
        try allocate(byteCount: byteCount, hint: nil, forMetadata: true)
    }

    public func releaseLogSegment(_ range: Range<UInt64>) { release(range) }

    public func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try writeMetadata(bytes, at: offset)
    }
}
