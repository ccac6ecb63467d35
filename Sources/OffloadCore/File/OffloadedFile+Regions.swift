/// One piece of a read, for replies that gather bytes without copying them first
/// (`fuse_reply_iov` with one iovec per piece).
public enum ReadRegion {
    /// Bytes in the image mapping; valid only inside the `withReadRegions` body.
    case image(UnsafeRawBufferPointer)
    /// `count` copies of `value` (holes and fills): point an iovec at a buffer of them.
    case fill(value: UInt8, count: Int)
    /// Bytes held in RAM (at most `inMemoryExtentLimit` each).
    case memory(ArraySlice<UInt8>)

    public var count: Int {
        switch self {
        case .image(let buffer): return buffer.count
        case .fill(_, let count): return count
        case .memory(let bytes): return bytes.count
        }
    }
}

extension OffloadedFile {
    /// Calls `body` with the pieces that make up `count` bytes at `offset` (fewer at end of
    /// file, none past it), under the file's read lock: image pointers stay valid and the
    /// bytes cannot change until `body` returns. Keep `body` short: writers wait.
    ///
    /// Every image page of the regions is touched first (`BackingStore.checkReadable`),
    /// so a page the disk cannot give back is an `.io` error here, not a SIGBUS in
    /// `body` or a failed copy in the kernel after the reply was sent.
    public func withReadRegions<R>(at offset: UInt64, count: Int, _ body: ([ReadRegion]) -> R) throws(FSError) -> R {
        try lock.withReadLock { () throws(FSError) -> R in
            var regions: [ReadRegion] = []
            if offset < sizeBytes, count > 0, var i = extents.floor(offset) {
                let end = offset + min(UInt64(count), sizeBytes - offset)
                var position = offset
                while position < end {
                    let start = extents.key(at: i), extent = extents.value(at: i)
                    let within = position - start
                    let n = Int(min(end - position, extent.size - within))
                    switch extent {
                    case .mmapOffload(let imageOffset, _):
                        let bytes = store.bytes(at: imageOffset + within, count: n)
                        try store.checkReadable(bytes)
                        regions.append(.image(bytes))
                    case .repeatingBytes(let value, _):
                        regions.append(.fill(value: value, count: n))
                    case .inMemory(let bytes):
                        regions.append(.memory(bytes[Int(within)..<Int(within) + n]))
                    }
                    position += UInt64(n)
                    if position < end {
                        guard let next = extents.index(after: i) else { preconditionFailure("extents end before size") }
                        i = next
                    }
                }
            }
            return body(regions)
        }
    }
}
