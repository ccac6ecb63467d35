#if canImport(Glibc)
import Glibc
#endif

/// The image's root: where the current checkpoint and the journal are. Two copies, in
/// blocks 0 and 1, written one after the other with an fdatasync in between, each with
/// its own CRC-32C: a torn or damaged copy is ignored and the other one is used.
///
/// Layout of each copy (little-endian; bytes 128..<4096 are zero):
///
///       0  magic              16 bytes "OFFLOADFS-IMAGE\n"
///      16  version            u32  1
///      20  block size         u32  4096
///      24  crc                u32  CRC-32C of bytes 0..<128 with this field zero
///      28  flags              u32  bit 0: cleanly unmounted; bit 1: the capacity was
///                                  set (`--size`) and is kept for later mounts
///      32  image id           u64  random, fixed for the image's life
///      40  generation         u64  +1 with every superblock write
///      48  checkpoint start   u64  first segment of the checkpoint chain (byte offset)
///      56  checkpoint length  u64  its length in bytes
///      64  checkpoint frames  u64  frames in the checkpoint
///      72  journal start      u64  first segment of the journal chain
///      80  journal length     u64
///      88  journal sequence   u64  sequence number of the journal's first frame
///      96  capacity           u64  the capacity the image was last mounted with (kept
///                                  when flag bit 1 is set)
///     104  checkpoint stream  u64  the stream number of the checkpoint's frames (the
///                                  generation of the superblock that first named it)
///     112  unmount error      u32  0, or the errno with which the last unmount's final
///                                  checkpoint failed (the journal then holds the changes)
///     116  reserved           12 bytes, zero
///
/// Bytes 128..<192 (an extension version 1 readers ignore; all zero when absent) name
/// the previous commit, kept until the next checkpoint is durable (see `Commit`):
///
///     128  crc                u32  CRC-32C of bytes 0..<192 with bytes 24..<28 and
///                                  this field zero (ties it to its copy's main part)
///     132  reserved           u32  zero
///     136  checkpoint start   u64  the previous commit's checkpoint chain
///     144  checkpoint length  u64
///     152  checkpoint frames  u64
///     160  checkpoint stream  u64
///     168  journal start      u64  the journal chain that continued it
///     176  journal length     u64
///     184  journal sequence   u64
public struct Superblock: Equatable, Sendable {
    public static let magic: [UInt8] = Array("OFFLOADFS-IMAGE\n".utf8)
    public static let version: UInt32 = 1

    /// A version field as a person reads it: format 2 and later set the top bit
    /// (`CommitSlot.version` is 0x8000_0002), so 0x8000_0003 is "format 3".
    public static func versionName(_ version: UInt32) -> String {
        guard version & 0x8000_0000 != 0 else { return "format version \(version)" }
        return "format \(version & 0x7FFF_FFFF), version field 0x\(String(version, radix: 16))"
    }
    /// Blocks 0 and 1.
    public static let blocks: UInt64 = 2
    static let encodedSize = 128
    /// The main part and the previous-commit extension.
    static let extendedSize = 192

    /// One root of the filesystem: a checkpoint, and the journal that continues it up to
    /// the present. The superblock names the current commit and the previous one; the
    /// previous one's chains are kept until the next checkpoint is durable, and replaying
    /// it (checkpoint, then its journal, which leads by link frames or by sequence
    /// number into the current journal) gives the same tree as the current one, which
    /// is what `fsck --repair` salvages a damaged checkpoint from.
    public struct Commit: Equatable, Sendable {
        public var checkpoint: LogSegment
        public var checkpointFrames: UInt64
        public var checkpointStream: UInt64
        public var journal: LogSegment
        public var journalSequence: UInt64

        public init(checkpoint: LogSegment, checkpointFrames: UInt64, checkpointStream: UInt64,
                    journal: LogSegment, journalSequence: UInt64) {
            self.checkpoint = checkpoint
            self.checkpointFrames = checkpointFrames
            self.checkpointStream = checkpointStream
            self.journal = journal
            self.journalSequence = journalSequence
        }
    }
    /// The largest generation and journal sequence number a superblock may hold (and
    /// frame sequence number: `FrameHeader.decode`).
    public static let maximumCounter = UInt64(Int64.max)

    public var imageID: UInt64
    public var generation: UInt64
    public var cleanlyUnmounted: Bool
    public var checkpoint: LogSegment
    public var checkpointFrames: UInt64
    public var journal: LogSegment
    public var journalSequence: UInt64
    /// The checkpoint's frames carry this stream number; a checkpoint kept across mounts
    /// keeps it while the generation moves on.
    public var checkpointStream: UInt64
    public var capacityBytes: UInt64
    /// Flag bit 1: `capacityBytes` was set with `--size` and holds for later mounts that
    /// set none; clear, it was a default computed for that mount.
    public var capacityIsSet: Bool
    /// 0, or the errno (Linux numbering) with which the last unmount's final checkpoint
    /// failed: `offloadfs unmount` reports it, and mount and info explain it.
    public var unmountError: UInt32
    /// The commit before the current one, while its chains are kept (nil for images
    /// written before there was one, and for an image's first checkpoint).
    public var previous: Commit?

    public init(imageID: UInt64, generation: UInt64, cleanlyUnmounted: Bool, checkpoint: LogSegment,
                checkpointFrames: UInt64, journal: LogSegment, journalSequence: UInt64, capacityBytes: UInt64,
                checkpointStream: UInt64? = nil, unmountError: UInt32 = 0, previous: Commit? = nil,
                capacityIsSet: Bool = false) {
        self.capacityIsSet = capacityIsSet
        self.checkpointStream = checkpointStream ?? generation
        self.unmountError = unmountError
        self.previous = previous
        self.imageID = imageID
        self.generation = generation
        self.cleanlyUnmounted = cleanlyUnmounted
        self.checkpoint = checkpoint
        self.checkpointFrames = checkpointFrames
        self.journal = journal
        self.journalSequence = journalSequence
        self.capacityBytes = capacityBytes
    }

    /// The current commit: the checkpoint and journal mount recovers from.
    public var current: Commit {
        Commit(checkpoint: checkpoint, checkpointFrames: checkpointFrames, checkpointStream: checkpointStream,
               journal: journal, journalSequence: journalSequence)
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: BackingStore.blockSize)
        w.raw(Self.magic)
        w.u32(Self.version); w.u32(UInt32(BackingStore.blockSize)); w.u32(0)
        w.u32((cleanlyUnmounted ? 1 : 0) | (capacityIsSet ? 2 : 0))
        w.u64(imageID); w.u64(generation)
        w.u64(checkpoint.start); w.u64(checkpoint.length); w.u64(checkpointFrames)
        w.u64(journal.start); w.u64(journal.length); w.u64(journalSequence)
        w.u64(capacityBytes)
        w.u64(checkpointStream)
        w.u32(unmountError)
        while w.count < Self.encodedSize { w.u8(0) }
        w.patch(u32: Checksum.crc32c(w.bytes), at: 24)
        if let previous {
            w.u32(0); w.u32(0)
            w.u64(previous.checkpoint.start); w.u64(previous.checkpoint.length)
            w.u64(previous.checkpointFrames); w.u64(previous.checkpointStream)
            w.u64(previous.journal.start); w.u64(previous.journal.length); w.u64(previous.journalSequence)
            w.patch(u32: Self.extensionChecksum(w.bytes), at: Self.encodedSize)
        }
        while w.count < BackingStore.blockSize { w.u8(0) }
        return w.bytes
    }

    /// CRC-32C of bytes 0..<192 with both checksum fields taken as zero.
    static func extensionChecksum(_ bytes: [UInt8]) -> UInt32 {
        Checksum.crc32c(bytes, prefix: extendedSize, zeroing: [24, encodedSize])
    }

    /// The previous commit the extension names, if its checksum matches.
    static func decodePrevious(_ block: [UInt8]) -> Commit? {
        guard block.count >= extendedSize else { return nil }
        return block.withUnsafeBytes { raw -> Commit? in
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: raw[encodedSize..<extendedSize]))
            guard let crc = try? r.u32(), crc == extensionChecksum(block), (try? r.u32()) != nil,
                  let cs = try? r.u64(), let cl = try? r.u64(), let cf = try? r.u64(), let stream = try? r.u64(),
                  let js = try? r.u64(), let jl = try? r.u64(), let jq = try? r.u64() else { return nil }
            return Commit(checkpoint: LogSegment(start: cs, length: cl), checkpointFrames: cf, checkpointStream: stream,
                          journal: LogSegment(start: js, length: jl), journalSequence: jq)
        }
    }

    /// What one 4 KiB copy holds.
    public enum Copy: Equatable, Sendable {
        case valid(Superblock)
        /// Magic present, version 0: the scratch format that kept no files.
        case versionZero
        /// Magic present, checksum good, a version this build does not know.
        case newerVersion(UInt32)
        /// Magic present but the copy fails its checks.
        case damaged(String)
        /// No magic: not an offloadfs superblock.
        case absent
    }

    public static func decode(_ block: [UInt8]) -> Copy {
        guard block.count >= encodedSize, Array(block[0..<16]) == magic else { return .absent }
        let result: Copy? = block.withUnsafeBytes { raw in
            var r = ByteReader(raw)
            _ = try? r.raw(16)
            guard let version = try? r.u32(), let blockSize = try? r.u32(), let crc = try? r.u32() else { return nil }
            if version == 0 {
                // Version 0 had no checksum: magic, version, block size, then zeros.
                return blockSize == UInt32(BackingStore.blockSize) ? .versionZero : .damaged("version 0 header with block size \(blockSize)")
            }
            var copy = Array(block[0..<encodedSize])
            copy[24] = 0; copy[25] = 0; copy[26] = 0; copy[27] = 0
            guard Checksum.crc32c(copy) == crc else { return .damaged("checksum mismatch") }
            guard version == Self.version else { return .newerVersion(version) }
            guard blockSize == UInt32(BackingStore.blockSize) else { return .damaged("block size \(blockSize)") }
            guard let flags = try? r.u32(), let image = try? r.u64(), let generation = try? r.u64(),
                  let cs = try? r.u64(), let cl = try? r.u64(), let cf = try? r.u64(),
                  let js = try? r.u64(), let jl = try? r.u64(), let jq = try? r.u64(),
                  let capacity = try? r.u64(), let stream = try? r.u64(),
                  let unmountError = try? r.u32() else { return .damaged("short") }
            // Both only grow by one at a time (each superblock write, each journal frame)
            // from 0: no image reaches 2^63, and the next one must not overflow.
            guard generation <= maximumCounter, jq <= maximumCounter else {
                return .damaged("generation \(generation) or journal sequence \(jq) out of range")
            }
            return .valid(Superblock(
                imageID: image, generation: generation, cleanlyUnmounted: flags & 1 != 0,
                checkpoint: LogSegment(start: cs, length: cl), checkpointFrames: cf,
                journal: LogSegment(start: js, length: jl), journalSequence: jq, capacityBytes: capacity,
                checkpointStream: stream, unmountError: unmountError, previous: decodePrevious(block),
                capacityIsSet: flags & 2 != 0))
        }
        return result ?? .damaged("short")
    }

    /// A fresh random image id (never 0).
    public static func newImageID() -> UInt64 {
        var id: UInt64 = 0
        while id == 0 { id = UInt64.random(in: 1...UInt64.max) }
        return id
    }
}

/// What the first two blocks of a file say it is.
public enum ImageIdentity: Equatable, Sendable {
    /// Empty file: becomes a new image.
    case empty
    case foreign
    case versionZero
    case newerVersion(UInt32)
    /// The newest valid superblock copy, and whether the other copy was damaged or older.
    case image(Superblock, otherCopyAgrees: Bool)
    case damaged(String)

    /// Reads blocks 0 and 1 with pread (never the mapping: the file may be shorter than
    /// the blocks, and reading a mapping past the end of its file is SIGBUS).
    public static func read(fd: Int32) throws(FSError) -> ImageIdentity {
        identity(try copies(fd: fd))
    }

    /// The same through an `ImageStorage` (its `read`, never the mapping).
    public static func read(_ storage: any ImageStorage) throws(FSError) -> ImageIdentity {
        identity(try copies(storage))
    }

    /// True for a format 1 image whose upgrade to format 2 was cut short between its two
    /// slots: block 0 holds format 2's first commit slot, block 1 still format 1's
    /// superblock, which is the image's truth (the next read-write mount upgrades again).
    /// fsck and info say so rather than calling the copies different.
    public static func upgradeWasCutShort(fd: Int32) throws(FSError) -> Bool {
        upgradeWasCutShort(try copies(fd: fd))
    }

    /// The same through an `ImageStorage`.
    public static func upgradeWasCutShort(_ storage: any ImageStorage) throws(FSError) -> Bool {
        upgradeWasCutShort(try copies(storage))
    }

    private static func upgradeWasCutShort(_ copies: [Superblock.Copy]) -> Bool {
        guard copies.count == 2, copies[0] == .newerVersion(CommitSlot.version), case .valid = copies[1] else { return false }
        return true
    }

    private static func copies(fd: Int32) throws(FSError) -> [Superblock.Copy] {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .system(errno: errno, call: "stat image") }
        return try copies(length: UInt64(info.st_size)) { (buffer, offset) throws(FSError) in
            let n = pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
            guard n >= 0 else { throw .system(errno: errno, call: "read image header") }
            return n
        }
    }

    private static func copies(_ storage: any ImageStorage) throws(FSError) -> [Superblock.Copy] {
        try copies(length: storage.length) { (buffer, offset) throws(FSError) in
            try storage.read(into: buffer, at: offset)
        }
    }

    /// The two superblock copies as they decode (none for an empty file).
    private static func copies(
        length: UInt64, _ read: (UnsafeMutableRawBufferPointer, UInt64) throws(FSError) -> Int
    ) throws(FSError) -> [Superblock.Copy] {
        if length == 0 { return [] }
        var copies: [Superblock.Copy] = []
        for block in 0..<2 {
            var bytes = [UInt8](repeating: 0, count: BackingStore.blockSize)
            let n = try bytes.withUnsafeMutableBytes { buffer in
                Result { () throws(FSError) in try read(buffer, UInt64(block * BackingStore.blockSize)) }
            }.get()
            copies.append(n >= Superblock.encodedSize ? Superblock.decode(Array(bytes[0..<n])) : .absent)
        }
        return copies
    }

    private static func identity(_ copies: [Superblock.Copy]) -> ImageIdentity {
        if copies.isEmpty { return .empty }
        let valid = copies.compactMap { copy -> Superblock? in
            if case .valid(let s) = copy { return s }
            return nil
        }
        if let best = valid.max(by: { $0.generation < $1.generation }) {
            return .image(best, otherCopyAgrees: valid.count == 2 && valid[0] == valid[1])
        }
        for copy in copies { if case .newerVersion(let v) = copy { return .newerVersion(v) } }
        if copies.contains(.versionZero) { return .versionZero }
        if copies[0] == .absent && copies[1] == .absent { return .foreign }
        let reasons = copies.enumerated().compactMap { index, copy -> String? in
            if case .damaged(let why) = copy { return "copy \(index): \(why)" }
            return nil
        }
        return .damaged("both superblock copies are damaged (\(reasons.joined(separator: "; ")))")
    }
}
