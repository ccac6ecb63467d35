#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Synchronization

/// The production `ImageStorage`: the image file, opened read-write and locked, mapped
/// once `MAP_SHARED`; or, read-only (`-o ro`), opened `O_RDONLY` with a shared lock and
/// mapped `PROT_READ`, refusing every change.
///
/// A file without any write permission bit (e.g. mode 0444) is opened read-only only:
/// whoever took them away meant it, so even root is refused a read-write open
/// (`.readOnly`, like a file on a read-only filesystem).
///
/// Writes shorter than `pwriteThreshold` are a memcpy into the mapping (the file's page
/// cache: no system call); longer ones go through `pwrite`, which fills the page cache
/// without a page fault and a zero-fill per 4 KiB page (1 GiB in 1 MiB writes: 941 MiB/s
/// with pwrite, 166 MiB/s through the mapping; docs/BENCHMARKS.md). Both are the same
/// page cache, so readers of the mapping see either at once.
///
/// Copies through the mapping are guarded (`offloadfs_guarded_copy`): a page the kernel
/// cannot read back, or one past the end of a file someone cut short, is an `.io` error
/// for that write instead of a SIGBUS that kills the daemon.
public final class FileImageStorage: ImageStorage, @unchecked Sendable {
    public let name: String
    public let isReadOnly: Bool
    /// The open image file; closed in `deinit`. Immutable.
    public let fd: Int32
    /// Base of the mapping once `map` ran (set once, before the storage is shared).
    private var base: UnsafeMutableRawPointer?
    /// Ranges punched or zeroed that no completed sync has made durable yet
    /// (`mayHoldData`).
    private let clearedSinceSync = PthreadMutex(ClearedRanges())
    /// Set once the file system refused a punch (`hostAvailableBytes`).
    private let punchRefused = Atomic<Bool>(false)
    /// The last figure `hostAvailableBytes` read (`UInt64.max`: none yet).
    private let lastHostAvailable = Atomic<UInt64>(.max)
    /// Set once the file system refused fallocate (`reserve`).
    private let fallocateRefused = Atomic<Bool>(false)

    /// Ranges cleared, each with the number of syncs begun before it: a sync that began
    /// after a clear finished makes it durable.
    struct ClearedRanges {
        private var entries: [(range: Range<UInt64>, syncsBegun: UInt64)] = []
        private var syncsBegun: UInt64 = 0

        mutating func insert(_ range: Range<UInt64>) { entries.append((range, syncsBegun)) }

        /// Call before the fdatasync; pass the result to `synced` once it succeeded.
        mutating func beginSync() -> UInt64 {
            syncsBegun += 1
            return syncsBegun
        }

        mutating func synced(_ sync: UInt64) { entries.removeAll { $0.syncsBegun < sync } }

        func overlaps(_ range: Range<UInt64>) -> Bool { entries.contains { $0.range.overlaps(range) } }
    }
    private var mappedBytes = 0

    /// Copies at least this long use pwrite (see the type's documentation).
    public static let pwriteThreshold = 16 << 10

    /// Opens (creating it if missing) the regular file at `path` and takes its exclusive
    /// `flock`: `.busy` while another process holds it. Symbolic links are not followed
    /// at the last component (`O_NOFOLLOW`). With `readOnly`, the file must exist; it is
    /// opened `O_RDONLY` with a shared `flock` (read-only mounts and fsck may share it, a
    /// read-write mount may not). A file that cannot be written is `.readOnly` (a
    /// read-only filesystem, no write permission bit) or `.permissionDenied`.
    public init(path: String, readOnly: Bool = false) throws(FSError) {
        // O_NONBLOCK until the file is known to be regular: an open of a FIFO for reading
        // waits for a writer (fsck, info and a read-only mount of one waited for ever).
        let flags = readOnly ? O_RDONLY | O_CLOEXEC | O_NOFOLLOW : O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW
        let fd = open(path, flags | O_NONBLOCK, 0o600)
        guard fd >= 0 else {
            switch errno {
            case ENOENT where readOnly: throw .invalidArgument("image '\(path)' does not exist (a read-only mount needs an existing image)")
            case EROFS: throw .readOnly
            case EACCES: throw .permissionDenied
            case let e: throw .system(errno: e, call: "open image '\(path)'")
            }
        }
        var ok = false
        defer { if !ok { close(fd) } }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .system(errno: errno, call: "stat image '\(path)'") }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw .invalidArgument("image '\(path)' is not a regular file")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        guard readOnly || info.st_mode & 0o222 != 0 else { throw .readOnly }
        guard flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
            if errno == EWOULDBLOCK { throw .busy }
            throw .system(errno: errno, call: "lock image '\(path)'")
        }
        self.name = path
        self.isReadOnly = readOnly
        self.fd = fd
        ok = true
    }

    deinit {
        if let base { munmap(base, mappedBytes) }
        close(fd)
    }

    private var status: stat? {
        var info = stat()
        return fstat(fd, &info) == 0 ? info : nil
    }

    public var length: UInt64 { status.map { UInt64($0.st_size) } ?? 0 }
    public var diskBytes: UInt64 { status.map { UInt64($0.st_blocks) * 512 } ?? 0 }

    public func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer {
        precondition(base == nil, "the image is mapped once")
        let protection = isReadOnly ? PROT_READ : PROT_READ | PROT_WRITE
        let mapping = mmap(nil, byteCount, protection, MAP_SHARED | MAP_NORESERVE, fd, 0)
        guard let mapping, mapping != MAP_FAILED else {
            throw .system(errno: errno, call: "mmap image '\(name)' (\(byteCount) bytes)")
        }
        base = mapping
        mappedBytes = byteCount
        return mapping
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw .system(errno: errno, call: "read image '\(name)'") }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        guard !isReadOnly else { throw .readOnly }
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        if let base, bytes.count < Self.pwriteThreshold {
            precondition(offset + UInt64(bytes.count) <= UInt64(mappedBytes))
            guard offloadfs_guarded_copy(base + Int(offset), source, bytes.count) == 0 else {
                throw .io("writing \(bytes.count) bytes at \(offset) of image '\(name)' faulted (an I/O error, or the file was cut short)")
            }
            return
        }
        try writeWithPwrite(bytes, at: offset)
    }

    /// Blocks just allocated are written with `pwrite` whatever the length: their pages
    /// are not in the page cache, and a copy through the mapping faults on each, and the
    /// fault's readahead fills a whole window of the file around it (zeros, where the
    /// blocks are unwritten or holes) for the few bytes written. Under `tar -x` that
    /// zero-filling was 9% of the daemon's samples; pwrite fills only the pages written.
    public func writeFresh(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        guard !isReadOnly else { throw .readOnly }
        guard bytes.baseAddress != nil, !bytes.isEmpty else { return }
        try writeWithPwrite(bytes, at: offset)
    }

    private func writeWithPwrite(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        guard let source = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, source + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let e = n < 0 ? errno : ENOSPC
                throw e == ENOSPC || e == EDQUOT ? .noSpace : .system(errno: e, call: "write image '\(name)'")
            }
            done += n
        }
    }

    /// `madvise(MADV_POPULATE_WRITE)` (Linux 5.14): the write faults, the file system's
    /// `page_mkwrite` included, run here. On ext4 that call waits for a punch of the same
    /// file (which holds the file's invalidate lock throughout) and for its journal;
    /// the journal's frames prepare their pages before the namespace lock
    /// (docs/ARCHITECTURE.md, "Journal pages made writable before the lock").
    public func prepareForWrite(_ range: Range<UInt64>) {
        guard let base, !isReadOnly, !range.isEmpty else { return }
        let page = UInt64(max(sysconf(Int32(_SC_PAGESIZE)), 1))
        let start = range.lowerBound / page * page
        let end = min((range.upperBound + page - 1) / page * page, UInt64(mappedBytes))
        guard start < end else { return }
        _ = madvise(base + Int(start), Int(end - start), Self.populateWrite)
    }

    /// `MADV_POPULATE_WRITE` (not in this Glibc's headers).
    static let populateWrite: Int32 = 23

    public func reserve(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        try fallocate(mode: 0, range, call: "fallocate")
    }

    /// `reserve`, and where the file system has no fallocate (ext2, ext3 without extents,
    /// NFS before 4.2) zeros written into the range's holes instead, as glibc's
    /// `posix_fallocate` does with a byte a block: a hole of the mapping written on a full
    /// disk faults (SIGBUS: a journal frame's copy failed the volume with an I/O error
    /// where another program filled the disk), a `pwrite` answers ENOSPC while the blocks
    /// are still only the caller's. Only for blocks nothing names (the contract): the
    /// data path's steps ahead cover blocks files use, and stay sparse there.
    public func reserveTaken(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        if !fallocateRefused.load(ordering: .relaxed) {
            do throws(FSError) {
                return try fallocate(mode: 0, range, call: "fallocate")
            } catch .notSupported {
                fallocateRefused.store(true, ordering: .relaxed)
            }
        }
        try writeZerosIntoHoles(range)
    }

    /// Writes zeros over the holes of `range` (SEEK_HOLE, SEEK_DATA) and past the end of
    /// the file, and nowhere else: a hole reads as zeros, so no byte a reader sees
    /// changes. What a refused write had filled is punched again (best effort), so a
    /// full disk is not left holding zeros in free blocks. `.notSupported` where the
    /// file system cannot say where its holes are; where it reports the whole file as
    /// data, nothing is written (the file stays as sparse as it was).
    private func writeZerosIntoHoles(_ range: Range<UInt64>) throws(FSError) {
        guard !isReadOnly else { throw .readOnly }
        let fileLength = length
        var filled: [Range<UInt64>] = []
        var offset = range.lowerBound
        do throws(FSError) {
            while offset < range.upperBound {
                var holeStart = offset
                if offset < fileLength {
                    let hole = lseek(fd, off_t(offset), offloadfs_seek_hole)
                    if hole >= 0 {
                        holeStart = UInt64(hole)
                    } else if errno == ENXIO {
                        holeStart = fileLength
                    } else {
                        throw .notSupported
                    }
                }
                guard holeStart < range.upperBound else { return }
                var holeEnd = range.upperBound
                if holeStart < fileLength {
                    let data = lseek(fd, off_t(holeStart), offloadfs_seek_data)
                    if data >= 0 {
                        holeEnd = min(range.upperBound, UInt64(data))
                    } else if errno == ENXIO {
                        holeEnd = min(range.upperBound, fileLength)  // a hole to the end; past it, the next round
                    } else {
                        throw .notSupported
                    }
                }
                filled.append(holeStart..<holeEnd)
                try writeZeros(holeStart..<holeEnd)
                offset = holeEnd
            }
        } catch {
            // Whole pages of what was filled only (a hole of 1 KiB file-system blocks may
            // lie inside one page, between bytes that are not this call's).
            let page = UInt64(BackingStore.blockSize)
            for part in filled {
                let first = (part.lowerBound + page - 1) / page * page, end = part.upperBound / page * page
                if first < end { try? punch(first..<end) }
            }
            throw error
        }
    }

    /// statvfs of the file system holding the image: its available blocks, for root too
    /// (ext4 counts blocks in `f_bfree` that no fallocate gets, its reserved clusters, and
    /// btrfs its metadata's; an overstated room fails a commit, an understated one only
    /// refuses a write early). Nil once a punch was refused: freed blocks then keep their
    /// disk space (zeros are written instead), so the disk's free space no longer follows
    /// the image's.
    /// A statvfs that fails (EIO, NFS's ESTALE) answers the last figure read: nil would
    /// lift the limit.
    public var hostAvailableBytes: UInt64? {
        guard !punchRefused.load(ordering: .relaxed) else { return nil }
        var status = statvfs()
        guard fstatvfs(fd, &status) == 0 else {
            let last = lastHostAvailable.load(ordering: .relaxed)
            return last == .max ? nil : last
        }
        let bytes = UInt64(status.f_bavail) * UInt64(status.f_frsize)
        lastHostAvailable.store(bytes, ordering: .relaxed)
        return bytes
    }

    public func punch(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        do throws(FSError) {
            try fallocate(mode: offloadfs_falloc_punch_hole | offloadfs_falloc_keep_size, range, call: "punch hole in")
        } catch .notSupported {
            punchRefused.store(true, ordering: .relaxed)
            throw .notSupported
        }
        clearedSinceSync.withLock { $0.insert(range) }
    }

    /// fallocate's zero range (ext4, XFS, btrfs): the blocks become unwritten extents
    /// with their disk space, no byte is written. Elsewhere (tmpfs; EINVAL from a file
    /// system that knows the call but not the mode) a punch and a reservation.
    public func zero(_ range: Range<UInt64>) throws(FSError) {
        guard !range.isEmpty else { return }
        do throws(FSError) {
            try fallocate(mode: offloadfs_falloc_zero_range, range, call: "zero range of")
            clearedSinceSync.withLock { $0.insert(range) }
        } catch .notSupported {
            try zeroByPunching(range)
        } catch .system(let e, _) where e == EINVAL {
            try zeroByPunching(range)
        }
    }

    /// True when a range punched or zeroed since the last completed sync overlaps
    /// `range`: the kernel shows it as a hole, but a power cut may bring its bytes back
    /// (the commits hand some punched blocks back at once: the unused rest of their node
    /// pool, a reserve let go, a placement chunk refused). Otherwise `lseek(SEEK_DATA)`
    /// from the range's start: no data before its end (ENXIO, or the next data past it)
    /// is the common answer, one call. SEEK_DATA also counts the cached pages of
    /// unwritten extents as data (a fault through the mapping reads the pages around it:
    /// 86 of 2,000 preallocations on a new image), so then the extents are asked
    /// (FIEMAP): written data and delayed allocations (dirty pages in holes) may hold
    /// bytes; holes and unwritten extents read as zeros on disk. Their cached pages are
    /// not read (a read starts readahead over the next pieces, which SEEK_DATA then counts
    /// too): the free space holds no dirty page over an unwritten extent, since the
    /// opening commit's sync writes back what a killed daemon left (writeback makes the
    /// extent written) and the daemon frees a block it wrote only through a punch.
    /// Without SEEK_DATA or FIEMAP, true.
    public func mayHoldData(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return false }
        if clearedSinceSync.withLock({ $0.overlaps(range) }) { return true }
        let next = lseek(fd, off_t(range.lowerBound), offloadfs_seek_data)
        if next < 0 { return errno != ENXIO }
        guard UInt64(next) < range.upperBound else { return false }
        return offloadfs_range_unwritten_on_disk(fd, off_t(range.lowerBound), off_t(range.count)) != 1
    }

    private func fallocate(mode: Int32, _ range: Range<UInt64>, call: String) throws(FSError) {
        guard !isReadOnly else { throw .readOnly }
        guard offloadfs_fallocate(fd, mode, off_t(range.lowerBound), off_t(range.upperBound - range.lowerBound)) == 0 else {
            switch errno {
            case EOPNOTSUPP, ENOSYS: throw .notSupported
            case ENOSPC, EDQUOT: throw .noSpace
            case let e: throw .system(errno: e, call: "\(call) image '\(name)'")
            }
        }
    }

    public func setLength(_ length: UInt64) throws(FSError) {
        guard !isReadOnly else { throw .readOnly }
        guard ftruncate(fd, off_t(length)) == 0 else {
            throw errno == ENOSPC || errno == EDQUOT ? .noSpace : .system(errno: errno, call: "truncate image '\(name)'")
        }
    }

    public func sync() throws(FSError) {
        // Nothing was written: nothing to make durable (and no reason to touch the disk).
        guard !isReadOnly else { return }
        let sync = clearedSinceSync.withLock { $0.beginSync() }
        guard fdatasync(fd) == 0 else { throw .system(errno: errno, call: "fdatasync image '\(name)'") }
        clearedSinceSync.withLock { $0.synced(sync) }
    }
}
