extension CopyOnWriteTree {
    /// Builds the tree bottom-up from `items` (keys strictly increasing, values within
    /// `TreeNode.maximumValueBytes`), each node filled to about `fill` of its room
    /// (0.5...1.0), and commits it at `generation` (at least 1, above any earlier one): nodes are written as they fill, so
    /// memory stays at two nodes per level whatever the item count. The last two nodes of
    /// each level are evened out, so no node but a root ends under a quarter full when
    /// the input allows. The tree must be empty with nothing changed; on an error every
    /// block written so far is released and the tree stays empty.
    ///
    /// For the v1-to-v2 migration and the scale benchmark's image generator: one pass,
    /// no copy on write, no node read back.
    public func bulkLoad<Items: Sequence>(_ items: Items, fill: Double = 0.9, generation: UInt64) throws(FSError) -> Commit
    where Items.Element == (TreeKey, [UInt8]) {
        try bulkLoad(fill: fill, generation: generation) { (add) throws(FSError) in
            for (key, value) in items {
                try value.withBytes { (bytes) throws(FSError) in try add(key, bytes) }
            }
        }
    }

    /// `bulkLoad` of the items `produce` hands to `add`, in the order it hands them (keys
    /// strictly increasing): for producers that read their items from somewhere else as
    /// they go (repair reads them from a damaged tree's leaves) and can hand out each
    /// value's bytes only during the call.
    public func bulkLoad(fill: Double = 0.9, generation: UInt64,
                         _ produce: (_ add: (TreeKey, UnsafeRawBufferPointer) throws(FSError) -> Void) throws(FSError) -> Void)
        throws(FSError) -> Commit {
        if let failure { throw failure }
        guard rootBlock == nil, dirty.isEmpty, spilled.isEmpty, freedSinceCommit.isEmpty else {
            throw .invalidArgument("a bulk load needs an empty tree with no changes")
        }
        guard generation >= 1 else {
            throw .invalidArgument("bulk load generation 0: a committed root's generation is at least 1")
        }
        if let last = lastGeneration, generation <= last {
            throw .invalidArgument("bulk load generation \(generation) is not above the last one, \(last)")
        }
        var loader = BulkLoader(tree: self, fill: min(1, max(0.5, fill)), generation: generation)
        do throws(FSError) {
            var previous: TreeKey?
            try produce { (key, value) throws(FSError) in
                guard previous.map({ $0 < key }) ?? true else {
                    throw .invalidArgument("bulk load keys are not strictly increasing: \(key) after \(previous!)")
                }
                guard value.count <= TreeNode.maximumValueBytes else {
                    throw .invalidArgument("a tree value of \(value.count) bytes exceeds the maximum of \(TreeNode.maximumValueBytes)")
                }
                previous = key
                try loader.addItem(key, value)
            }
            let root = try loader.finish()
            pages.releasePages(spares)
            spares.removeAll()
            rootBlock = root?.block
            rootLevel = root?.level ?? 0
            committedRoot = root
            lastGeneration = generation
            return Commit(root: root, freedBlocks: [], writtenBlocks: loader.written.count)
        } catch {
            pages.releasePages(loader.written + loader.unwritten)
            throw error
        }
    }
}

/// The nodes being filled during a bulk load: per level, the node being filled and the
/// one completed before it (held back so the last two can be evened out).
private struct BulkLoader {
    struct Node {
        var block: UInt64
        var page: TreePage
        var builder: LeafBuilder?
    }
    struct Level {
        var previous: Node?
        var current: Node?
        var nodesFlushed = 0
    }

    let tree: CopyOnWriteTree
    let leafTarget: Int
    let childrenTarget: Int
    let generation: UInt64
    var levels: [Level] = []
    /// Blocks written, and blocks allocated but not written yet (released on failure).
    var written: [UInt64] = []
    var unwritten: [UInt64] = []

    init(tree: CopyOnWriteTree, fill: Double, generation: UInt64) {
        self.tree = tree
        self.generation = generation
        leafTarget = Int(fill * Double(TreeNode.leafSpace))
        childrenTarget = max(2, Int(fill * Double(TreeNode.maximumChildren)))
    }

    mutating func addItem(_ key: TreeKey, _ value: UnsafeRawBufferPointer) throws(FSError) {
        let bytes = TreeNode.leafBytes(valueBytes: value.count)
        if levels.isEmpty { levels.append(Level()) }
        if let current = levels[0].current, let builder = current.builder,
           TreeNode.leafSpace - builder.freeBytes + bytes > leafTarget || builder.freeBytes < bytes {
            try startNode(level: 0)
        } else if levels[0].current == nil {
            try startNode(level: 0)
        }
        levels[0].current!.builder!.append(key, value)
    }

    /// Adds a child entry to the node being filled at `level` (an internal level).
    private mutating func addChild(level: Int, key: TreeKey, block: UInt64, checksum: UInt32) throws(FSError) {
        if levels.count == level { levels.append(Level()) }
        if levels[level].current.map({ $0.page.view.count >= childrenTarget }) ?? true {
            try startNode(level: level)
        }
        let page = levels[level].current!.page
        let count = page.view.count
        InternalEntries.write(page.bytes, at: count, key: key, child: block, generation: generation, checksum: checksum)
        TreeNode.setCount(page.bytes, count + 1)
    }

    /// Completes the node being filled at `level` (the previous one is flushed to the
    /// level above) and starts a new one.
    private mutating func startNode(level: Int) throws(FSError) {
        if let previous = levels[level].previous { try flush(previous, level: level) }
        levels[level].current?.builder?.finish()
        levels[level].previous = levels[level].current
        let block = try tree.pages.allocatePage()
        unwritten.append(block)
        let page = TreePage()
        TreeNode.writeHeader(page.bytes, imageID: tree.imageID, treeID: tree.treeID, level: UInt8(level), count: 0,
                             generation: generation, block: block)
        levels[level].current = Node(block: block, page: page, builder: level == 0 ? LeafBuilder(page.bytes) : nil)
    }

    /// Writes a completed node and enters it in the level above.
    private mutating func flush(_ node: Node, level: Int) throws(FSError) {
        let first = levels[level].nodesFlushed == 0
        levels[level].nodesFlushed += 1
        try write(node)
        // Key 0 of every level is the lowest key (the leftmost path's lower bound).
        try addChild(level: level + 1, key: first ? .minimum : node.page.view.key(0), block: node.block,
                     checksum: node.page.view.checksum)
    }

    private mutating func write(_ node: Node) throws(FSError) {
        TreeNode.setGeneration(node.page.bytes, generation)
        TreeNode.seal(node.page.bytes)
        try tree.pages.writePage(node.block, from: node.page.buffer)
        unwritten.removeAll { $0 == node.block }
        written.append(node.block)
    }

    /// Flushes every level bottom-up and returns the root (nil for no items).
    mutating func finish() throws(FSError) -> CopyOnWriteTree.Root? {
        guard !levels.isEmpty else { return nil }
        levels[0].current?.builder?.finish()
        var level = 0
        while true {
            var remaining = [levels[level].previous, levels[level].current].compactMap { $0 }
            levels[level].previous = nil
            levels[level].current = nil
            if remaining.count == 2, CopyOnWriteTree.isUnderFull(remaining[1].page.view),
               case .merged = tree.rebalance(left: (remaining[0].block, remaining[0].page),
                                             right: (remaining[1].block, remaining[1].page)) {
                tree.pages.releasePages([remaining[1].block])
                unwritten.removeAll { $0 == remaining[1].block }
                remaining.removeLast()
            }
            if levels[level].nodesFlushed == 0, remaining.count == 1 {
                // The only node of its level: the root.
                let root = remaining[0]
                try write(root)
                return CopyOnWriteTree.Root(block: root.block, generation: generation, level: UInt8(level),
                                            checksum: root.page.view.checksum)
            }
            for node in remaining { try flush(node, level: level) }
            level += 1
        }
    }
}
