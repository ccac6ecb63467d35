#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Synchronization

/// Format 1's image file: one mmap-backed store of 4 KiB blocks shared by every file
/// (`FileBlockStore`), with the blocks' references counted in memory.
///
/// The whole capacity is mapped once (`ImageMapping`) when the store opens; the file itself
/// only grows (by `fallocate`) as blocks are handed out.
///
/// Blocks get disk space from `fallocate` *before* anyone writes them through the
/// mapping: a write fault on an unbacked page of a full disk would be a SIGBUS that kills
/// the daemon, whereas `fallocate` answers ENOSPC. Freed blocks are punched out of the file
/// (`FALLOC_FL_PUNCH_HOLE`), which gives the disk space back and makes them read as zeros,
/// so a block handed out again never shows bytes that belonged to another file.
///
/// Ownership of blocks is counted per extent (`BlockReferenceCounts`): `allocate` hands the
/// caller one reference; `retain` and `release` add and drop references.
public final class BackingStore: FileBlockStore, @unchecked Sendable {
    public static let blockSize = 4096
    static let blockShift: UInt64 = 12

    /// The image's name for messages (its path).
    public var path: String { storage.name }
    /// The most live data the store will hold; allocation past it fails with `.noSpace`.
    public let capacityBytes: UInt64
    /// True when the capacity was set (`--size`) and is kept in the image for later
    /// mounts; false when it is a default computed for this mount.
    public let capacityIsSet: Bool
    /// Where the image's bytes live and become durable (`ImageStorage`): every write,
    /// reservation, punch and flush goes through it.
    public let storage: any ImageStorage
    /// True when the image may only be read (`-o ro`): nothing is ever written to it.
    public var isReadOnly: Bool { storage.isReadOnly }
    /// The image's mapping: the bytes files read and write, and the syncs (`ImageMapping`).
    public let image: ImageMapping
    let allocator: PthreadMutex<BlockAllocator>
    /// Serialises `syncAndReclaim`; never taken inside the allocator mutex.
    let reclaiming = PthreadLock()
    /// What the image held when it was opened.
    public enum Opened: Equatable, Sendable {
        /// A new, empty image (the path did not exist, the file was empty, a version 0
        /// scratch image, or `fresh` was asked for): it has superblocks describing an
        /// empty filesystem and nothing else.
        case new(Superblock)
        /// An image with a filesystem in it, to be recovered from this superblock.
        case existing(Superblock)

        public var superblock: Superblock {
            switch self {
            case .new(let s), .existing(let s): return s
            }
        }
    }

    public let opened: Opened

    /// Opens or creates the image file at `path` (`FileImageStorage`: created if missing,
    /// locked so that two daemons never share one image) and then as
    /// `init(storage:capacity:fresh:)`.
    public convenience init(path: String, capacity: CapacityRequest, fresh: Bool = false) throws(FSError) {
        try Self.checkCapacity(capacity.bytes)
        try self.init(storage: FileImageStorage(path: path), capacity: capacity, fresh: fresh)
    }

    /// `init(path:capacity:fresh:)` with the capacity set to `capacityBytes`.
    public convenience init(path: String, capacityBytes: UInt64, fresh: Bool = false) throws(FSError) {
        try self.init(path: path, capacity: .set(capacityBytes), fresh: fresh)
    }

    /// `init(storage:capacity:fresh:)` with the capacity set to `capacityBytes`.
    public convenience init(storage: any ImageStorage, capacityBytes: UInt64, fresh: Bool = false) throws(FSError) {
        try self.init(storage: storage, capacity: .set(capacityBytes), fresh: fresh)
    }

    /// Opens the image held by `storage`.
    ///
    /// The storage must be empty or hold an offloadfs image; anything else is refused and
    /// never written, as is an image of a newer format version or one whose two
    /// superblocks are both damaged. `fresh` empties an existing image (tmpfs-style mounts).
    ///
    /// The capacity is `capacity`'s (see `CapacityRequest`: a capacity set once is kept in
    /// the image). It is never raised to fit the file: an image whose file reaches past
    /// it (growth reserve, or a lowered capacity) keeps those blocks mapped, and the
    /// capacity only limits live blocks (whether they fit is `ImageFileSystem`'s check).
    ///
    /// Blocks freed by files are reused at once unless `deferReuse()` is called: with a
    /// journal, they must wait until the metadata that frees them is durable.
    public init(storage: any ImageStorage, capacity: CapacityRequest, fresh: Bool = false) throws(FSError) {
        let path = storage.name
        var existing: Superblock?
        switch try ImageIdentity.read(storage) {
        case .foreign:
            throw .invalidArgument("'\(path)' is not an offloadfs image (it has data but no offloadfs header); it was left untouched")
        case .newerVersion(let version):
            throw .invalidArgument("image '\(path)' was written by a newer offloadfs (\(Superblock.versionName(version))); "
                                   + "this one reads formats 1 and 2; it was left untouched")
        case .damaged(let why) where !fresh:
            throw .damagedImage("\(why) in '\(path)'; without a superblock neither mount nor `offloadfs fsck --repair` can use it; `--fresh` starts it empty")
        case .image(let superblock, _) where !fresh:
            existing = superblock
        case .empty, .versionZero, .damaged, .image:
            break
        }
        guard existing != nil || !storage.isReadOnly else {
            throw .invalidArgument(fresh ? "a read-only mount cannot start '\(path)' afresh"
                                         : "'\(path)' holds no filesystem yet, and a read-only mount cannot create one")
        }
        let (capacityBytes, capacityIsSet) = capacity.resolved(keptIn: existing)
        try Self.checkCapacity(capacityBytes)
        let capacityBlocks = (capacityBytes + UInt64(Self.blockSize) - 1) >> Self.blockShift
        var mappedBlocks = capacityBlocks
        if let existing {
            // Blocks the file holds beyond the capacity stay mapped (and readable).
            let fileBlocks = (storage.length + UInt64(Self.blockSize) - 1) >> Self.blockShift
            mappedBlocks = max(capacityBlocks, fileBlocks > Superblock.blocks ? fileBlocks - Superblock.blocks : 0)
            self.opened = .existing(existing)
        } else {
            // Start empty: drop whatever the file held (it was ours) and describe an empty
            // filesystem, so the file is recognisable as an image from now on.
            try storage.setLength(0)
            let empty = Superblock(
                imageID: Superblock.newImageID(), generation: 0, cleanlyUnmounted: true,
                checkpoint: LogSegment(start: 0, length: 0), checkpointFrames: 0,
                journal: LogSegment(start: 0, length: 0), journalSequence: 0, capacityBytes: capacityBytes,
                capacityIsSet: capacityIsSet)
            try Self.writeSuperblocks(empty, to: storage, sync: storage.sync)
            self.opened = .new(empty)
        }
        let mappedBytes = Int((Superblock.blocks + mappedBlocks) << Self.blockShift)
        self.image = try ImageMapping(storage: storage, mappedBytes: mappedBytes)
        self.storage = storage
        self.capacityBytes = capacityBlocks << Self.blockShift
        self.capacityIsSet = capacityIsSet
        self.allocator = PthreadMutex(BlockAllocator(capacityBlocks: capacityBlocks, firstBlock: Superblock.blocks,
                                                     endBlock: Superblock.blocks + mappedBlocks))
    }

    /// Live bytes: blocks that some extent or metadata chain references.
    public var liveBytes: UInt64 { allocator.withLock { $0.references.allocatedBlocks << Self.blockShift } }

    private static func checkCapacity(_ capacityBytes: UInt64) throws(FSError) {
        guard capacityBytes >= UInt64(Self.blockSize) else {
            throw .invalidArgument("capacity \(capacityBytes) is smaller than one block (\(Self.blockSize) bytes)")
        }
        guard capacityBytes <= maximumCapacity else { throw capacityPastTheLimit(capacityBytes) }
    }

    /// The largest capacity, in both formats: what an image may map.
    public static let maximumCapacity: UInt64 = 1 << 46

    /// The refusal of a capacity past `maximumCapacity`, in bytes and in TiB (a size typed
    /// with a unit, or read from a damaged superblock, is hard to read as bytes alone).
    public static func capacityPastTheLimit(_ bytes: UInt64) -> FSError {
        // Rounded up, so that a capacity past the limit never reads as the limit.
        let mebibytes = bytes >> 20 + (bytes & (1 << 20 - 1) == 0 ? 0 : 1)
        let tenths = (mebibytes * 10 + (1 << 20 - 1)) >> 20
        return .invalidArgument("capacity \(bytes) bytes (\(tenths / 10).\(tenths % 10) TiB) exceeds the \(maximumCapacity) bytes (64 TiB) an image can map")
    }

    // MARK: - Blocks

    /// Allocates up to `byteCount` bytes (rounded up to whole blocks) and returns the byte
    /// range of the blocks, which the caller owns with one reference each. The range may
    /// be shorter than asked when free space is fragmented; it is never empty. Blocks read
    /// as zeros. `hint` is the block-aligned byte offset the caller would like the range
    /// to start at (to stay contiguous with data it already has).
    /// `forMetadata` (journal and checkpoint segments) may use the metadata reserve.
    public func allocate(byteCount: Int, hint: UInt64?, forMetadata: Bool) throws(FSError) -> Range<UInt64> {
        // Freed blocks wait for the metadata that frees them to be durable, then for their
        // punch to be: two reclaims. When space runs out, run them now rather than fail.
        // Whether freed blocks were waiting is read under the same hold of the allocator
        // lock as the attempt that failed: read afterwards, another thread's reclaim could
        // have finished in between, leaving nothing waiting and the blocks free unseen
        // (ENOSPC with the space there; QuarantineTests under ThreadSanitizer and load).
        var reclaims = 0
        while true {
            var waiting = false
            do {
                return try allocateOnce(byteCount: byteCount, hint: hint, forMetadata: forMetadata,
                                        reclaimableOnFailure: &waiting)
            } catch .noSpace where reclaims < 2 && waiting {
                try syncAndReclaim()
                reclaims += 1
            }
        }
    }

    /// `allocate` for file data (`FileBlockStore`).
    public func allocate(byteCount: Int, hint: UInt64?) throws(FSError) -> Range<UInt64> {
        try allocate(byteCount: byteCount, hint: hint, forMetadata: false)
    }

    /// Keeps `bytes` (rounded up to blocks, at most an eighth of the capacity) for
    /// metadata: file data allocations leave them free.
    public func setMetadataReserve(bytes: UInt64) {
        let blocks = min((bytes + UInt64(Self.blockSize) - 1) >> Self.blockShift, (capacityBytes >> Self.blockShift) / 8)
        allocator.withLock { $0.metadataReserveBlocks = blocks }
    }

    /// One attempt; on failure, `reclaimableOnFailure` says whether freed blocks were
    /// waiting for a reclaim at that moment (see `allocate`).
    private func allocateOnce(byteCount: Int, hint: UInt64?, forMetadata: Bool,
                              reclaimableOnFailure: inout Bool) throws(FSError) -> Range<UInt64> {
        precondition(byteCount > 0)
        let wanted = (UInt64(byteCount) + UInt64(Self.blockSize) - 1) >> Self.blockShift
        let hintBlock = hint.flatMap { $0 & UInt64(Self.blockSize - 1) == 0 ? $0 >> Self.blockShift : nil }
        let grant = try allocator.withLock { a throws(FSError) in
            do throws(FSError) {
                let grant = try a.allocate(wanted, hint: hintBlock, forMetadata: forMetadata)
                if !grant.reused && grant.blocks.upperBound > a.reservedBlocks {
                    do throws(FSError) {
                        try reserveDisk(through: grant.blocks.upperBound, &a)
                    } catch {
                        a.giveBack(grant.blocks)
                        throw error
                    }
                }
                return grant
            } catch {
                reclaimableOnFailure = !a.reclaimHeld && a.waitingBlocks > 0
                throw error
            }
        }
        let bytes = (grant.blocks.lowerBound << Self.blockShift)..<(grant.blocks.upperBound << Self.blockShift)
        // Freed blocks were punched out of the file: give them disk space again now, so
        // writes through the mapping cannot fault.
        if grant.reused {
            do throws(FSError) {
                try storage.reserve(bytes)
            } catch .notSupported {
                // No fallocate here: the blocks exist already (zeroed, not punched).
            } catch {
                // Straight back to the free map: nothing referenced these blocks.
                allocator.withLock { a in
                    for freed in a.references.release(grant.blocks) { a.free.insert(freed) }
                }
                throw error
            }
        }
        return bytes
    }

    /// Adds a reference to every block that `range` touches. Fails with `.invalidArgument`
    /// if the range reaches outside the store or into a free block.
    public func retain(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        let blocks = Self.blocks(touchedBy: range)
        try allocator.withLock { a throws(FSError) in
            guard blocks.upperBound <= a.highWaterBlocks, a.references.isAllocated(blocks) else {
                throw .invalidArgument("image range \(range) is not allocated")
            }
            a.references.retain(blocks)
        }
    }

    /// `retain` for a range the caller already holds a reference on (splitting an extent
    /// it owns), so it cannot fail.
    public func retainOwned(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let blocks = Self.blocks(touchedBy: range)
        allocator.withLock { $0.references.retain(blocks) }
    }

    /// True when every block `range` touches is referenced exactly once, i.e. by the one
    /// extent that covers `range`, which may then write it in place.
    public func isExclusive(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return true }
        let blocks = Self.blocks(touchedBy: range)
        return allocator.withLock { $0.isExclusive(blocks) }
    }

    /// The block numbers whose bytes `range` touches.
    static func blocks(touchedBy range: Range<UInt64>) -> Range<UInt64> {
        precondition(!range.isEmpty)
        return (range.lowerBound >> blockShift)..<((range.upperBound - 1) >> blockShift) + 1
    }

    /// Blocks the image file gains disk space in at a time at its end: one `fallocate`
    /// per step instead of one per allocation. At most one step of disk stays reserved
    /// beyond what is in use.
    static let growthStepBlocks: UInt64 = 1024  // 4 MiB

    /// Extends the disk reservation at the end of the image to cover `block` (and a
    /// step more when the disk allows). Called under the allocator lock.
    private func reserveDisk(through block: UInt64, _ a: inout BlockAllocator) throws(FSError) {
        let stepEnd = min(a.endBlock, max(block, a.reservedBlocks + Self.growthStepBlocks))
        for end in Set([stepEnd, block]).sorted(by: >) {
            do throws(FSError) {
                try storage.reserve((a.reservedBlocks << Self.blockShift)..<(end << Self.blockShift))
            } catch .notSupported {
                // No fallocate here (some network file systems): a sparse file is the best
                // there is; ENOSPC may then surface as an I/O error on write.
                try storage.setLength(end << Self.blockShift)
            } catch .noSpace {
                continue  // try the exact size before giving up
            }
            a.reservedBlocks = end
            return
        }
        throw .noSpace
    }

    // MARK: - Sizes

    public struct Statistics: Sendable, Equatable {
        /// The most live data the store holds.
        public var capacityBytes: UInt64
        /// Bytes in blocks that some extent references.
        public var liveBytes: UInt64
        /// Bytes in free blocks below the high-water mark.
        public var freeBytes: UInt64
        /// Bytes freed but not reusable yet: their free, then their punch, must be
        /// durable first (one or two more syncs; see `deferReuse`, `syncAndReclaim`).
        public var quarantinedBytes: UInt64
        /// The image file's logical size.
        public var imageBytes: UInt64
        /// The space the image takes on disk (st_blocks * 512).
        public var diskBytes: UInt64
    }

    /// Bytes that can still be allocated before the capacity is reached.
    public var availableBytes: UInt64 {
        allocator.withLock { a in (a.roomBlocks - min(a.roomBlocks, a.metadataReserveBlocks)) << Self.blockShift }
    }

    public var statistics: Statistics {
        let (live, free, quarantined) = allocator.withLock { a in
            (a.references.allocatedBlocks << Self.blockShift, a.free.freeBlocks << Self.blockShift,
             a.waitingBlocks << Self.blockShift)
        }
        return Statistics(capacityBytes: capacityBytes, liveBytes: live, freeBytes: free,
                          quarantinedBytes: quarantined,
                          imageBytes: storage.length, diskBytes: storage.diskBytes)
    }

    /// Checks the allocator's invariants (tests and fsck): every block below the
    /// high-water mark is either referenced or free, never both, and the counts add up.
    public func checkInvariants() throws(FSError) {
        try allocator.withLock { a throws(FSError) in try a.check() }
    }

    public func isInUse(byte offset: UInt64) -> Bool { referenceCount(atByte: offset) > 0 }

    /// The reference count of the block holding byte `offset` (tests).
    public func referenceCount(atByte offset: UInt64) -> UInt32 {
        allocator.withLock { $0.references.count(of: offset >> Self.blockShift) }
    }
}
