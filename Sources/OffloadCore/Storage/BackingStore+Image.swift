#if canImport(Glibc)
import Glibc
#endif

// The image's metadata side of the store: superblocks, reading metadata with pread, and
// rebuilding the allocator from what recovery found.

extension BackingStore {
    /// Writes both superblock copies, each followed by an fdatasync, so that at every
    /// instant at least one copy on disk is complete: a crash mid-write tears at most the
    /// copy being written, and `ImageIdentity.read` takes the other one.
    public func writeSuperblocks(_ superblock: Superblock) throws(FSError) {
        try Self.writeSuperblocks(superblock, to: storage, sync: sync)
    }

    /// `sync` is the store's (which remembers a failure) once there is a store.
    static func writeSuperblocks(_ superblock: Superblock, to storage: any ImageStorage,
                                 sync: () throws(FSError) -> Void) throws(FSError) {
        let bytes = superblock.encoded()
        for copy in 0..<Int(Superblock.blocks) {
            try bytes.withBytes { (buffer) throws(FSError) in try storage.write(buffer, at: UInt64(copy * blockSize)) }
            try sync()
        }
    }

    /// The image file's length in bytes.
    public var fileBytes: UInt64 { storage.length }

    /// Reads image bytes with pread: safe on any range, also past the end of the file
    /// (the result is then shorter), where touching the mapping would be SIGBUS.
    public func readBytes(at offset: UInt64, count: Int) -> [UInt8] {
        storage.readBytes(at: offset, count: count)
    }

    /// `readBytes` on an image file opened elsewhere (fsck and info open it read-only).

    public static func readBytes(fd: Int32, at offset: UInt64, count: Int) -> [UInt8] {
        guard count > 0, offset <= UInt64(Int64.max) else { return [] }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { buffer in
                pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        return Array(bytes[0..<done])
    }

    /// Copies `bytes` into blocks the caller allocated (journal and checkpoint frames).
    func writeMetadata(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        guard !bytes.isEmpty else { return }
        precondition(offset + UInt64(bytes.count) <= UInt64(image.mappedBytes))
        try storage.write(bytes, at: offset)
    }

    /// Rebuilds the allocator of an opened existing image from the reference counts that
    /// recovery computed (`runs`: block ranges, sorted and disjoint, with their counts,
    /// including the metadata chains still in use). Every other block becomes free and
    /// is punched, so no later allocation shows what it held before; the file is cut
    /// after the last referenced block, or grown to it: data a power cut left past the
    /// end of the file (its growth was not durable) reads as zeros.
    /// A read-only store only rebuilds the allocator in memory: the file keeps every byte
    /// (blocks past its end, if a power cut left some, then fail to read instead).
    public func restoreAllocation(runs: [(blocks: Range<UInt64>, count: UInt32)]) throws(FSError) {
        let end = runs.last?.blocks.upperBound ?? Superblock.blocks
        let endBlock = allocator.withLock { $0.endBlock }
        guard end <= endBlock else {
            throw .invalidArgument("the image's data reaches byte \(end << Self.blockShift), past the capacity it is opened with (\(capacityBytes) bytes); mount it with a larger --size")
        }
        let gaps = allocator.withLock { $0.restore(runs: runs, reservedBlocks: end) }
        guard !isReadOnly else { return }
        let length = storage.length, endByte = end << Self.blockShift
        if endByte > length {
            // Disk space for the zeros, as for any block in use; a sparse tail if none.
            do throws(FSError) {
                try storage.reserve(((length >> Self.blockShift) << Self.blockShift)..<endByte)
            } catch {
                try storage.setLength(endByte)
            }
        } else {
            try storage.setLength(endByte)
        }
        // Free once they read as zeros; a gap that cannot be punched or zeroed waits in
        // quarantine for a reclaim to try again.
        var supported = allocator.withLock { $0.punchSupported }
        let unpunched = gaps.filter { !punchFree($0, supported: &supported) }
        allocator.withLock { a in
            a.punchSupported = supported
            for gap in gaps where !unpunched.contains(gap) { a.free.insert(gap) }
            for gap in unpunched { a.quarantine(gap) }
        }
    }
}
