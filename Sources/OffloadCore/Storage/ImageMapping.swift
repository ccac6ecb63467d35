import CLinuxShims
import Synchronization

/// The image's bytes as files see them: the one shared mapping, the guarded copies in and
/// out of it, and the syncs that make them durable (with the fsyncgate latch and the sync
/// epochs that in-place writes and clones wait on). Both formats' block stores own one
/// (`BackingStore` for format 1, `VolumeFileBlocks` for format 2); what differs between
/// them is who owns which blocks (`FileBlockStore`), not how bytes are read and written.
///
/// The whole capacity is mapped once, `MAP_SHARED`; the mapping's address never changes,
/// so readers hold raw pointers into it without any lock. Pages past the end of the file
/// are reserved address space only and are never touched: the owner gives blocks disk
/// space (`ImageStorage.reserve`) before it hands them out.
public final class ImageMapping: @unchecked Sendable {
    /// Where the image's bytes live and become durable.
    public let storage: any ImageStorage
    /// Base of the mapping; valid for the mapping's whole life. Only reads go through it
    /// directly; writes go through `storage`.
    let base: UnsafeMutableRawPointer
    public let mappedBytes: Int
    /// Syncs one at a time, and the first failure kept for good (`SyncLatch`).
    let syncLatch: SyncLatch
    /// Syncs begun, and the highest-numbered sync that completed (see `syncEpoch`).
    let syncsBegun = Atomic<UInt64>(0)
    let syncsDurable = Atomic<UInt64>(0)

    /// Maps `mappedBytes` of `storage` (once: a storage is mapped by one owner); its
    /// syncs go through `syncLatch`, the image's (an owner that synced before mapping
    /// passes its own).
    public init(storage: any ImageStorage, mappedBytes: Int, syncLatch: SyncLatch = SyncLatch()) throws(FSError) {
        self.syncLatch = syncLatch
        self.base = try storage.map(byteCount: mappedBytes)
        self.storage = storage
        self.mappedBytes = mappedBytes
    }

    /// The image's name for messages (its path).
    public var path: String { storage.name }

    // MARK: - Bytes

    /// Copies bytes out of the image. The caller holds a reference on `offset..<offset+count`.
    /// A page the kernel cannot read (a disk I/O error, or the image file cut short under
    /// us) is an `.io` error instead of a SIGBUS that kills the daemon
    /// (`offloadfs_guarded_copy`).
    @inline(__always)
    public func copyOut(from offset: UInt64, into destination: UnsafeMutableRawPointer, count: Int) throws(FSError) {
        assert(offset + UInt64(count) <= UInt64(mappedBytes))
        guard offloadfs_guarded_copy(destination, base + Int(offset), count) == 0 else {
            throw Self.unreadable(offset: offset, count: count, path: path)
        }
    }

    /// Touches every page of `bytes` (a view of the mapping) so that a page the kernel
    /// cannot read is found here, as an `.io` error, before the bytes are handed on
    /// (to the kernel in a FUSE reply, which would otherwise fail after the fact).
    @inline(__always)
    public func checkReadable(_ bytes: UnsafeRawBufferPointer) throws(FSError) {
        guard let start = bytes.baseAddress, !bytes.isEmpty else { return }
        guard offloadfs_guarded_probe(start, bytes.count) == 0 else {
            throw Self.unreadable(offset: UInt64(start - UnsafeRawPointer(base)), count: bytes.count, path: path)
        }
    }

    private static func unreadable(offset: UInt64, count: Int, path: String) -> FSError {
        .io("reading \(count) bytes at \(offset) of image '\(path)' faulted (an I/O error, or the file was cut short)")
    }

    /// Copies bytes into the image (`ImageStorage.write`: a memcpy into the mapping for
    /// small copies, pwrite for large ones; `fresh`, blocks just allocated:
    /// `ImageStorage.writeFresh`). The caller owns the blocks exclusively.
    @inline(__always)
    public func copyIn(_ source: UnsafeRawPointer, to offset: UInt64, count: Int, fresh: Bool = false) throws(FSError) {
        assert(offset + UInt64(count) <= UInt64(mappedBytes))
        let bytes = UnsafeRawBufferPointer(start: source, count: count)
        if fresh {
            try storage.writeFresh(bytes, at: offset)
        } else {
            try storage.write(bytes, at: offset)
        }
    }

    /// `copyIn` of a whole array (tests and tools).
    public func copyIn(_ bytes: [UInt8], to offset: UInt64) throws(FSError) {
        try bytes.withBytes { (buffer) throws(FSError) in try copyIn(buffer.baseAddress!, to: offset, count: buffer.count) }
    }

    /// A read-only view of image bytes, valid while the caller holds a reference on them.
    public func bytes(at offset: UInt64, count: Int) -> UnsafeRawBufferPointer {
        precondition(offset + UInt64(count) <= UInt64(mappedBytes))
        return UnsafeRawBufferPointer(start: base + Int(offset), count: count)
    }

    // MARK: - Durability

    /// fdatasync of the image: every byte written through the mapping or with pwrite.
    ///
    /// Syncs run one at a time, through the image's latch (`SyncLatch`).
    public func sync() throws(FSError) {
        let ticket = try syncLatch.sync { () throws(FSError) -> UInt64 in
            let ticket = syncsBegun.add(1, ordering: .acquiringAndReleasing).newValue
            try storage.sync()
            return ticket
        }
        var durable = syncsDurable.load(ordering: .acquiring)
        while durable < ticket {
            let (exchanged, original) = syncsDurable.compareExchange(
                expected: durable, desired: ticket, ordering: .acquiringAndReleasing)
            if exchanged { break }
            durable = original
        }
    }

    /// The number of syncs begun so far. Read it right after a write: the write is
    /// durable once `isDurable(since:)` says so for that number, i.e. once a sync that
    /// began after it has completed.
    public var syncEpoch: UInt64 { syncsBegun.load(ordering: .acquiring) }

    /// True when a sync that began after `epoch` (a `syncEpoch` read) has completed.
    public func isDurable(since epoch: UInt64) -> Bool {
        syncsDurable.load(ordering: .acquiring) > epoch
    }
}
