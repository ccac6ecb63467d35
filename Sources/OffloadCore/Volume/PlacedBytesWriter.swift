/// The bytes a commit places (RAM pieces of small files moved into newly allocated
/// blocks, `TreeVolume.place`), gathered into runs of consecutive blocks and written one
/// run at a time (docs/ARCHITECTURE.md, "Placed bytes written in runs").
///
/// A commit of `tar -x` of /usr/include places about 8,000 small files, each in blocks of
/// its own that the allocator hands out one after another. Copied into the mapping one by
/// one, each was a page fault on a page the page cache did not hold, and the fault's
/// readahead zeroed a whole window of the unwritten extent around it (9.2% of the
/// daemon's samples under `tar -x`, with the request path's copies into new blocks). A
/// run goes through `ImageStorage.writeFresh` (`pwrite`): no fault, no readahead, one
/// call for many files.
///
/// Each piece starts a block (its blocks are its own); the rest of its last block is
/// written as zeros, which those fresh blocks hold already, so that the next piece's
/// blocks continue the run. Nothing reads the placed blocks before the commit is
/// published, after its sync: `flush` must come before that sync.
struct PlacedBytesWriter {
    /// Runs are written once they reach this many bytes.
    static let runLimit = 1 << 20

    private let storage: any ImageStorage
    /// The image offset of the run's first byte (block-aligned) and its bytes so far.
    private var start: UInt64 = 0
    private var run: [UInt8] = []
    /// Runs written so far (one `writeFresh` each).
    private(set) var writes = 0

    init(storage: any ImageStorage) {
        self.storage = storage
    }

    /// Adds `bytes`, destined for image offset `offset`, the start of blocks just
    /// allocated for them.
    mutating func add(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        precondition(offset % UInt64(BackingStore.blockSize) == 0, "a placed piece starts a block")
        if !run.isEmpty {
            let blockEnd = (run.count + BackingStore.blockSize - 1) / BackingStore.blockSize * BackingStore.blockSize
            if offset == start + UInt64(blockEnd), blockEnd + bytes.count <= Self.runLimit {
                run.append(contentsOf: repeatElement(0, count: blockEnd - run.count))
            } else {
                try flush()
            }
        }
        if run.isEmpty {
            start = offset
            if run.capacity == 0 { run.reserveCapacity(Self.runLimit + BackingStore.blockSize) }
        }
        run.append(contentsOf: bytes)
    }

    /// Writes the run gathered so far.
    mutating func flush() throws(FSError) {
        guard !run.isEmpty else { return }
        try run.withUnsafeBytes { raw in
            Result { () throws(FSError) in try storage.writeFresh(raw, at: start) }
        }.get()
        writes += 1
        run.removeAll(keepingCapacity: true)
    }
}
