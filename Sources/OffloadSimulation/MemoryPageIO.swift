import OffloadCore

/// Pages by block in memory, for tests of trees whose blocks another object allocates
/// (`BlockSpace`): no allocation of its own, so unlike `MemoryTreePages` it cannot tell
/// an allocated block from a free one; the allocator's own checks and the model tests do.
/// A block never written reads as an `.io` error. Not thread-safe.
public final class MemoryPageIO: TreePageIO {
    private var pages: [UInt64: [UInt8]] = [:]
    public private(set) var writes = 0

    public init() {}

    public func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        guard let bytes = pages[block] else { throw .io("simulated page device: block \(block) was never written") }
        bytes.withUnsafeBytes { page.copyMemory(from: $0) }
    }

    public func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        pages[block] = Array(page)
        writes += 1
    }
}
