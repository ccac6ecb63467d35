extension CopyOnWriteTree {
    /// Removes the item under `key`; false when there was none (the tree is then not
    /// touched: nothing is copied). A failure reading the path down leaves the tree as
    /// it was; one reading a neighbour to rebalance, after the leaf changed, fails the
    /// tree (see the type's documentation, and `abandon()`).
    @discardableResult
    public func remove(_ key: TreeKey) throws(FSError) -> Bool {
        if let failure { throw failure }
        guard let root = rootBlock, try contains(key) else { return false }
        try reserveSpares(sparesForOneChange)
        try undoingCopies { () throws(FSError) in
            rootBlock = try remove(key, from: root, level: rootLevel, generation: rootGeneration, checksum: rootChecksum)
        }
        collapseRoot()
        changesApplied += 1
        return true
    }

    /// Fails the tree after the removal of `key` changed a leaf and then could not read
    /// a neighbour: the working tree may hold an under-full node. The copies stay (the
    /// changed items are in them); `abandon()` gives their blocks back.
    private func failHalfWay(removing key: TreeKey, _ error: FSError) -> FSError {
        let what = "the tree change that removed \(key) failed half-way (\(error)); abandon() the changes since the last commit or reopen the tree at its committed root"
        if case .damagedImage = error { failure = failure ?? .damagedImage(what) } else { failure = failure ?? .io(what) }
        changeCopies.removeAll()
        return error
    }

    /// Removes from the subtree at `block` (which holds `key`); returns its block.
    private func remove(_ key: TreeKey, from block: UInt64, level: UInt8, generation: UInt64,
                        checksum: UInt32) throws(FSError) -> UInt64 {
        let (block, page) = try writable(block, level: level, generation: generation, checksum: checksum)
        let view = page.view
        if level == 0 {
            let (index, found) = view.search(key)
            precondition(found, "removing \(key), which the leaf does not hold")
            LeafItems(view, edit: .remove(at: index)).write(0..<view.count - 1, into: scratch.bytes, imageID: imageID,
                                                            treeID: treeID, block: block)
            page.copy(from: scratch)
            return block
        }
        let index = view.childIndex(for: key)
        let child = try remove(key, from: view.childBlock(index), level: level - 1, generation: view.childGeneration(index),
                               checksum: view.childChecksum(index))
        InternalEntries.setChild(page.bytes, at: index, child)
        if Self.isUnderFull(dirty[child]!.view) && view.count > 1 {
            do throws(FSError) {
                try rebalanceChild(at: index, of: page)
            } catch {
                throw failHalfWay(removing: key, error)
            }
        }
        return block
    }

    /// Under a quarter of a node's room in use.
    static func isUnderFull(_ view: TreeNodeView) -> Bool {
        view.usedBytes < (view.isLeaf ? TreeNode.leafSpace : TreeNode.maximumChildren * TreeNode.internalEntrySize) / 4
    }

    /// Merges the child at `index` of the internal node `page` with a neighbour (the right
    /// one, or the left one for the last child), or moves items between the two when
    /// they do not fit in one node.
    private func rebalanceChild(at index: Int, of page: TreePage) throws(FSError) {
        let view = page.view
        let leftIndex = index + 1 < view.count ? index : index - 1
        let level = view.level - 1
        var pair: [(block: UInt64, page: TreePage)] = []
        for i in leftIndex...leftIndex + 1 {
            let node = try writable(view.childBlock(i), level: level, generation: view.childGeneration(i),
                                    checksum: view.childChecksum(i))
            InternalEntries.setChild(page.bytes, at: i, node.block)
            pair.append(node)
        }
        switch rebalance(left: pair[0], right: pair[1]) {
        case .merged:
            discard(pair[1].block)
            InternalEntries.remove(page.bytes, at: leftIndex + 1)
        case .moved(let separator):
            InternalEntries.setKey(page.bytes, at: leftIndex + 1, separator)
        }
    }

    enum Rebalanced {
        /// Everything is in the left node now; the right one is empty.
        case merged
        /// Items were spread over both; the right node starts at this key now.
        case moved(TreeKey)
    }

    /// Puts the items of two neighbouring nodes of one level into the left one when they
    /// fit, else spreads them evenly over both. Both must be dirty (or newly built).
    func rebalance(left: (block: UInt64, page: TreePage), right: (block: UInt64, page: TreePage)) -> Rebalanced {
        let leftView = left.page.view, rightView = right.page.view
        if leftView.isLeaf {
            let items = LeafItems(leftView, rightView)
            if items.totalBytes <= TreeNode.leafSpace {
                items.write(0..<items.count, into: scratch.bytes, imageID: imageID, treeID: treeID, block: left.block)
                left.page.copy(from: scratch)
                return .merged
            }
            let cut = items.splitPoint()
            let separator = items.item(cut).key
            items.write(0..<cut, into: scratch.bytes, imageID: imageID, treeID: treeID, block: left.block)
            // The right half goes to the scratch page's second half, then both are copied.
            let rightScratch = scratch.bytes + TreeNode.size
            items.write(cut..<items.count, into: rightScratch, imageID: imageID, treeID: treeID, block: right.block)
            left.page.copy(from: scratch)
            right.page.bytes.copyMemory(from: rightScratch, byteCount: TreeNode.size)
            return .moved(separator)
        }
        let leftCount = leftView.count, rightCount = rightView.count, total = leftCount + rightCount
        // Internal nodes: every key 0 is its node's lower bound, so entries move as they are.
        if total <= TreeNode.maximumChildren {
            InternalEntries.copy(from: right.page.bytes, 0, to: left.page.bytes, leftCount, count: rightCount)
            TreeNode.setCount(left.page.bytes, total)
            return .merged
        }
        let cut = total / 2
        InternalEntries.copy(from: left.page.bytes, 0, to: scratch.bytes, 0, count: leftCount)
        InternalEntries.copy(from: right.page.bytes, 0, to: scratch.bytes, leftCount, count: rightCount)
        InternalEntries.copy(from: scratch.bytes, 0, to: left.page.bytes, 0, count: cut)
        TreeNode.setCount(left.page.bytes, cut)
        InternalEntries.clearTail(left.page.bytes)
        InternalEntries.copy(from: scratch.bytes, cut, to: right.page.bytes, 0, count: total - cut)
        TreeNode.setCount(right.page.bytes, total - cut)
        InternalEntries.clearTail(right.page.bytes)
        return .moved(right.page.view.key(0))
    }

    /// A root with one child gives way to it; an empty root leaf leaves an empty tree.
    private func collapseRoot() {
        while let root = rootBlock, let page = dirty[root] {
            let view = page.view
            if view.isLeaf {
                guard view.count == 0 else { return }
                discard(root)
                rootBlock = nil
                rootLevel = 0
                return
            }
            // The only child is on the removal's path, so it is dirty (a committed root
            // with one child, which only a damaged image holds, stays as it is).
            guard view.count == 1, dirty[view.childBlock(0)] != nil else { return }
            rootBlock = view.childBlock(0)
            rootLevel -= 1
            discard(root)
        }
    }
}
