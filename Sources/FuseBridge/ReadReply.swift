import CFuse
#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

/// Answers READ from where the bytes already are: one iovec per piece of the file
/// (`fuse_reply_iov`), so the kernel copies image bytes straight out of the mapping into
/// the reader's pages, with no copy in the daemon first.
///
/// - image pieces: the iovec points into the image mapping (valid because the reply is
///   sent inside `FileSystemOperations.read`'s callback, under the file's read lock);
/// - zero fills (holes): the iovec points at `zeros`, a read-only anonymous mapping whose
///   pages are all the kernel's shared zero page, repeated for fills longer than it;
/// - other fills and RAM pieces (each at most 4 KiB): copied into one scratch buffer,
///   a fill of another byte value at most `fillChunk` bytes of it, repeated.
///
/// A read made of more than `maxVectors` iovecs (a file of many small RAM pieces) is
/// gathered into one buffer instead: writev takes at most IOV_MAX (1024) iovecs, libfuse
/// adds one for the header, and describing a long list of tiny pieces costs more than
/// copying them.
enum ReadReply {
    static let maxVectors = 256
    /// The largest READ libfuse 3.14 lets the kernel send (max_pages = max_write / 4 KiB).
    static let zeroBytes = Int(Capabilities.maxWriteBytes)
    /// The longest stretch of a non-zero fill value written into the scratch buffer.
    static let fillChunk = 64 << 10

    /// `zeroBytes` of zeros, never written.
    nonisolated(unsafe) static let zeros: UnsafeRawPointer = {
        let mapped = mmap(nil, zeroBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if let mapped, mapped != MAP_FAILED { return UnsafeRawPointer(mapped) }
        // No mapping: calloc's large blocks are fresh (zeroed, untouched) mmap'd memory too.
        guard let allocated = calloc(1, zeroBytes) else { fatalError("cannot allocate the zero buffer") }
        return UnsafeRawPointer(allocated)
    }()

    /// Sends `regions` as the answer to `request`; returns libfuse's status (0, or a
    /// negative errno when the kernel did not take the reply, e.g. an interrupted request).
    static func send(_ request: fuse_req_t, _ regions: [ReadRegion]) -> Int32 {
        if regions.isEmpty { return fuse_reply_buf(request, nil, 0) }
        if regions.count > maxVectors { return sendCopy(request, regions) }

        var scratchBytes = 0
        for region in regions {
            switch region {
            case .memory(let bytes): scratchBytes += bytes.count
            case .fill(let value, let count) where value != 0: scratchBytes += min(count, fillChunk)
            case .image, .fill: break
            }
        }
        // Only reads with RAM pieces or non-zero fills need a scratch buffer; the common
        // read (image pieces and holes) allocates nothing.
        let scratch = scratchBytes > 0
            ? UnsafeMutableRawBufferPointer.allocate(byteCount: scratchBytes, alignment: 16)
            : UnsafeMutableRawBufferPointer(start: nil, count: 0)
        defer { if scratchBytes > 0 { scratch.deallocate() } }

        var vectors: [iovec] = []
        vectors.reserveCapacity(regions.count)
        var used = 0
        for region in regions {
            switch region {
            case .image(let buffer):
                if let base = buffer.baseAddress, buffer.count > 0 {
                    appendVector(&vectors, base, buffer.count)
                }
            case .memory(let bytes):
                guard !bytes.isEmpty else { continue }
                let destination = scratch.baseAddress! + used
                bytes.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                appendVector(&vectors, UnsafeRawPointer(destination), bytes.count)
                used += bytes.count
            case .fill(0, let count):
                appendRepeated(&vectors, zeros, chunk: zeroBytes, total: count)
            case .fill(let value, let count):
                guard count > 0 else { continue }
                let chunk = min(count, fillChunk)
                let destination = scratch.baseAddress! + used
                destination.initializeMemory(as: UInt8.self, repeating: value, count: chunk)
                appendRepeated(&vectors, UnsafeRawPointer(destination), chunk: chunk, total: count)
                used += chunk
            }
            if vectors.count > maxVectors { return sendCopy(request, regions) }
        }
        if vectors.isEmpty { return fuse_reply_buf(request, nil, 0) }
        return vectors.withUnsafeBufferPointer { fuse_reply_iov(request, $0.baseAddress, Int32($0.count)) }
    }

    /// The fallback: every byte gathered into one buffer, sent with `fuse_reply_buf`.
    static func sendCopy(_ request: fuse_req_t, _ regions: [ReadRegion]) -> Int32 {
        let total = regions.reduce(0) { $0 + $1.count }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(total, 1), alignment: 16)
        defer { buffer.deallocate() }
        var used = 0
        for region in regions {
            let destination = buffer.baseAddress! + used
            switch region {
            case .image(let bytes):
                if let base = bytes.baseAddress { destination.copyMemory(from: base, byteCount: bytes.count) }
            case .memory(let bytes):
                bytes.withUnsafeBytes { source in
                    if let base = source.baseAddress { destination.copyMemory(from: base, byteCount: source.count) }
                }
            case .fill(let value, let count):
                destination.initializeMemory(as: UInt8.self, repeating: value, count: count)
            }
            used += region.count
        }
        return fuse_reply_buf(request, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), total)
    }

    /// Appends one iovec, extending the previous one when the bytes continue it in memory
    /// (neighbouring RAM pieces copied side by side into the scratch buffer).
    private static func appendVector(_ vectors: inout [iovec], _ base: UnsafeRawPointer, _ count: Int) {
        if let last = vectors.last, let lastBase = last.iov_base,
           UnsafeRawPointer(lastBase) + last.iov_len == base {
            vectors[vectors.count - 1].iov_len += count
        } else {
            vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: count))
        }
    }

    /// `total` bytes taken from the `chunk` bytes at `base`, as many times as needed.
    private static func appendRepeated(_ vectors: inout [iovec], _ base: UnsafeRawPointer, chunk: Int, total: Int) {
        var remaining = total
        while remaining > 0 {
            let n = min(remaining, chunk)
            vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: base), iov_len: n))
            remaining -= n
        }
    }
}
