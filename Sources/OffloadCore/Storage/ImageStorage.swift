#if canImport(Glibc)
import Glibc
#endif
/// The image's bytes and their durability: the one seam between the store and the
/// operating system.
///
/// `BackingStore` does every write, disk reservation, punch, length change and flush of
/// the image through this protocol, so tests can put something else under it: a backend
/// that remembers what the last `sync` made durable and can produce the image a power cut
/// would leave (`OffloadSimulation.CrashSimulatingStorage`), or one that fails chosen
/// calls (`FaultInjectingStorage`). The production backend is `FileImageStorage`.
///
/// Reads are the exception: they go straight through the mapping `map` returns (a memcpy,
/// or an iovec the kernel copies from), because a read is the hot path and changes no
/// state a backend must track.
///
/// ## Contract
/// - Offsets and lengths are bytes; ranges handed to `reserve`, `punch` and `zero` are
///   block-aligned.
/// - `write` makes the bytes visible through the mapping (and to `read`) at once; they
///   are durable (survive a power cut) only once a later `sync` has returned.
/// - `reserve` gives a range disk space and extends `length` to its end if shorter; after
///   it, writing through the mapping inside the range cannot fault for lack of space.
///   `.noSpace` when the disk is full, `.notSupported` when the file system has no
///   fallocate (the callers then go on sparse).
/// - `reserveTaken` is `reserve` for blocks the caller alone holds (just taken: nothing
///   names them, nothing writes them meanwhile). Where the file system has no fallocate,
///   the range's holes are written with zeros instead, which is safe only there: a
///   block another file names may be a hole that its writer is filling.
/// - `punch` makes a range read as zeros and gives its disk space back; `length` does not
///   change. `.notSupported` when the file system cannot punch (the caller then writes
///   zeros instead).
/// - `zero` makes a range read as zeros and gives it disk space, as `reserve` does
///   (fallocate's zero range: blocks a file maps without writing them, whatever a crash
///   left in the free space). `.noSpace` when the disk is full.
/// - `mayHoldData` is false only when no byte of a range can read as non-zero, now or
///   after a power cut: holes and unwritten extents, no punch or zero range there since
///   the last completed sync, and (the caller's part) no dirty page there, as in the
///   free space. True when unsure.
/// - `sync` makes everything written, reserved, punched, zeroed and resized before it
///   durable. Until then a power cut may keep any subset of those changes, and a 4 KiB
///   page may come back partly written.
/// - Every method may be called from any thread; a backend serialises what it must.
/// - A read-only storage (`isReadOnly`) maps the image `PROT_READ`, refuses `write`,
///   `writeFresh`, `reserve`, `punch`, `zero` and `setLength` with `.readOnly`, and its
///   `sync` does nothing: not one byte of the image changes.
public protocol ImageStorage: AnyObject, Sendable {
    /// A name for messages (the image's path).
    var name: String { get }
    /// True when the image may only be read (`-o ro`).
    var isReadOnly: Bool { get }
    /// The file's length in bytes.
    var length: UInt64 { get }
    /// Disk space the image takes, in bytes.
    var diskBytes: UInt64 { get }

    /// Maps `byteCount` bytes of the image once, read-write and shared, and returns the
    /// base address, valid for the storage's life. Pages past `length` must not be
    /// touched until `reserve` or `setLength` covers them.
    func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer

    /// Reads up to `buffer.count` bytes at `offset`; fewer only at the end of the file.
    /// Safe on any range (unlike the mapping past the end of the file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int

    /// Writes all of `bytes` at `offset` (inside `length`).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError)

    /// `write` into blocks just allocated, whose pages are most likely not cached: a
    /// backend may choose a path that does not read them first. Backends without such a
    /// path write as `write` does.
    func writeFresh(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError)

    /// Gives `range` disk space (fallocate mode 0), extending `length` to cover it.
    func reserve(_ range: Range<UInt64>) throws(FSError)

    /// `reserve` of blocks only the caller holds; see the contract.
    func reserveTaken(_ range: Range<UInt64>) throws(FSError)

    /// Makes `range` read as zeros and frees its disk space (punch hole, keep size).
    func punch(_ range: Range<UInt64>) throws(FSError)

    /// Makes `range` read as zeros and gives it disk space (fallocate's zero range),
    /// extending `length` to its end if shorter, as `reserve` does.
    func zero(_ range: Range<UInt64>) throws(FSError)

    /// False when `range` surely reads as zeros, now and after a power cut.
    func mayHoldData(_ range: Range<UInt64>) -> Bool

    /// Sets the file's length (ftruncate).
    func setLength(_ length: UInt64) throws(FSError)

    /// Makes every earlier change durable (fdatasync).
    func sync() throws(FSError)

    /// What the file system holding the image can still give it, in bytes (statvfs: the
    /// free blocks for root, the available ones otherwise), nil where there is no such
    /// limit (a backend in memory). The image's own free blocks need it once written:
    /// an image whose capacity is larger than its disk, or whose disk other files fill,
    /// runs out of this first.
    var hostAvailableBytes: UInt64? { get }

    /// Makes the mapping's pages of `range` writable ahead of a write there, changing no
    /// byte: the page faults, and whatever the file system waits for in them, happen in
    /// this call rather than in the write. Best effort: a page written back meanwhile
    /// faults again at the write, and a failure here is the write's to report. Backends
    /// without a mapping of their own do nothing.
    func prepareForWrite(_ range: Range<UInt64>)
}

extension ImageStorage {
    public func zero(_ range: Range<UInt64>) throws(FSError) { try zeroByPunching(range) }

    /// A backend with fallocate, or one that keeps no holes: `reserve`.
    public func reserveTaken(_ range: Range<UInt64>) throws(FSError) { try reserve(range) }

    /// No host file system under it.
    public var hostAvailableBytes: UInt64? { nil }

    /// A backend that tracks no holes cannot tell.
    public func mayHoldData(_ range: Range<UInt64>) -> Bool { true }

    /// `zero` where the file system has no zero range (tmpfs; the backends of the tests):
    /// a punch and a reservation, or, where it cannot punch either, written zeros.
    public func zeroByPunching(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        do throws(FSError) {
            try punch(range)
        } catch .notSupported {
            try writeZeros(range)
            return
        }
        do throws(FSError) {
            try reserve(range)
        } catch .notSupported {
            // No fallocate: a sparse file is the best there is (as `reserve`'s callers do).
        }
    }

    /// Writes zeros over `range`, a MiB at a time, with `writeFresh` (never through the
    /// mapping, where a hole of a full disk faults instead of answering ENOSPC).
    public func writeZeros(_ range: Range<UInt64>) throws(FSError) {
        var offset = range.lowerBound
        while offset < range.upperBound {
            let count = Int(min(UInt64(zeroChunk.count), range.upperBound - offset))
            try writeFresh(UnsafeRawBufferPointer(rebasing: zeroChunk[0..<count]), at: offset)
            offset += UInt64(count)
        }
    }

    /// Storages are writable unless they say otherwise.
    public var isReadOnly: Bool { false }

    public func prepareForWrite(_ range: Range<UInt64>) {}

    public func writeFresh(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try write(bytes, at: offset)
    }

    /// Reads `count` bytes at `offset` into a new array (shorter at the end of the file,
    /// empty when the read fails).
    public func readBytes(at offset: UInt64, count: Int) -> [UInt8] {
        guard count > 0, offset <= UInt64(Int64.max) else { return [] }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { buffer in
            (try? read(into: buffer, at: offset)) ?? 0
        }
        return n == count ? bytes : Array(bytes[0..<n])
    }
}

/// 1 MiB of zeros for `writeZeros` (calloc's pages, never written: they take no RAM).
nonisolated(unsafe) private let zeroChunk = UnsafeRawBufferPointer(start: calloc(1 << 20, 1)!, count: 1 << 20)
