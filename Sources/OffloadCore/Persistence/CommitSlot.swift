/// Format 2's superblock: two commit slots, blocks 0 and 1, written alternately.
///
/// A commit writes the slot that does not hold the current commit and fdatasyncs once; the
/// slot with the higher generation is the current commit and the other the previous one,
/// kept for repair (LMDB's two meta pages, redb's commit slots). Format 1 writes both copies
/// with an fdatasync each, so a commit costs one fdatasync less. A torn slot fails its
/// checksum and the other slot, one commit older and intact (its nodes are reused only
/// after a later commit is durable), is used.
///
/// The first 128 bytes keep format 1's header layout and checksum rule, so a format 1
/// reader sees a slot with a good checksum and a version it does not know, and reports a
/// newer image (while the other block still holds a valid format 1 copy, it uses that one:
/// the upgrade relies on this, docs/ARCHITECTURE.md "Format 2, the upgrade, fsck and repair").
///
/// Layout (little-endian; bytes 256..<4096 zero):
///
///       0  magic              16 bytes "OFFLOADFS-IMAGE\n"
///      16  version            u32  `CommitSlot.version`
///      20  block size         u32  4096
///      24  header crc         u32  CRC-32C of bytes 0..<128 with this field zero
///      28  flags              u32  bit 0: cleanly unmounted; bit 1: capacity set
///      32  image id           u64
///      40  generation         u64  the commit's generation (+1 each commit)
///      48  capacity           u64
///      56  unmount error      u32
///      60  reserved           u32  zero
///      64  name hash key      2 × u64 (SipHash-2-4 key0, key1)
///      80  reserved           48 bytes, zero
///     128  body crc           u32  CRC-32C of bytes 0..<256 with both crc fields zero
///     132  reserved           u32  zero
///     136  filesystem tree    root pointer (24 bytes)
///     160  block tree         root pointer (24 bytes)
///     184  journal start      u64  the journal chain continuing this commit
///     192  journal length     u64
///     200  journal sequence   u64  its first frame's sequence number
///     208  next inode         u64  the number the next new inode gets
///     216  inodes             u64  how many inodes the tree holds (statfs)
///     224  used blocks        u64  blocks referenced by files and trees (statfs)
///     232  reserved           24 bytes, zero (and so is every byte to the block's end)
///
/// A root pointer (`CopyOnWriteTree.Root`): block u64 (0 and every other field 0: an empty
/// tree), generation u64 (the commit that wrote the root node), level u8 (at most
/// `TreeNode.maximumLevel`), 3 zero bytes, the root node's checksum field u32.
public struct CommitSlot: Equatable, Sendable {
    /// Format 2 while it is being built: images of unfinished steps never claim version 2.
    public static let version: UInt32 = 0x8000_0002
    static let headerSize = 128
    static let encodedSize = 256

    public var imageID: UInt64
    public var generation: UInt64
    public var cleanlyUnmounted: Bool
    public var capacityIsSet: Bool
    public var capacityBytes: UInt64
    public var unmountError: UInt32
    public var nameHashKey: SipHash24
    /// The trees' roots (`CopyOnWriteTree.Root`); nil for an empty tree.
    public var filesystemTree: CopyOnWriteTree.Root?
    public var blockTree: CopyOnWriteTree.Root?
    public var journal: LogSegment
    public var journalSequence: UInt64
    public var nextInode: UInt64
    public var inodeCount: UInt64
    public var usedBlocks: UInt64

    public init(imageID: UInt64, generation: UInt64, cleanlyUnmounted: Bool, capacityIsSet: Bool,
                capacityBytes: UInt64, unmountError: UInt32, nameHashKey: SipHash24,
                filesystemTree: CopyOnWriteTree.Root?, blockTree: CopyOnWriteTree.Root?, journal: LogSegment,
                journalSequence: UInt64, nextInode: UInt64, inodeCount: UInt64, usedBlocks: UInt64) {
        self.imageID = imageID
        self.generation = generation
        self.cleanlyUnmounted = cleanlyUnmounted
        self.capacityIsSet = capacityIsSet
        self.capacityBytes = capacityBytes
        self.unmountError = unmountError
        self.nameHashKey = nameHashKey
        self.filesystemTree = filesystemTree
        self.blockTree = blockTree
        self.journal = journal
        self.journalSequence = journalSequence
        self.nextInode = nextInode
        self.inodeCount = inodeCount
        self.usedBlocks = usedBlocks
    }

    /// Slot 0 or 1, the block a commit of `generation` goes to: even generations in block
    /// 0, odd in block 1, so the slot being written never holds the current commit.
    public static func block(forGeneration generation: UInt64) -> UInt64 { generation & 1 }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: BackingStore.blockSize)
        w.raw(Superblock.magic)
        w.u32(Self.version); w.u32(UInt32(BackingStore.blockSize)); w.u32(0)
        w.u32((cleanlyUnmounted ? 1 : 0) | (capacityIsSet ? 2 : 0))
        w.u64(imageID); w.u64(generation); w.u64(capacityBytes)
        w.u32(unmountError); w.u32(0)
        w.u64(nameHashKey.key0); w.u64(nameHashKey.key1)
        while w.count < Self.headerSize { w.u8(0) }
        w.patch(u32: Checksum.crc32c(w.bytes), at: 24)
        w.u32(0); w.u32(0)
        for root in [filesystemTree, blockTree] {
            if let root {
                w.u64(root.block); w.u64(root.generation); w.u8(root.level); w.u8(0); w.u16(0); w.u32(root.checksum)
            } else {
                for _ in 0..<3 { w.u64(0) }
            }
        }
        w.u64(journal.start); w.u64(journal.length); w.u64(journalSequence)
        w.u64(nextInode); w.u64(inodeCount); w.u64(usedBlocks)
        while w.count < Self.encodedSize { w.u8(0) }
        w.patch(u32: Self.bodyChecksum(w.bytes), at: Self.headerSize)
        while w.count < BackingStore.blockSize { w.u8(0) }
        return w.bytes
    }

    static func bodyChecksum(_ bytes: [UInt8]) -> UInt32 {
        Checksum.crc32c(bytes, prefix: encodedSize, zeroing: [24, headerSize])
    }

    /// What one slot holds: a commit, or why not (the header rules are format 1's,
    /// `Superblock.decode`).
    public enum Decoded: Equatable, Sendable {
        case commit(CommitSlot)
        /// A format 1 superblock copy (an image not yet upgraded, or half-way).
        case formatOne(Superblock)
        case refused(Superblock.Copy)
        case damaged(String)
    }

    /// Decodes the slot read from block `blockNumber` (0 or 1): a commit is only valid in
    /// the block its generation goes to (`block(forGeneration:)`), else a later commit
    /// would overwrite the current one.
    public static func decode(_ block: [UInt8], at blockNumber: UInt64) -> Decoded {
        switch Superblock.decode(block) {
        case .valid(let formatOne): return .formatOne(formatOne)
        case .newerVersion(let version) where version == Self.version: break
        case let other: return .refused(other)
        }
        guard block.count >= encodedSize else { return .damaged("a commit slot of \(block.count) bytes") }
        guard bodyChecksum(block) == block.withUnsafeBytes({ raw in
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: raw[headerSize..<headerSize + 4]))
            return (try? r.u32()) ?? 0
        }) else { return .damaged("commit slot body checksum mismatch") }
        let result: Result<CommitSlot, ByteReader.Malformed> = block.withUnsafeBytes { raw in
            Result { () throws(ByteReader.Malformed) -> CommitSlot in try decodeFields(raw) }
        }
        switch result {
        case .success(let slot):
            guard Self.block(forGeneration: slot.generation) == blockNumber else {
                return .damaged("a commit of generation \(slot.generation) in block \(blockNumber)")
            }
            return .commit(slot)
        case .failure(let problem): return .damaged(problem.description)
        }
    }

    private static func decodeFields(_ raw: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> CommitSlot {
        // Bytes that must be zero: reserved fields, and everything after the body.
        for range in [60..<64, 80..<128, 132..<136, 232..<raw.count] where raw[range].contains(where: { $0 != 0 }) {
            throw ByteReader.Malformed(description: "reserved bytes \(range) of a commit slot are not zero")
        }
        var r = ByteReader(raw)
        _ = try r.raw(20)
        let blockSize = try r.u32()
        _ = try r.u32()
        let flags = try r.u32(), image = try r.u64(), generation = try r.u64(), capacity = try r.u64()
        guard blockSize == UInt32(BackingStore.blockSize), flags & ~3 == 0, image != 0 else {
            throw ByteReader.Malformed(description: "a commit slot with block size \(blockSize), flags \(flags), image id \(image)")
        }
        // A commit is generation 1 or later (opening punches the pending frees of the one
        // before it).
        guard generation >= 1 else { throw ByteReader.Malformed(description: "a commit of generation 0") }
        let unmountError = try r.u32()
        _ = try r.u32()
        let key0 = try r.u64(), key1 = try r.u64()
        _ = try r.raw(headerSize + 8 - r.offset)
        var roots: [CopyOnWriteTree.Root?] = []
        for _ in 0..<2 {
            let block = try r.u64(), rootGeneration = try r.u64(), level = try r.u8()
            let zero = try r.raw(3)
            let checksum = try r.u32()
            if block == 0 {
                guard rootGeneration == 0, level == 0, zero == [0, 0, 0], checksum == 0 else {
                    throw ByteReader.Malformed(description: "an empty tree's root pointer with fields set")
                }
                roots.append(nil)
                continue
            }
            guard block >= Superblock.blocks, rootGeneration >= 1, rootGeneration <= generation,
                  level <= TreeNode.maximumLevel, zero == [0, 0, 0] else {
                throw ByteReader.Malformed(description: "a root at block \(block), generation \(rootGeneration), level \(level) in commit \(generation)")
            }
            roots.append(CopyOnWriteTree.Root(block: block, generation: rootGeneration, level: level, checksum: checksum))
        }
        let journalStart = try r.u64(), journalLength = try r.u64(), journalSequence = try r.u64()
        let nextInode = try r.u64(), inodes = try r.u64(), used = try r.u64()
        guard generation <= Superblock.maximumCounter, journalSequence <= Superblock.maximumCounter,
              nextInode < ReservedObject.firstReserved else {
            throw ByteReader.Malformed(description: "generation \(generation), journal sequence \(journalSequence) or next inode \(nextInode) out of range")
        }
        return CommitSlot(imageID: image, generation: generation, cleanlyUnmounted: flags & 1 != 0,
                          // Whole blocks: an image upgraded before 2026-12-04 may hold format
                          // 1's capacity, any byte count; the block space ends at its last
                          // whole block either way.
                          capacityIsSet: flags & 2 != 0, capacityBytes: capacity & ~UInt64(BackingStore.blockSize - 1),
                          unmountError: unmountError,
                          nameHashKey: SipHash24(key0: key0, key1: key1), filesystemTree: roots[0], blockTree: roots[1],
                          journal: LogSegment(start: journalStart, length: journalLength),
                          journalSequence: journalSequence, nextInode: nextInode, inodeCount: inodes, usedBlocks: used)
    }

    /// The current and the previous commit of two slots' contents: the valid commit with
    /// the higher generation, and the other if it is valid, of the same image and exactly
    /// one generation older. Nil when neither slot holds a commit.
    public static func choose(_ first: Decoded, _ second: Decoded) -> (current: CommitSlot, previous: CommitSlot?)? {
        var commits: [CommitSlot] = []
        for decoded in [first, second] { if case .commit(let slot) = decoded { commits.append(slot) } }
        guard let current = commits.max(by: { $0.generation < $1.generation }) else { return nil }
        let previous = commits.first { $0.imageID == current.imageID && $0.generation &+ 1 == current.generation }
        return (current, previous)
    }
}
