extension CopyOnWriteTree {
    /// Stores `value` under `key`, replacing any value there; returns true when the key
    /// was new. Values longer than `TreeNode.maximumValueBytes` are refused
    /// (`.invalidArgument`); the caller stores such values elsewhere and keeps a reference
    /// here.
    @discardableResult
    public func upsert(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) -> Bool {
        if let failure { throw failure }
        guard value.count <= TreeNode.maximumValueBytes else {
            throw .invalidArgument("a tree value of \(value.count) bytes exceeds the maximum of \(TreeNode.maximumValueBytes)")
        }
        try reserveSpares(sparesForOneChange)
        // From here on nothing can fail but reading (and copying) the path down, which
        // changes only where nodes live, not what the tree holds, and is undone when a
        // read fails.
        guard let root = rootBlock else {
            let (block, page) = newNode(level: 0)
            LeafItems(page.view, edit: .insert(at: 0, key, value)).write(0..<1, into: scratch.bytes, imageID: imageID, treeID: treeID, block: block)
            page.copy(from: scratch)
            rootBlock = block
            rootLevel = 0
            changesApplied += 1
            return true
        }
        if rootLevel == TreeNode.maximumLevel,
           try splitsEveryNode(key, valueBytes: value.count, from: root) {
            throw .damagedImage("tree \(treeID): storing \(key) would split the root at level \(rootLevel), the deepest a tree may be (only a damaged or crafted image holds a tree that deep)")
        }
        var inserted = false
        let (newRoot, split) = try undoingCopies { () throws(FSError) in
            try insert(key, value, into: root, level: rootLevel, generation: rootGeneration, checksum: rootChecksum,
                       inserted: &inserted)
        }
        rootBlock = newRoot
        changesApplied += 1
        guard let (separator, right) = split else { return inserted }
        // The root split: a new root above the two halves.
        let (block, page) = newNode(level: rootLevel + 1)
        InternalEntries.write(page.bytes, at: 0, key: .minimum, child: newRoot, generation: 0, checksum: 0)
        InternalEntries.write(page.bytes, at: 1, key: separator, child: right, generation: 0, checksum: 0)
        TreeNode.setCount(page.bytes, 2)
        rootBlock = block
        rootLevel += 1
        return inserted
    }

    @discardableResult
    public func upsert(_ key: TreeKey, _ value: [UInt8]) throws(FSError) -> Bool {
        try value.withBytes { (bytes) throws(FSError) -> Bool in try upsert(key, bytes) }
    }

    /// Whether storing `key` with a value of `valueBytes` would split every node on its
    /// path from `root` (the root included): each internal node full and the leaf
    /// overflowing. Read only.
    private func splitsEveryNode(_ key: TreeKey, valueBytes: Int, from root: UInt64) throws(FSError) -> Bool {
        var view = try node(root, level: rootLevel, generation: rootGeneration, checksum: rootChecksum)
        while !view.isLeaf {
            guard view.count >= TreeNode.maximumChildren else { return false }
            view = try child(view.childIndex(for: key), of: view)
        }
        let (index, found) = view.search(key)
        let bytes = view.usedBytes - (found ? view.itemBytes(index) : 0) + TreeNode.leafBytes(valueBytes: valueBytes)
        return bytes > TreeNode.leafSpace
    }

    /// Inserts into the subtree at `block`; returns the subtree's (possibly new) block
    /// and, when it split, the separator key and block of its new right half. `inserted`
    /// says whether the key was new.
    private func insert(_ key: TreeKey, _ value: UnsafeRawBufferPointer, into block: UInt64, level: UInt8,
                        generation: UInt64, checksum: UInt32, inserted: inout Bool) throws(FSError) -> (UInt64, (TreeKey, UInt64)?) {
        let (block, page) = try writable(block, level: level, generation: generation, checksum: checksum)
        if level == 0 { return (block, insertInLeaf(key, value, page, block, inserted: &inserted)) }
        let view = page.view
        let index = view.childIndex(for: key)
        let (child, split) = try insert(key, value, into: view.childBlock(index), level: level - 1,
                                        generation: view.childGeneration(index), checksum: view.childChecksum(index),
                                        inserted: &inserted)
        InternalEntries.setChild(page.bytes, at: index, child)
        guard let (separator, right) = split else { return (block, nil) }
        return (block, insertEntry(separator, right, at: index + 1, page, block))
    }

    private func insertInLeaf(_ key: TreeKey, _ value: UnsafeRawBufferPointer, _ page: TreePage,
                              _ block: UInt64, inserted: inout Bool) -> (TreeKey, UInt64)? {
        let view = page.view
        let (index, found) = view.search(key)
        inserted = !found
        let items = LeafItems(view, edit: found ? .replace(at: index, value) : .insert(at: index, key, value))
        guard items.totalBytes > TreeNode.leafSpace else {
            items.write(0..<items.count, into: scratch.bytes, imageID: imageID, treeID: treeID, block: block)
            page.copy(from: scratch)
            return nil
        }
        let cut = items.splitPoint()
        let (rightBlock, right) = newNode(level: 0)
        items.write(cut..<items.count, into: right.bytes, imageID: imageID, treeID: treeID, block: rightBlock)
        let separator = items.item(cut).key
        items.write(0..<cut, into: scratch.bytes, imageID: imageID, treeID: treeID, block: block)
        page.copy(from: scratch)
        return (separator, rightBlock)
    }

    /// Inserts the entry (key, child) at `index` of an internal node, splitting the node
    /// in two halves when it is full; returns the right half's separator and block then.
    private func insertEntry(_ key: TreeKey, _ child: UInt64, at index: Int, _ page: TreePage,
                             _ block: UInt64) -> (TreeKey, UInt64)? {
        let view = page.view
        let count = view.count
        if count < TreeNode.maximumChildren {
            InternalEntries.openGap(page.bytes, at: index)
            InternalEntries.write(page.bytes, at: index, key: key, child: child, generation: 0, checksum: 0)
            return nil
        }
        // Lay all count + 1 entries out in the scratch page from its entry 0, then cut.
        InternalEntries.copy(from: page.bytes, 0, to: scratch.bytes, 0, count: index)
        InternalEntries.write(scratch.bytes, at: index, key: key, child: child, generation: 0, checksum: 0)
        InternalEntries.copy(from: page.bytes, index, to: scratch.bytes, index + 1, count: count - index)
        let total = count + 1, cut = total / 2
        let (rightBlock, right) = newNode(level: view.level)
        InternalEntries.copy(from: scratch.bytes, cut, to: right.bytes, 0, count: total - cut)
        TreeNode.setCount(right.bytes, total - cut)
        InternalEntries.copy(from: scratch.bytes, 0, to: page.bytes, 0, count: cut)
        TreeNode.setCount(page.bytes, cut)
        InternalEntries.clearTail(page.bytes)
        return (right.view.key(0), rightBlock)
    }
}
