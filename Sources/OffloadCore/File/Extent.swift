/// One run of a file's bytes.
///
/// A file is an ordered list of extents that tile `0..<size` exactly: holes are explicit
/// `repeatingBytes(value: 0, ...)` runs, so every byte offset below the size belongs to
/// exactly one extent.
public enum Extent: Equatable, Sendable, CustomStringConvertible {
    /// `size` bytes stored in the shared image at byte `offset`.
    case mmapOffload(offset: UInt64, size: UInt64)
    /// `count` copies of `value`: holes (value 0) and resize fills. Occupies no storage.
    case repeatingBytes(value: UInt8, count: UInt64)
    /// Bytes held in RAM, charged to the memory limiter with their overhead
    /// (`memoryCharge`).
    case inMemory([UInt8])

    /// The number of file bytes this extent covers.
    @inline(__always)
    public var size: UInt64 {
        switch self {
        case .mmapOffload(_, let size): return size
        case .repeatingBytes(_, let count): return count
        case .inMemory(let bytes): return UInt64(bytes.count)
        }
    }

    /// Bytes this extent really stores (image or RAM); what st_blocks counts.
    var storedBytes: UInt64 {
        if case .repeatingBytes = self { return 0 }
        return size
    }

    /// Bytes this extent holds in RAM.
    var memoryBytes: Int {
        if case .inMemory(let bytes) = self { return bytes.count }
        return 0
    }

    /// What a RAM piece costs the daemon besides its bytes: its buffer's header and the
    /// allocator's rounding (48 bytes of heap for one byte of data) and its entry in the
    /// extent list (32 bytes in a full leaf). Measured with malloc_stats on the daemon
    /// holding 300,000 one-byte pieces. Charged to the `MemoryLimiter` with the bytes:
    /// charged their length alone, a million one-byte writes held 1 MB of the budget and
    /// 231 MiB of the daemon's memory (the memory hunt of the thirty-sixth session).
    public static let memoryPieceOverhead = 96

    /// What a RAM piece of `byteCount` bytes is charged to the `MemoryLimiter`.
    @inline(__always)
    static func memoryCharge(byteCount: Int) -> Int { byteCount + memoryPieceOverhead }

    /// What this extent is charged to the `MemoryLimiter` (0 unless it holds RAM bytes).
    var memoryCharge: Int {
        if case .inMemory(let bytes) = self { return Self.memoryCharge(byteCount: bytes.count) }
        return 0
    }

    /// True for a run of zeros, which SEEK_HOLE reports as a hole.
    var isHole: Bool {
        if case .repeatingBytes(0, _) = self { return true }
        return false
    }

    /// The part of this extent covering `range`, relative to the extent's first byte.
    /// Slicing an image extent shares its bytes; the caller accounts for the reference.
    func slice(_ range: Range<UInt64>) -> Extent {
        precondition(range.upperBound <= size && !range.isEmpty, "slice \(range) of \(self)")
        switch self {
        case .mmapOffload(let offset, _):
            return .mmapOffload(offset: offset + range.lowerBound, size: range.length)
        case .repeatingBytes(let value, _):
            return .repeatingBytes(value: value, count: range.length)
        case .inMemory(let bytes):
            return .inMemory(Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
        }
    }

    public var description: String {
        switch self {
        case .mmapOffload(let offset, let size): return "MmapOffload(\(offset), \(size))"
        case .repeatingBytes(let value, let count): return "RepeatingBytes(\(value), \(count))"
        case .inMemory(let bytes): return "InMemory(\(bytes.count))"
        }
    }
}
