/// Where a `MetadataLog` takes its segments and writes its frames: format 1's
/// `BackingStore`, or format 2's block space (`TreeVolumeLogSpace`). The seam is three
/// calls, so the log's framing, linking and reading are one code for both formats.
public protocol MetadataLogSpace: AnyObject, Sendable {
    /// A block-aligned byte range of the image for a segment: contiguous, about
    /// `byteCount` bytes (fewer when the space has no such run; the log refuses one too
    /// short for what it needs, and gives it back).
    func allocateLogSegment(byteCount: Int) throws(FSError) -> Range<UInt64>
    /// Gives a segment back, once nothing on disk names it.
    func releaseLogSegment(_ range: Range<UInt64>)
    /// Writes frame bytes at a byte offset inside a segment of the log.
    func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError)
}

extension BackingStore: MetadataLogSpace {
    public func allocateLogSegment(byteCount: Int) throws(FSError) -> Range<UInt64> {
        try allocate(byteCount: byteCount, hint: nil, forMetadata: true)
    }

    public func releaseLogSegment(_ range: Range<UInt64>) { release(range) }

    public func writeLog(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try writeMetadata(bytes, at: offset)
    }
}
