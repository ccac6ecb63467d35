/// What insert and remove share: the spare blocks a change reserves, copying committed
/// nodes on first change, undoing the copies of a change that failed before it changed
/// any item, and abandoning every change since the last commit.
extension CopyOnWriteTree {
    /// Allocates spare blocks until there are `count` (the most a change can need).
    func reserveSpares(_ count: Int) throws(FSError) {
        while spares.count < count { spares.append(try pages.allocatePage()) }
    }

    func takeSpare() -> UInt64 {
        guard let block = spares.popLast() else { preconditionFailure("a tree change needed more blocks than it reserved") }
        return block
    }

    /// Blocks a change may need: copies of the path from the root, a sibling per level,
    /// and a split per level plus a new root.
    var sparesForOneChange: Int { 2 * Int(rootLevel) + 3 }

    /// The node at `block`, made changeable: a dirty node as it is; a committed one
    /// copied to a spare block (the old block is freed at the next commit, and the copy
    /// is logged in `changeCopies` until the change ends). Returns the block the node now
    /// has; the caller points the parent at it.
    ///
    /// A committed block copied once already in this transaction was reached through a
    /// second parent (a damaged image): copying it again would free it twice, so the tree
    /// is failed with `.damagedImage` instead.
    func writable(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32) throws(FSError) -> (block: UInt64, page: TreePage) {
        precondition(readCache == nil, "tree \(treeID): a tree that caches committed nodes is read-only")
        if let page = dirty[block] {
            try checkDirty(page, block: block, level: level)
            return (block, page)
        }
        if !spilled.isEmpty, let leaf = spilled[block] {
            // Written ahead of the commit, on a block no commit names: read back and
            // changed in place.
            let page = TreePage()
            try read(leaf, at: block, level: level, into: page)
            spilled[block] = nil
            dirty[block] = page
            return (block, page)
        }
        guard !freedSinceCommit.contains(block) else {
            let error = FSError.damagedImage("tree \(treeID): the node at block \(block) (level \(level)) is reached through two parents")
            failure = failure ?? error
            throw error
        }
        let page = TreePage()
        try pages.readPage(block, into: page.mutableBuffer)
        try TreeNode.validate(page.buffer, expectation(block: block, level: level, generation: generation, checksum: checksum))
        let copy = takeSpare()
        TreeNode.setBlock(page.bytes, copy)
        dirty[copy] = page
        freedSinceCommit.insert(block)
        changeCopies.append((block, copy))
        return (copy, page)
    }

    /// A new, empty dirty node on a spare block.
    func newNode(level: UInt8) -> (block: UInt64, page: TreePage) {
        let block = takeSpare()
        let page = TreePage()
        TreeNode.writeHeader(page.bytes, imageID: imageID, treeID: treeID, level: level, count: 0, generation: 0, block: block)
        dirty[block] = page
        return (block, page)
    }

    /// Drops a dirty node that no longer belongs to the tree; its block becomes a spare.
    func discard(_ block: UInt64) {
        precondition(dirty.removeValue(forKey: block) != nil, "discarding block \(block), which is not dirty")
        spares.append(block)
    }

    /// Runs the copying part of a change: when `body` throws, the committed nodes it
    /// copied are dropped again (their blocks back to the spares, the old blocks off the
    /// freed list). `body` must not have changed any item or any node that was dirty
    /// before it when it throws: then the working tree is exactly as before (parents
    /// are pointed at copies only after the copy's subtree succeeded).
    func undoingCopies<R>(_ body: () throws(FSError) -> R) throws(FSError) -> R {
        precondition(changeCopies.isEmpty, "a tree change started inside another")
        defer { changeCopies.removeAll() }
        do throws(FSError) {
            return try body()
        } catch {
            for (old, copy) in changeCopies.reversed() {
                dirty.removeValue(forKey: copy)
                spares.append(copy)
                freedSinceCommit.remove(old)
            }
            throw error
        }
    }

    /// Runs several changes as one, for a caller whose items must change together (a
    /// run replaced by two, say): when `body` throws after one of its changes took
    /// effect, the tree is failed with that error, so no commit can keep half the group
    /// (`abandon()` drops it with everything else since the last commit). When it throws
    /// before any took effect, the tree is as it was (each change is all or nothing).
    public func groupedChange<R>(_ body: () throws(FSError) -> R) throws(FSError) -> R {
        if let failure { throw failure }
        let before = changesApplied
        do throws(FSError) {
            return try body()
        } catch {
            if changesApplied != before { failure = failure ?? error }
            throw error
        }
    }

    /// Drops every change since the last commit and goes back to the committed root
    /// (an empty tree when there is none): the dirty nodes' blocks and the spares go back
    /// to the store, the freed list is emptied (the committed root still uses those
    /// blocks), and a failed tree is usable again. The way out of a failed change without
    /// reopening; the caller replays whatever it still wants changed.
    public func abandon() {
        release((Array(dirty.keys) + Array(spilled.keys)).sorted() + spares)
        dirty.removeAll()
        spilled.removeAll()
        writtenAhead.removeAll()
        heldAfterSpill = 0
        spares.removeAll()
        freedSinceCommit.removeAll()
        changeCopies.removeAll()
        rootBlock = committedRoot?.block
        rootLevel = committedRoot?.level ?? 0
        failure = nil
    }
}
