/// Tree pages in the image: one `BackingStore` block per node.
///
/// Blocks come from the store's allocator as metadata (they may use the metadata
/// reserve), are read through the mapping with the SIGBUS-guarded copy (a page the
/// kernel cannot read is an `.io` error), written through the store's `ImageStorage`
/// (as journal frames are), and released with `BackingStore.release`, which punches them
/// or quarantines them when the store defers reuse.
public final class BackingStoreTreePages: TreePageStore {
    public let store: BackingStore

    public init(store: BackingStore) { self.store = store }

    public func allocatePage() throws(FSError) -> UInt64 {
        let range = try store.allocate(byteCount: TreeNode.size, hint: nil, forMetadata: true)
        precondition(range.lowerBound & UInt64(TreeNode.size - 1) == 0 && range.count == TreeNode.size)
        return range.lowerBound >> BackingStore.blockShift
    }

    public func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        precondition(page.count == TreeNode.size)
        let offset = try byteOffset(of: block)
        try store.copyOut(from: offset, into: page.baseAddress!, count: TreeNode.size)
    }

    public func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        precondition(page.count == TreeNode.size)
        try store.writeMetadata(page, at: try byteOffset(of: block))
    }

    public func releasePages(_ blocks: [UInt64]) {
        guard !blocks.isEmpty else { return }
        store.release(blocks.map { ($0 << BackingStore.blockShift)..<(($0 + 1) << BackingStore.blockShift) },
                      unsharing: [])
    }

    /// The byte offset of `block`, which must lie past the superblocks and inside the
    /// mapping (a block number read from a damaged node may not).
    private func byteOffset(of block: UInt64) throws(FSError) -> UInt64 {
        let mappedBlocks = UInt64(store.image.mappedBytes) >> BackingStore.blockShift
        guard block >= Superblock.blocks, block < mappedBlocks else {
            throw .damagedImage("tree node block \(block) lies outside the image's node area (blocks \(Superblock.blocks)..<\(mappedBlocks))")
        }
        return block << BackingStore.blockShift
    }
}
