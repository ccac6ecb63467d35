import OffloadCore

/// A `TreePageStore` in memory for tests, which checks that the tree keeps the store's
/// contract (see `TreePageStore`) instead of trusting it:
/// - a block is written at most once between its allocation and its release (copy on
///   write: a committed node is never written again), but for a leaf written ahead of
///   its commit (`writePageAhead`), which may be written again until that commit names
///   it (`committedAhead`), and is released cleared (`releaseWrittenPages`), never as is;
/// - only allocated blocks are read, written or released (no use after release, no
///   double release).
/// A broken rule is recorded in `violations` (and the call fails where it can), so a
/// model test reports it with the operations that led to it.
///
/// `blockLimit` makes allocation fail with `.noSpace` once that many blocks are live.
/// Not thread-safe: one tree uses it at a time.
public final class MemoryTreePages: TreePageStore {
    private var pages: [UInt64: [UInt8]] = [:]
    private var allocated = Set<UInt64>()
    private var written = Set<UInt64>()
    /// Written ahead of a commit that has not named them yet: may be written again.
    private var writtenAhead = Set<UInt64>()
    private var freeBlocks: [UInt64] = []
    private var nextBlock: UInt64
    public private(set) var violations: [String] = []
    public private(set) var allocations = 0
    public private(set) var releases = 0
    public var blockLimit: Int?

    /// Blocks are numbered from `firstBlock` (a tree never sees block 0 of an image).
    public init(firstBlock: UInt64 = 2) { nextBlock = firstBlock }

    /// Blocks allocated and not released.
    public var liveBlocks: Int { allocated.count }

    public func allocatePage() throws(FSError) -> UInt64 {
        if let blockLimit, allocated.count >= blockLimit { throw .noSpace }
        let block: UInt64
        if let reused = freeBlocks.popLast() {
            block = reused
        } else {
            block = nextBlock
            nextBlock += 1
        }
        allocated.insert(block)
        allocations += 1
        return block
    }

    public func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        guard allocated.contains(block), let bytes = pages[block] else {
            violations.append("read of block \(block), which is \(allocated.contains(block) ? "not written" : "not allocated")")
            throw .io("simulated tree store: block \(block) holds no node")
        }
        bytes.withUnsafeBytes { page.copyMemory(from: $0) }
    }

    public func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        guard allocated.contains(block) else {
            violations.append("write of block \(block), which is not allocated")
            throw .io("simulated tree store: write of unallocated block \(block)")
        }
        if !written.insert(block).inserted, writtenAhead.remove(block) == nil {
            violations.append("block \(block) written twice while allocated (a committed node overwritten)")
        }
        pages[block] = Array(page)
    }

    public func writePageAhead(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        try writePage(block, from: page)
        writtenAhead.insert(block)
    }

    public func committedAhead(_ blocks: [UInt64]) {
        for block in blocks where writtenAhead.remove(block) == nil {
            violations.append("block \(block) named by a commit as written ahead, which it was not")
        }
    }

    public func releaseWrittenPages(_ blocks: [UInt64]) {
        for block in blocks where writtenAhead.remove(block) == nil {
            violations.append("block \(block) released as written ahead, which it was not")
        }
        releasePages(blocks)
    }

    public func releasePages(_ blocks: [UInt64]) {
        for block in blocks {
            if writtenAhead.contains(block) {
                violations.append("block \(block), written ahead, released with the leaf's bytes in it")
            }
            guard allocated.remove(block) != nil else {
                violations.append("release of block \(block), which is not allocated (a double free)")
                continue
            }
            written.remove(block)
            writtenAhead.remove(block)
            pages[block] = nil
            freeBlocks.append(block)
            releases += 1
        }
    }

    /// The stored bytes of `block` (tests that damage nodes).
    public func bytes(of block: UInt64) -> [UInt8]? { pages[block] }

    /// Replaces the stored bytes of `block` without any check (tests that damage nodes).
    public func overwrite(_ block: UInt64, with bytes: [UInt8]) { pages[block] = bytes }
}
