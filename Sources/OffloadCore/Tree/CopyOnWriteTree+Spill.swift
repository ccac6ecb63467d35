/// Changed leaves written ahead of the commit, so that what a commit holds in RAM is
/// bounded whatever its generation changed (docs/ARCHITECTURE.md, "A commit's changed
/// leaves written ahead"): 20,000 unlinks scattered over a large directory's names
/// changed about 35,000 leaves, 140 MB of pages held until the commit wrote them.
extension CopyOnWriteTree {
    /// A leaf written ahead: what its parent records once the commit writes the parent.
    struct SpilledLeaf {
        var generation: UInt64
        var checksum: UInt32
    }

    /// `spillLeaves(generation:)` once more than `limit` nodes were changed (or read back)
    /// since the last spill, counted from what that spill left held (the interior nodes
    /// and a root leaf stay in RAM: counted from zero, a commit that changed more interior
    /// nodes than `limit` would spill after every change). Returns the leaves written.
    @discardableResult
    public func spillLeaves(beyond limit: Int, generation: UInt64) throws(FSError) -> Int {
        guard dirty.count > heldAfterSpill + limit else { return 0 }
        return try spillLeaves(generation: generation)
    }

    /// Reads the spilled `leaf` at `block` into `page`, checked against what its spill
    /// wrote (its parent records that only at the commit).
    func read(_ leaf: SpilledLeaf, at block: UInt64, level: UInt8, into page: TreePage) throws(FSError) {
        try pages.readPage(block, into: page.mutableBuffer)
        try TreeNode.validate(page.buffer, expectation(block: block, level: level, generation: leaf.generation,
                                                       checksum: leaf.checksum))
    }

    /// Gives `blocks`, allocated since the last commit and no node of it, back to the
    /// store: those written ahead cleared of what was written there.
    func release(_ blocks: [UInt64]) {
        guard !writtenAhead.isEmpty else { return pages.releasePages(blocks) }
        pages.releasePages(blocks.filter { !writtenAhead.contains($0) })
        let written = blocks.filter { writtenAhead.contains($0) }
        if !written.isEmpty { pages.releaseWrittenPages(written) }
    }

    /// Writes every changed leaf but a root leaf to its block now, stamped with
    /// `generation` (the one the next `commit` must be given), and lets go of its page.
    /// A later change that reaches such a leaf reads it back into a page on the same block
    /// (`writable`); the commit writes the parents with what the spill wrote. Nothing
    /// durable names these blocks until the commit's slot does, so writing them early
    /// changes nothing a crash or a power cut can see. Called between changes only (a
    /// change in progress holds its path's pages). Returns the leaves written.
    @discardableResult
    public func spillLeaves(generation: UInt64) throws(FSError) -> Int {
        if let failure { throw failure }
        precondition(changeCopies.isEmpty, "tree \(treeID): leaves spilled in the middle of a change")
        if let last = lastGeneration, generation <= last {
            throw .invalidArgument("spill generation \(generation) is not above the last commit's, \(last)")
        }
        if let leaf = spilled.first?.value, leaf.generation != generation {
            throw .invalidArgument("spill generation \(generation) is not the \(leaf.generation) of the leaves spilled before")
        }
        // By block, so that the writes (and a power cut among them) replay exactly from a
        // test's seed.
        let leaves = dirty.compactMap { $0.value.view.isLeaf && $0.key != rootBlock ? $0.key : nil }.sorted()
        heldAfterSpill = dirty.count - leaves.count
        guard !leaves.isEmpty else { return 0 }
        for block in leaves {
            let page = dirty[block]!
            TreeNode.setGeneration(page.bytes, generation)
            try writeSealed(page, at: block, ahead: true)
            spilled[block] = SpilledLeaf(generation: generation, checksum: page.view.checksum)
            writtenAhead.insert(block)
            dirty[block] = nil
        }
        leavesWrittenAhead += leaves.count
        return leaves.count
    }
}
