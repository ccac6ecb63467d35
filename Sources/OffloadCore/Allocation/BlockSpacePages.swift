/// A tree's node store in format 2's block space: pages are allocated from a `BlockSpace`
/// and read and written through its page seam (`TreePageIO`).
///
/// The store remembers the blocks it handed out since the last commit of its tree
/// (`live`): after the tree commits, those are exactly the nodes the commit wrote (the
/// tree gave its spares back), and `BlockSpace.commit` records them as node runs of the
/// tree. The commit's `freedBlocks` are NOT given back here: they are committed nodes,
/// released in the block tree by `BlockSpace.commit` (pending frees, the reuse rule), so
/// `releasePages` takes only blocks handed out since the last commit (spares, abandoned
/// changes), which no root ever referenced and which are free again at once.
public final class BlockSpacePages: TreePageStore {
    public let treeID: UInt32
    // Strong: a reader's tree may outlive the volume that opened it (no cycle: the space
    // keeps no page store of a tree).
    let space: BlockSpace
    /// Blocks handed out since the tree's last commit and not given back.
    public internal(set) var live = Set<UInt64>()

    init(space: BlockSpace, treeID: UInt32) {
        self.space = space
        self.treeID = treeID
    }

    public func allocatePage() throws(FSError) -> UInt64 {
        let block = try space.takeNode()
        live.insert(block)
        return block
    }

    public func releasePages(_ blocks: [UInt64]) {
        for block in blocks {
            precondition(live.remove(block) != nil,
                         "tree \(treeID): block \(block) given back was not handed out since the last commit (committed nodes are freed through the block tree)")
            space.giveBackNode(block)
        }
    }

    /// Blocks a leaf was written ahead to and no commit names: punched before they are
    /// free again (`BlockSpace.unprepare`), as everything this volume frees is ("The free
    /// space scrubbed where allocations go"): a file taking one must not read a
    /// directory's names there, before or after a power cut.
    public func releaseWrittenPages(_ blocks: [UInt64]) {
        for block in blocks { space.unprepare(block..<block + 1) }
        releasePages(blocks)
    }

    public func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        try checkInside(block)
        try space.io.readPage(block, into: page)
    }

    public func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        try checkInside(block)
        try space.io.writePage(block, from: page)
    }

    private func checkInside(_ block: UInt64) throws(FSError) {
        guard block >= space.firstBlock, block < space.endBlock else {
            throw .damagedImage("tree \(treeID): node block \(block) lies outside the block space \(space.firstBlock)..<\(space.endBlock)")
        }
    }
}

/// The block tree's own node store: while a commit settles the block tree, its nodes come
/// from a pool of blocks reserved before the loop (`BlockSpace.commit`), so the loop
/// neither reads free space from the tree it is changing nor runs out of space half-way;
/// outside a commit the block tree is only read, and allocating is refused.
final class BlockTreePoolPages: TreePageStore {
    let io: any TreePageIO
    let blocks: Range<UInt64>
    /// The pool's blocks not handed out (or given back), highest first: handed out
    /// lowest first, so that nodes of one commit lie together and their runs coalesce.
    private(set) var available: [UInt64] = []
    /// True while a commit runs.
    private var inCommit = false
    /// Set when the pool had no block left for a node (the commit then sizes it up).
    private(set) var ranOut = false

    init(io: any TreePageIO, blocks: Range<UInt64>) {
        self.io = io
        self.blocks = blocks
    }

    func begin(pool: [UInt64]) {
        precondition(!inCommit)
        available = pool.sorted(by: >)
        inCommit = true
        ranOut = false
    }

    func end() {
        available = []
        inCommit = false
    }

    func allocatePage() throws(FSError) -> UInt64 {
        guard inCommit else {
            throw .invalidArgument("the block tree changes only inside a commit (BlockSpace.commit)")
        }
        guard let block = available.popLast() else {
            ranOut = true
            throw .noSpace
        }
        return block
    }

    func releasePages(_ released: [UInt64]) {
        guard !released.isEmpty else { return }
        precondition(inCommit, "the block tree gave back pages outside a commit")
        available += released
        available.sort(by: >)
    }

    func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        guard blocks.contains(block) else {
            throw .damagedImage("block tree node block \(block) lies outside the block space \(blocks)")
        }
        try io.readPage(block, into: page)
    }

    func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        precondition(blocks.contains(block))
        try io.writePage(block, from: page)
    }
}
