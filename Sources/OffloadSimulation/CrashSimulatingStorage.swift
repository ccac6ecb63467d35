#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import SplitMix

/// An `ImageStorage` in memory that knows what a power cut would leave.
///
/// It keeps two states of the image: *current* (what the page cache holds: every write,
/// reservation, punch and length change so far; the mapping shows it) and *durable* (the
/// image as of the last completed `sync`). `crashImage(using:)` returns one image a power
/// cut at this instant could leave on disk, as `ImageStorage`'s contract allows:
/// - the durable bytes,
/// - plus any subset of the 4 KiB pages changed since the last sync (written, punched, or
///   cut away and regrown), each one either old, new, or torn: new in some of its 512-byte
///   sectors only;
/// - with the file's length either the durable or the current one (a change of length is
///   file metadata, durable or not as a whole).
/// This is the model of SQLite's crash VFS and redb's crash backend, at page granularity.
///
/// Thread safety: a mutex around the bookkeeping. Reads through the mapping take no lock
/// (as with a real mapping).
public final class CrashSimulatingStorage: ImageStorage, @unchecked Sendable {
    public static let pageSize = 4096
    static let sectorSize = 512

    public let name: String
    private let lock = PthreadMutex<State>(State())
    /// The "page cache": an anonymous mapping of `mappedBytes`, set by `map` (or by `init`
    /// for a store that starts from bytes, so they can be copied in).
    private let current: UnsafeMutableRawPointer
    private let mappedBytes: Int

    struct State {
        var currentLength: UInt64 = 0
        var durable: [UInt8] = []
        /// Pages changed since the last sync.
        var dirty = Set<Int>()
        var syncs = 0
        var beforeChange: (@Sendable (Change) -> Void)?
    }

    /// The calls that change the image, as `beforeChange` names them.
    public enum Change: Sendable, CustomStringConvertible {
        case write(Range<UInt64>), reserve(Range<UInt64>), punch(Range<UInt64>), setLength(UInt64), sync

        public var description: String {
            switch self {
            case .write(let r): return "write of \(r)"
            case .reserve(let r): return "reserve of \(r)"
            case .punch(let r): return "punch of \(r)"
            case .setLength(let n): return "length change to \(n)"
            case .sync: return "sync"
            }
        }
    }

    /// Calls `hook` at the start of every call that changes the image, before the change
    /// (on the caller's thread, with no lock held): the moment to take a `crashImage`,
    /// so power cuts land between any two changes, inside checkpoints and syncs too.
    public func beforeChange(_ hook: (@Sendable (Change) -> Void)?) {
        lock.withLock { $0.beforeChange = hook }
    }

    private func announce(_ change: Change) {
        lock.withLock { $0.beforeChange }?(change)
    }

    /// An empty image (a new file) of at most `maximumBytes`, or one holding `initial`
    /// (already durable, as after a reboot).
    public init(name: String = "simulated image", maximumBytes: Int, initial: [UInt8] = []) {
        precondition(initial.count <= maximumBytes)
        self.name = name
        mappedBytes = (maximumBytes + Self.pageSize - 1) / Self.pageSize * Self.pageSize
        let mapping = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapping, mapping != MAP_FAILED else { fatalError("cannot map \(mappedBytes) bytes for a simulated image") }
        current = mapping
        initial.withUnsafeBytes { current.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        lock.withLock { s in
            s.currentLength = UInt64(initial.count)
            s.durable = initial
        }
    }

    deinit { munmap(current, mappedBytes) }

    public var length: UInt64 { lock.withLock { $0.currentLength } }
    /// No holes are tracked: the bytes below the length.
    public var diskBytes: UInt64 { length }
    /// Completed syncs so far.
    public var syncCount: Int { lock.withLock { $0.syncs } }

    public func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer {
        guard byteCount <= mappedBytes else {
            throw .invalidArgument("the simulated image holds at most \(mappedBytes) bytes, \(byteCount) asked")
        }
        return current
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
        let length = self.length
        guard offset < length else { return 0 }
        let n = Int(min(UInt64(buffer.count), length - offset))
        buffer.baseAddress!.copyMemory(from: current + Int(offset), byteCount: n)
        return n
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        guard !bytes.isEmpty else { return }
        announce(.write(offset..<offset + UInt64(bytes.count)))
        try lock.withLock { (s) throws(FSError) in
            let end = offset + UInt64(bytes.count)
            // A write past the end of a file through a mapping would be SIGBUS, through
            // pwrite it extends the file: the store only does the latter for superblocks.
            guard end <= UInt64(mappedBytes) else { throw .invalidArgument("write past the simulated image's end") }
            (current + Int(offset)).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            s.currentLength = max(s.currentLength, end)
            Self.markDirty(offset..<end, &s)
        }
    }

    public func reserve(_ range: Range<UInt64>) throws(FSError) {
        announce(.reserve(range))
        lock.withLock { s in
            if range.upperBound > s.currentLength { resize(to: range.upperBound, &s) }
        }
    }

    public func punch(_ range: Range<UInt64>) throws(FSError) {
        announce(.punch(range))
        lock.withLock { s in
            let clipped = range.clamped(to: 0..<s.currentLength)
            guard !clipped.isEmpty else { return }
            (current + Int(clipped.lowerBound)).initializeMemory(as: UInt8.self, repeating: 0, count: Int(clipped.count))
            Self.markDirty(clipped, &s)
        }
    }

    /// A power cut keeps the durable bytes and any of the pages changed since: the range
    /// may read as non-zero if any of its bytes does in either.
    /// (Compared with `memcmp`, `MemoryImageStorage.isZero`: the free space of a whole
    /// image is asked at once, in debug builds too.)
    public func mayHoldData(_ range: Range<UInt64>) -> Bool {
        lock.withLock { s in
            let now = range.clamped(to: 0..<s.currentLength)
            if !now.isEmpty, !MemoryImageStorage.isZero(UnsafeRawBufferPointer(start: current + Int(now.lowerBound), count: now.count)) {
                return true
            }
            let then = range.clamped(to: 0..<UInt64(s.durable.count))
            return !then.isEmpty && !s.durable.withUnsafeBytes {
                MemoryImageStorage.isZero(UnsafeRawBufferPointer(rebasing: $0[Int(then.lowerBound)..<Int(then.upperBound)]))
            }
        }
    }

    public func setLength(_ length: UInt64) throws(FSError) {
        guard length <= UInt64(mappedBytes) else { throw .noSpace }
        announce(.setLength(length))
        lock.withLock { resize(to: length, &$0) }
    }

    public func sync() throws(FSError) {
        announce(.sync)
        lock.withLock { s in
            let length = Int(s.currentLength)
            if s.durable.count != length {
                s.durable = Array(s.durable.prefix(length)) + [UInt8](repeating: 0, count: max(0, length - s.durable.count))
            }
            for page in s.dirty where page * Self.pageSize < length {
                let start = page * Self.pageSize
                let n = min(Self.pageSize, length - start)
                s.durable.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: start).copyMemory(from: current + start, byteCount: n) }
            }
            s.dirty.removeAll(keepingCapacity: true)
            s.syncs += 1
        }
    }

    /// Sets the current length; bytes cut away read as zeros if the file grows again.
    private func resize(to length: UInt64, _ s: inout State) {
        if length < s.currentLength {
            (current + Int(length)).initializeMemory(as: UInt8.self, repeating: 0, count: Int(s.currentLength - length))
            Self.markDirty(length..<s.currentLength, &s)
        } else if length > s.currentLength {
            Self.markDirty(s.currentLength..<length, &s)
        }
        s.currentLength = length
    }

    private static func markDirty(_ range: Range<UInt64>, _ s: inout State) {
        guard !range.isEmpty else { return }
        let first = Int(range.lowerBound) / pageSize, last = Int(range.upperBound - 1) / pageSize
        for page in first...last { s.dirty.insert(page) }
    }

    /// The pages changed since the last sync (for tests and reports).
    public var unsyncedPageCount: Int { lock.withLock { $0.dirty.count } }

    /// One image a power cut now could leave (see the type's documentation). `keep` is
    /// the chance that each unsynced page comes back new (or torn), `torn` the chance that
    /// such a page is torn.
    public func crashImage(using rng: inout SplitMix64, keep: Double = 0.5, torn: Double = 0.2) -> [UInt8] {
        lock.withLock { s in
            let lengthIsNew = rng.next() % 2 == 0
            let length = lengthIsNew ? Int(s.currentLength) : s.durable.count
            var image = Array(s.durable.prefix(length))
            if image.count < length { image += [UInt8](repeating: 0, count: length - image.count) }
            for page in s.dirty.sorted() where page * Self.pageSize < length {
                guard Self.chance(keep, &rng) else { continue }
                let start = page * Self.pageSize
                let n = min(Self.pageSize, length - start)
                let tornPage = Self.chance(torn, &rng)
                image.withUnsafeMutableBytes { out in
                    var sector = 0
                    while sector < n {
                        let m = min(Self.sectorSize, n - sector)
                        if !tornPage || rng.next() % 2 == 0 {
                            out.baseAddress!.advanced(by: start + sector).copyMemory(from: current + start + sector, byteCount: m)
                        }
                        sector += m
                    }
                }
            }
            return image
        }
    }

    /// The image a power cut now leaves when exactly the unsynced pages `keeping` picks
    /// (by page number and current bytes) were written back, whole, and the file has its
    /// current length: one case of `crashImage(using:)`, chosen.
    public func crashImage(keeping: (Int, UnsafeRawBufferPointer) -> Bool) -> [UInt8] {
        lock.withLock { s in
            let length = Int(s.currentLength)
            var image = Array(s.durable.prefix(length))
            if image.count < length { image += [UInt8](repeating: 0, count: length - image.count) }
            for page in s.dirty.sorted() where page * Self.pageSize < length {
                let start = page * Self.pageSize
                let now = UnsafeRawBufferPointer(start: current + start, count: min(Self.pageSize, length - start))
                guard keeping(page, now) else { continue }
                image.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: start).copyMemory(from: now.baseAddress!, byteCount: now.count) }
            }
            return image
        }
    }

    private static func chance(_ p: Double, _ rng: inout SplitMix64) -> Bool {
        Double(rng.next() % 1_000_000) < p * 1_000_000
    }
}
