/// Where a tree's nodes live: 4096-byte pages named by block number.
///
/// The contract (what `CopyOnWriteTree` relies on, and what an implementation promises):
/// - `allocatePage` hands out a block no one else uses, until it is released. Its bytes
///   are unspecified: the tree writes a whole node before anyone reads it.
/// - `writePage` stores a whole node at a block the caller allocated. The tree writes
///   each allocated block at most once (copy on write): a block a commit wrote is never
///   written again while it is allocated. A leaf written ahead of its commit
///   (`writePageAhead`, `CopyOnWriteTree.spillLeaves`) may be written again, ahead or by
///   the commit, until that commit names it (`committedAhead`); given back unnamed, it
///   goes through `releaseWrittenPages`. Written bytes need not be durable until the
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
public protocol TreePageStore: TreePageIO {
    func allocatePage() throws(FSError) -> UInt64
    func releasePages(_ blocks: [UInt64])
    /// `writePage` of a changed leaf ahead of its commit: no root names the block yet.
    func writePageAhead(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError)
    /// The commit that names `blocks`, written ahead, is being written: from now on they
    /// are committed nodes.
    func committedAhead(_ blocks: [UInt64])
    /// `releasePages` of blocks written ahead that no commit will name (a later change
    /// merged their leaves away, or the changes were abandoned): cleared of the leaves'
    /// bytes first where the store hands blocks out to others.
    func releaseWrittenPages(_ blocks: [UInt64])
}

extension TreePageStore {
    /// A store that does not tell the two writes apart (the image's).
    public func writePageAhead(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        try writePage(block, from: page)
    }

    public func committedAhead(_ blocks: [UInt64]) {}

    public func releaseWrittenPages(_ blocks: [UInt64]) { releasePages(blocks) }
}

/// Reading and writing pages by block, with the allocation left to someone else: the seam
/// a store that allocates from format 2's block space (`BlockSpacePages`) writes through.
/// `readPage` and `writePage` keep `TreePageStore`'s rules.
public protocol TreePageIO: AnyObject {
    func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError)
    func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError)
}
