import OffloadCore

/// An image on a host file system smaller than the image's capacity (a `--size` larger
/// than the disk, or a disk that other files fill): the host's blocks are counted as the
/// image takes them (a reserve, a write or a zeroing into a hole) and given back by a
/// punch, and taking more than `hostBytes` is ENOSPC, as fallocate and pwrite answer on a
/// full disk. `hostAvailableBytes` says what is left, as statvfs would.
///
/// Writes through the mapping are not seen: the volume gives every block disk space
/// (`reserve`) before it writes there, which is what this checks.
public final class HostLimitedStorage: ForwardingImageStorage, @unchecked Sendable {
    /// The disk's size for the image: what it may hold (`otherProgramFillsTheDisk`
    /// lowers it).
    public var hostBytes: UInt64 { limit.withLock { $0 } }
    private let limit: PthreadMutex<UInt64>
    private let backed = PthreadMutex(RangeSet<UInt64>())
    static let pageSize: UInt64 = 4096

    /// After `refusePunches`: a disk that cannot punch (`FileImageStorage` on NFSv3, vfat),
    /// whose punches are refused; from the first refusal on the room is not known (nil),
    /// as `FileImageStorage` reports it then.
    private let punches = PthreadMutex((refused: false, refusedOnce: false))

    public init(_ inner: any ImageStorage, hostBytes: UInt64) {
        self.limit = PthreadMutex(hostBytes)
        super.init(inner)
    }

    /// Another program takes every block of the disk the image does not hold yet: from
    /// now on only the pages the image already has disk space for may be written.
    public func otherProgramFillsTheDisk() {
        let held = backedBytes
        limit.withLock { $0 = held }
    }

    /// Refuses every punch from now on (`.notSupported`).
    public func refusePunches() { punches.withLock { $0.refused = true } }

    /// Host bytes the image holds now.
    public var backedBytes: UInt64 { backed.withLock { Self.count($0) } * Self.pageSize }

    public override var hostAvailableBytes: UInt64? {
        punches.withLock { $0.refusedOnce } ? nil : hostBytes - min(hostBytes, backedBytes)
    }

    public override var diskBytes: UInt64 { backedBytes }

    public override func reserve(_ range: Range<UInt64>) throws(FSError) {
        try take(range)
        try inner.reserve(range)
    }

    public override func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try take(offset..<offset + UInt64(bytes.count))
        try inner.write(bytes, at: offset)
    }

    public override func writeFresh(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try take(offset..<offset + UInt64(bytes.count))
        try inner.writeFresh(bytes, at: offset)
    }

    public override func zero(_ range: Range<UInt64>) throws(FSError) {
        try take(range)
        try inner.zero(range)
    }

    public override func punch(_ range: Range<UInt64>) throws(FSError) {
        let refused = punches.withLock { state -> Bool in
            if state.refused { state.refusedOnce = true }
            return state.refused
        }
        if refused { throw .notSupported }
        try inner.punch(range)
        // Whole pages only, as a punch frees whole blocks.
        let first = (range.lowerBound + Self.pageSize - 1) / Self.pageSize, end = range.upperBound / Self.pageSize
        if first < end { backed.withLock { $0.remove(contentsOf: first..<end) } }
    }

    public override func setLength(_ length: UInt64) throws(FSError) {
        try inner.setLength(length)
        let end = (length + Self.pageSize - 1) / Self.pageSize
        backed.withLock { $0.remove(contentsOf: end..<UInt64.max) }
    }

    /// Counts the pages of `range` the host does not hold yet against `hostBytes`:
    /// ENOSPC (nothing taken) when they do not fit.
    private func take(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        let pages = range.lowerBound / Self.pageSize..<(range.upperBound + Self.pageSize - 1) / Self.pageSize
        let hostBytes = self.hostBytes
        let fits = backed.withLock { held -> Bool in
            var added = RangeSet(pages)
            added.subtract(held)
            guard (Self.count(held) + Self.count(added)) * Self.pageSize <= hostBytes else { return false }
            held.formUnion(added)
            return true
        }
        if !fits { throw .noSpace }
    }

    private static func count(_ set: RangeSet<UInt64>) -> UInt64 {
        set.ranges.reduce(0) { $0 + UInt64($1.count) }
    }
}
