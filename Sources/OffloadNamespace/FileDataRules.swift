import OffloadCore

/// The file-data calls' rules and dispatch, shared by both formats' namespaces: the
/// arguments are checked as Linux answers them, then the `OffloadedFile` does the work.
enum FileDataRules {
    /// How long a change refused for space waits for the FORGETs of files an `rm` just
    /// unlinked, whose data stays until then (both formats: `Namespace.afterPendingForgets`,
    /// `VolumeNamespace.awaitForgetsOfUnlinkedFiles`): 200 ms.
    static let forgetWaitNanoseconds: UInt64 = 200_000_000

    /// fallocate(2): mode 0 / KEEP_SIZE reserve space, PUNCH_HOLE frees it keeping the
    /// size, ZERO_RANGE zeroes (with or without KEEP_SIZE). A zero length is EINVAL, a
    /// range past the largest file size EFBIG, a handle not open for writing EBADF.
    static func fallocate(_ data: OffloadedFile, writable: Bool, offset: UInt64, length: UInt64,
                          mode: AllocationMode) throws(FSError) {
        guard writable else { throw .badHandle }
        guard length > 0 else { throw .invalidArgument("fallocate of zero bytes") }
        try Namespace.checkRange(offset: offset, length: length)
        let range = offset..<(offset + length)
        switch mode {
        case .allocate(let keepSize): try data.preallocate(range, keepSize: keepSize)
        case .punchHole: try data.punchHole(range)
        case .zeroRange(let keepSize): try data.zeroRange(range, keepSize: keepSize)
        }
    }

    /// write(2) of all of `bytes` (not empty) at `offset`, or, for a handle opened with
    /// O_APPEND, at the end of file whatever the offset says, reading the size and
    /// writing there as one step under `appendLock`, so appenders never write over each
    /// other. EFBIG past the largest file size.
    static func write(_ data: OffloadedFile, appendLock: PthreadLock, appends: Bool, offset: UInt64,
                      bytes: UnsafeRawBufferPointer) throws(FSError) {
        guard appends else {
            try Namespace.checkRange(offset: offset, length: UInt64(bytes.count))
            _ = try data.write(at: offset, bytes: bytes)
            return
        }
        try appendLock.withLock { () throws(FSError) in
            let end = data.size
            try Namespace.checkRange(offset: end, length: UInt64(bytes.count))
            _ = try data.write(at: end, bytes: bytes)
        }
    }

    /// SEEK_DATA / SEEK_HOLE; ENXIO at or past the end of file.
    static func seek(_ data: OffloadedFile, from offset: UInt64, to target: SeekTarget) throws(FSError) -> UInt64 {
        switch target {
        case .data: return try data.nextData(from: offset)
        case .hole: return try data.nextHole(from: offset)
        }
    }

    /// copy_file_range(2) by sharing the source's image ranges (no bytes copied).
    /// Overlapping ranges of one file are EINVAL and an O_APPEND (or read-only)
    /// destination EBADF, as copy_file_range(2) answers.
    static func copyRange(from input: OffloadedFile, _ source: InodeNumber, at sourceOffset: UInt64,
                          to output: OffloadedFile, _ destination: InodeNumber, at destinationOffset: UInt64,
                          length: UInt64, outputWritable: Bool, outputAppends: Bool) throws(FSError) -> UInt64 {
        guard outputWritable, !outputAppends else { throw .badHandle }
        guard sourceOffset <= UInt64.max - length else { throw .invalidArgument("source range overflows") }
        guard length > 0 else { return 0 }
        try Namespace.checkRange(offset: destinationOffset, length: length)
        if source == destination && sourceOffset < destinationOffset + length && destinationOffset < sourceOffset + length {
            throw .invalidArgument("overlapping ranges in one file")
        }
        return try output.cloneRange(from: input, sourceOffset: sourceOffset, count: length, to: destinationOffset)
    }
}
