#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

/// An `ImageStorage` in memory with no durability model: every change is visible at once
/// and `sync` does nothing.
///
/// For the fuzzer and the hostile-image tests, which open many images each and need every
/// open to be fast and to touch no disk. `CrashSimulatingStorage` keeps a durable copy
/// besides the current bytes and copies pages into it at every sync, which costs
/// milliseconds per open. This one remembers which pages may hold something other than
/// zeros, so that copying an image (mostly unused space) copies only those.
///
/// Thread safety: a mutex around the length and the page set; the bytes live in the
/// mapping and follow `ImageStorage`'s contract (writers own what they write).
public final class MemoryImageStorage: ImageStorage, @unchecked Sendable {
    static let pageSize = 4096
    public let name: String
    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int
    /// The most bytes the image may grow to (`setLength` past it is `.noSpace`).
    public var maximumBytes: Int { mappedBytes }
    private let state = PthreadMutex(State())

    struct State {
        var length: UInt64 = 0
        /// Pages that may hold non-zero bytes; every other page reads as zeros.
        var written = Set<Int>()
    }

    /// An image holding `initial`, which may grow to `maximumBytes`.
    public convenience init(name: String = "in-memory image", maximumBytes: Int, initial: [UInt8] = []) {
        self.init(name: name, maximumBytes: maximumBytes)
        initial.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let count = min(Self.pageSize, bytes.count - offset)
                let page = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
                if !Self.isZero(page) { try? write(page, at: UInt64(offset)) }
                offset += count
            }
        }
        state.withLock { $0.length = UInt64(initial.count) }
    }

    /// An image with the same bytes as `other` has now, which may grow to `maximumBytes`
    /// (at least `other`'s length).
    public convenience init(copying other: MemoryImageStorage, maximumBytes: Int? = nil, name: String = "in-memory image") {
        let (length, pages) = other.state.withLock { ($0.length, $0.written.sorted()) }
        self.init(name: name, maximumBytes: max(maximumBytes ?? other.mappedBytes, Int(length)))
        for page in pages where page * Self.pageSize < Int(length) {
            let count = min(Self.pageSize, Int(length) - page * Self.pageSize)
            try? write(UnsafeRawBufferPointer(start: other.mapping + page * Self.pageSize, count: count),
                       at: UInt64(page * Self.pageSize))
        }
        state.withLock { $0.length = length }
    }

    /// An empty image that may grow to `maximumBytes`.
    public init(name: String = "in-memory image", maximumBytes: Int) {
        self.name = name
        mappedBytes = max(Self.pageSize, (maximumBytes + Self.pageSize - 1) / Self.pageSize * Self.pageSize)
        // Anonymous and unreserved: only the pages written take memory, the rest read as zeros.
        let pointer = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let pointer, pointer != MAP_FAILED else { fatalError("cannot map \(mappedBytes) bytes for an in-memory image") }
        mapping = pointer
    }

    deinit { munmap(mapping, mappedBytes) }

    public var length: UInt64 { state.withLock { $0.length } }
    public var diskBytes: UInt64 { length }

    /// The image's bytes as they are now.
    public var bytes: [UInt8] {
        Array(UnsafeRawBufferPointer(start: mapping, count: Int(length)))
    }

    /// Runs `body` on the image's bytes (`length` of them) to change them in place, as a
    /// test that damages an image does. Every page counts as written afterwards.
    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        state.withLock { s in
            let pages = (Int(s.length) + Self.pageSize - 1) / Self.pageSize
            s.written.formUnion(0..<pages)
            return body(UnsafeMutableRawBufferPointer(start: mapping, count: Int(s.length)))
        }
    }

    public func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer {
        guard byteCount <= mappedBytes else {
            throw .invalidArgument("the in-memory image holds at most \(mappedBytes) bytes, \(byteCount) asked")
        }
        return mapping
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
        let length = self.length
        guard offset < length, let destination = buffer.baseAddress else { return 0 }
        let count = Int(min(UInt64(buffer.count), length - offset))
        destination.copyMemory(from: mapping + Int(offset), byteCount: count)
        return count
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        guard let source = bytes.baseAddress else { return }
        let end = offset.addingReportingOverflow(UInt64(bytes.count))
        guard !end.overflow, end.partialValue <= UInt64(mappedBytes) else {
            throw .invalidArgument("write past the in-memory image's end")
        }
        (mapping + Int(offset)).copyMemory(from: source, byteCount: bytes.count)
        state.withLock { s in
            s.length = max(s.length, end.partialValue)
            s.written.formUnion(Self.pages(touchedBy: offset..<end.partialValue))
        }
    }

    public func reserve(_ range: Range<UInt64>) throws(FSError) {
        guard range.upperBound <= UInt64(mappedBytes) else { throw .noSpace }
        state.withLock { $0.length = max($0.length, range.upperBound) }
    }

    public func punch(_ range: Range<UInt64>) throws(FSError) {
        state.withLock { s in zero(range.clamped(to: 0..<s.length), &s) }
    }

    /// Only written pages may hold data (no power cut here: current is durable).
    public func mayHoldData(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return false }
        let pages = Self.pages(touchedBy: range)
        return state.withLock { s in
            pages.count < s.written.count ? pages.contains { s.written.contains($0) } : s.written.contains { pages.contains($0) }
        }
    }

    public func setLength(_ newLength: UInt64) throws(FSError) {
        guard newLength <= UInt64(mappedBytes) else { throw .noSpace }
        state.withLock { s in
            // Bytes cut away read as zeros if the file grows again, as with ftruncate.
            if newLength < s.length { zero(newLength..<s.length, &s) }
            s.length = newLength
        }
    }

    public func sync() throws(FSError) {}

    /// Makes `range` read as zeros: whole pages are given back to the kernel (as a punch
    /// gives back disk space) and forgotten, the partial pages at the edges are cleared.
    private func zero(_ range: Range<UInt64>, _ s: inout State) {
        guard !range.isEmpty else { return }
        let page = UInt64(Self.pageSize)
        let first = (range.lowerBound + page - 1) / page * page, last = range.upperBound / page * page
        guard first < last else {
            memset(mapping + Int(range.lowerBound), 0, Int(range.count))
            return
        }
        memset(mapping + Int(range.lowerBound), 0, Int(first - range.lowerBound))
        madvise(mapping + Int(first), Int(last - first), MADV_DONTNEED)
        memset(mapping + Int(last), 0, Int(range.upperBound - last))
        let cleared = Int(first / page)..<Int(last / page)
        s.written = s.written.filter { !cleared.contains($0) }
    }

    /// True when every byte is 0: the first one is, and each equals the next (memcmp,
    /// fast even in a debug build, where tests check most blocks of many images).
    public static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let start = bytes.baseAddress else { return true }
        return bytes[0] == 0 && memcmp(start, start + 1, bytes.count - 1) == 0
    }

    private static func pages(touchedBy range: Range<UInt64>) -> Range<Int> {
        Int(range.lowerBound) / pageSize..<(Int(range.upperBound) + pageSize - 1) / pageSize
    }
}
