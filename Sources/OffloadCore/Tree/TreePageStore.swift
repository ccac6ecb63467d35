/// Where a tree's nodes live: 4096-byte pages named by block number.
///
/// The contract (what `CopyOnWriteTree` relies on, and what an implementation promises):
/// - `allocatePage` hands out a block no one else uses, until it is released. Its bytes
///   are unspecified: the tree writes a whole node before anyone reads it.
/// - `writePage` stores a whole node at a block the caller allocated. The tree writes
///   each allocated block at most once (copy on write): a block a commit wrote is never
///   written again while it is allocated. Written bytes need not be durable until the
///   caller makes them so (for the image: `BackingStore.sync`); a power cut may leave any
///   subset of the pages written since, torn or whole.
/// - `readPage` copies the node at a block into `page` (4096 bytes). The bytes may be
///   damaged; the tree validates them. A block outside the store, or one that cannot be
///   read, is an error (`.damagedImage`, `.io`), never a trap.
/// - `releasePages` gives blocks back. The tree calls it for blocks it allocated and
///   never committed (spares it kept for a change); for blocks a commit wrote, the
///   CALLER calls it with a commit's `freedBlocks` once a later root that no longer
///   references them is durable: until then a power cut brings back a root that does.
///   The store may reuse a released block at once.
///
/// Readers of a committed root need no lock as long as none of its blocks is released
/// (and so reused) while they read: the blocks a commit wrote never change.
public protocol TreePageStore: AnyObject {
    func allocatePage() throws(FSError) -> UInt64
    func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError)
    func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError)
    func releasePages(_ blocks: [UInt64])
}

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
        let range = try store.allocate(byteCount: TreeNode.size, forMetadata: true)
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
        let mappedBlocks = UInt64(store.mappedBytes) >> BackingStore.blockShift
        guard block >= Superblock.blocks, block < mappedBlocks else {
            throw .damagedImage("tree node block \(block) lies outside the image's node area (blocks \(Superblock.blocks)..<\(mappedBlocks))")
        }
        return block << BackingStore.blockShift
    }
}
