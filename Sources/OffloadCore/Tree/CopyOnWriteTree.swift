/// A copy-on-write B+tree of 4 KiB nodes over a `TreePageStore` (docs/ARCHITECTURE.md,
/// "The tree engine"; node bytes in docs/FORMAT.md): ordered (TreeKey -> bytes) items,
/// values up to `TreeNode.maximumValueBytes`.
///
/// Copy on write: a node reachable from the last committed root is never written again.
/// The first change to such a node in a transaction copies it into memory under a newly
/// allocated block (the old block joins the freed list); later changes in the same
/// transaction change that copy. `commit` writes every changed ("dirty") node once and
/// returns the new root with the blocks freed since the last commit; those stay untouched
/// until the caller releases them (`TreePageStore.releasePages`) once the new root is
/// durable. So the bytes of the last committed root, and of any older root whose freed
/// blocks were not released yet, never change.
///
/// Dirty nodes are held in memory until the commit, bounded by what changed (each change
/// dirties one path from the root, plus the siblings a split or merge touches). Clean
/// nodes are read from the store on each visit and validated (checksum, identity, level,
/// generation); none are cached here (a cache belongs to the caller, later).
///
/// Balance: a node that no longer fits splits in two; a node under a quarter full after a
/// removal merges with a neighbour, or takes items from it when the two do not fit in
/// one node; a root with one child gives way to it; a tree emptied by removals has no
/// nodes at all.
///
/// Errors: a change either happens or throws with the tree unchanged. The blocks it may
/// need are allocated before it starts (so `.noSpace` changes nothing), and a failure
/// while reading the path down undoes the copies made on the way (their blocks go back
/// to the spares, the old blocks leave the freed list). Three failures leave the tree
/// *failed* instead, refusing every later change and commit with the first error: a
/// node that a removal must read to rebalance, after the leaf changed, is damaged or
/// unreadable; a committed node is reached through a second parent (it would be freed
/// twice); a block read from a node holds a changed node of another level (a block still
/// referenced was allocated again). A failed tree goes back to its committed root with
/// `abandon()`, which also gives back the blocks the changes held. A change that would
/// split a root at `TreeNode.maximumLevel` is refused (`.damagedImage`: no real tree
/// gets that deep), the tree unchanged. Several changes that must happen together run
/// in `groupedChange`, which fails the tree when the group stops half-way.
///
/// Thread safety: none. One thread at a time uses a tree object (reads included: they
/// share its read buffers). Other threads may read a committed root through their own
/// `CopyOnWriteTree` opened at it, without any lock, as long as the caller does not
/// release that root's blocks while they read (see `TreePageStore`).
public final class CopyOnWriteTree {
    /// Where a committed tree starts: enough to open it again.
    public struct Root: Equatable, Sendable, CustomStringConvertible {
        public var block: UInt64
        public var generation: UInt64
        /// The root's level: 0 when the root is a leaf.
        public var level: UInt8
        /// The root node's checksum field, checked when the root is read (as a parent's
        /// record of a child's).
        public var checksum: UInt32

        public init(block: UInt64, generation: UInt64, level: UInt8, checksum: UInt32) {
            self.block = block
            self.generation = generation
            self.level = level
            self.checksum = checksum
        }

        public var description: String { "block \(block), generation \(generation), level \(level), crc \(checksum)" }
    }

    /// What a commit did.
    public struct Commit: Equatable, Sendable {
        /// The new root; nil when the tree is empty.
        public var root: Root?
        /// Blocks the previous committed root referenced and this one does not, ascending.
        /// The caller releases them once this commit is durable.
        public var freedBlocks: [UInt64]
        /// Nodes written.
        public var writtenBlocks: Int
    }

    public let imageID: UInt64
    public let treeID: UInt32
    let pages: any TreePageStore

    /// The working tree's root: its block and level; nil when the tree is empty. The root
    /// is dirty, or is the committed root (`committedRoot`, whose generation it has).
    var rootBlock: UInt64?
    var rootLevel: UInt8 = 0
    public internal(set) var committedRoot: Root?
    /// The newest generation this tree object committed or was opened at: the next
    /// commit's must be above it (the tree may have been emptied since).
    public internal(set) var lastGeneration: UInt64?
    /// Nodes changed since the last commit, by their (newly allocated) block.
    var dirty: [UInt64: TreePage] = [:]
    /// Changed leaves written ahead of the commit (`spillLeaves`), by block: what their
    /// parents record once the commit writes those. Disjoint from `dirty`: a change that
    /// reaches one reads it back into a page on the same block (`writable`).
    var spilled: [UInt64: SpilledLeaf] = [:]
    /// Leaves written ahead by this tree object so far, a leaf written again counted again.
    public internal(set) var leavesWrittenAhead = 0
    /// Blocks written ahead since the last commit, whatever became of their leaves: one a
    /// later change merged away or emptied goes back to the store cleared
    /// (`TreePageStore.releaseWrittenPages`), never with a leaf's bytes in it.
    var writtenAhead = Set<UInt64>()
    /// Nodes held in RAM after the last spill (the interior ones and a root stay):
    /// `spillLeaves(beyond:)` counts the leaves changed since from there.
    var heldAfterSpill = 0
    /// Committed blocks the working tree stopped referencing since the last commit (a
    /// set: a block found here again was reached through a second parent).
    var freedSinceCommit = Set<UInt64>()
    /// The committed nodes the change in progress copied (old block, copy): what
    /// `undoingCopies` undoes when the change fails before it changed any item.
    var changeCopies: [(old: UInt64, copy: UInt64)] = []
    /// Blocks allocated and not (or no longer) used by any node: taken before a change so
    /// that the change cannot run out of space half-way. Released at commit.
    var spares: [UInt64] = []
    /// One buffer per level for clean nodes read on the way down.
    let readBuffers: [TreePage]
    /// On a tree that caches nodes (a reader of one durable root), the node each level's
    /// buffer holds: a lookup that passes through it again uses it as it is, without the
    /// cache's lock and 4 KiB copy. Lookups of one request, and of neighbouring keys
    /// (a directory's entries, their inodes), share the root and most interior nodes, and
    /// often the leaf. Valid for the same reason as the cache's hits: a node matches
    /// what its parent recorded (block, generation, checksum), and a reader's root is
    /// checked against its slot. Reset before the buffer is overwritten.
    var buffered: [BufferedNode?]
    /// Where leaves and internal nodes are rebuilt before being copied back (twice a
    /// node: a full internal node plus one entry is laid out there before it splits).
    let scratch = TreePage(byteCount: 2 * TreeNode.size)
    /// Changes (upserts, removals that removed) that took effect on this object: how
    /// `groupedChange` sees whether its group changed anything before it failed.
    var changesApplied = 0
    /// Validated nodes kept between reads, on a tree that only reads (`cacheNodes`);
    /// shared with the volume's other readers.
    var readCache: NodeReadCache?
    /// Set when a change failed half-way or the working tree was found inconsistent;
    /// every later change and commit throws it until `abandon()`.
    public internal(set) var failure: FSError?

    /// Opens the tree at `root` (nil: an empty tree), checking the root node.
    public init(pages: any TreePageStore, imageID: UInt64, treeID: UInt32, root: Root?) throws(FSError) {
        self.pages = pages
        self.imageID = imageID
        self.treeID = treeID
        readBuffers = (0...Int(TreeNode.maximumLevel)).map { _ in TreePage() }
        buffered = Array(repeating: nil, count: readBuffers.count)
        if let root {
            guard root.level <= TreeNode.maximumLevel else {
                throw .damagedImage("tree \(treeID) root at block \(root.block) claims level \(root.level), above \(TreeNode.maximumLevel)")
            }
            rootBlock = root.block
            rootLevel = root.level
            committedRoot = root
            lastGeneration = root.generation
            _ = try node(root.block, level: root.level, generation: root.generation, checksum: root.checksum)
        }
    }

    /// True when the tree holds no items.
    public var isEmpty: Bool { rootBlock == nil }
    /// Nodes changed since the last commit and held in RAM (the leaves written ahead,
    /// `spillLeaves`, are not).
    public var dirtyNodeCount: Int { dirty.count }
    /// Blocks allocated for changes and not used yet (released at commit).
    public var spareBlockCount: Int { spares.count }

    // MARK: - Reading

    /// The node at `block`: the dirty copy, or the committed bytes read into the level's
    /// buffer and validated against what the parent recorded (for a spilled leaf, what
    /// its spill wrote: the parent records it at the commit).
    @inline(__always)
    func node(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32) throws(FSError) -> TreeNodeView {
        if !dirty.isEmpty, let page = dirty[block] {
            try checkDirty(page, block: block, level: level)
            return page.view
        }
        if !spilled.isEmpty, let leaf = spilled[block] {
            let buffer = readBuffers[Int(level)]
            try read(leaf, at: block, level: level, into: buffer)
            return buffer.view
        }
        let buffer = readBuffers[Int(level)]
        guard let readCache else {
            try pages.readPage(block, into: buffer.mutableBuffer)
            try TreeNode.validate(buffer.buffer, expectation(block: block, level: level, generation: generation, checksum: checksum))
            return buffer.view
        }
        let wanted = BufferedNode(block: block, generation: generation, checksum: checksum)
        if buffered[Int(level)] == wanted { return buffer.view }
        buffered[Int(level)] = nil
        if !readCache.copy(block, level: level, generation: generation, checksum: checksum, into: buffer.bytes) {
            try pages.readPage(block, into: buffer.mutableBuffer)
            try TreeNode.validate(buffer.buffer, expectation(block: block, level: level, generation: generation, checksum: checksum))
            readCache.insert(block, level: level, generation: generation, checksum: checksum, from: buffer.bytes)
        }
        buffered[Int(level)] = wanted
        return buffer.view
    }

    /// A committed node a level's read buffer holds, as its parent recorded it.
    struct BufferedNode: Equatable {
        var block: UInt64
        var generation: UInt64
        var checksum: UInt32
    }

    /// Keeps validated committed nodes between reads in `cache` (`NodeReadCache`), which
    /// other tree objects may share: only for a tree object that reads a durable root and
    /// is never changed (a reader of one commit).
    public func cacheNodes(in cache: NodeReadCache) {
        precondition(dirty.isEmpty, "a tree with changes does not cache committed nodes")
        readCache = cache
        buffered = Array(repeating: nil, count: readBuffers.count)
    }

    /// A changed node found at a block read from a parent must be of the level expected
    /// there: a block still referenced by a committed node and handed out again (a
    /// damaged image, or allocator) would otherwise put a leaf where an internal node is
    /// expected, or the reverse. The tree is then failed: its working nodes overlap.
    @inline(__always)
    func checkDirty(_ page: TreePage, block: UInt64, level: UInt8) throws(FSError) {
        let found = page.view.level
        guard found != level else { return }
        let error = FSError.damagedImage("tree \(treeID): block \(block), where a node of level \(level) is expected, holds a changed node of level \(found): a block still referenced was allocated again")
        failure = failure ?? error
        throw error
    }

    func expectation(block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32) -> TreeNodeExpectation {
        TreeNodeExpectation(imageID: imageID, treeID: treeID, block: block, level: level, generation: generation,
                            checksum: checksum)
    }

    /// The generation and checksum recorded for the root (meaningful when it is clean).
    var rootGeneration: UInt64 { committedRoot?.generation ?? 0 }
    var rootChecksum: UInt32 { committedRoot?.checksum ?? 0 }

    /// Calls `body` with the value stored under `key` (nil when there is none), read in
    /// place: the bytes are valid only during the call.
    public func withValue<R>(_ key: TreeKey, _ body: (UnsafeRawBufferPointer?) throws(FSError) -> R) throws(FSError) -> R {
        guard var block = rootBlock else { return try body(nil) }
        var level = rootLevel, generation = rootGeneration, checksum = rootChecksum
        while true {
            let view = try node(block, level: level, generation: generation, checksum: checksum)
            if view.isLeaf {
                let (index, found) = view.search(key)
                return try body(found ? view.value(index) : nil)
            }
            let child = view.childIndex(for: key)
            block = view.childBlock(child)
            generation = view.childGeneration(child)
            checksum = view.childChecksum(child)
            level -= 1
        }
    }

    /// The value stored under `key`, or nil.
    public func lookup(_ key: TreeKey) throws(FSError) -> [UInt8]? {
        try withValue(key) { $0.map { Array($0) } }
    }

    public func contains(_ key: TreeKey) throws(FSError) -> Bool {
        try withValue(key) { $0 != nil }
    }

    /// Visits the items with keys in `lower...upper` in key order; `body` returns false to
    /// stop. Value bytes are valid only during each call. The tree must not change during
    /// the scan.
    public func scan(from lower: TreeKey, through upper: TreeKey,
                     _ body: (TreeKey, UnsafeRawBufferPointer) throws(FSError) -> Bool) throws(FSError) {
        guard let rootBlock, lower <= upper else { return }
        var path: [(view: TreeNodeView, child: Int)] = []
        var view = try descend(from: rootBlock, to: lower, &path)
        var index = view.search(lower).index
        while true {
            while index < view.count {
                let key = view.key(index)
                guard key <= upper else { return }
                guard try body(key, view.value(index)) else { return }
                index += 1
            }
            // The leaf is done: climb to the first ancestor with a child to the right,
            // then down its leftmost path.
            while let last = path.last, last.child + 1 >= last.view.count { path.removeLast() }
            guard case (let parent, var child)? = path.popLast() else { return }
            child += 1
            guard parent.key(child) <= upper else { return }
            path.append((parent, child))
            view = try self.child(child, of: parent)
            while !view.isLeaf {
                path.append((view, 0))
                view = try self.child(0, of: view)
            }
            index = 0
        }
    }

    /// Goes down from the root at `rootBlock` to the leaf whose range holds `key`, and
    /// returns it; `path` gets each internal node on the way and the child taken in it.
    /// The views stay valid while the tree does not change and no deeper node is read
    /// at their level: each level has its own read buffer, and dirty pages do not move.
    func descend(from rootBlock: UInt64, to key: TreeKey,
                 _ path: inout [(view: TreeNodeView, child: Int)]) throws(FSError) -> TreeNodeView {
        var view = try node(rootBlock, level: rootLevel, generation: rootGeneration, checksum: rootChecksum)
        while !view.isLeaf {
            let child = view.childIndex(for: key)
            path.append((view, child))
            view = try self.child(child, of: view)
        }
        return view
    }

    /// Child `i` of the internal node `parent`, checked against what `parent` records.
    @inline(__always)
    func child(_ i: Int, of parent: TreeNodeView) throws(FSError) -> TreeNodeView {
        try node(parent.childBlock(i), level: parent.level - 1, generation: parent.childGeneration(i),
                 checksum: parent.childChecksum(i))
    }

    // MARK: - Commit

    /// Writes every dirty node, stamped with `generation` (at least 1, and above the last
    /// committed root's), in ascending (level, block) order, and makes the working tree
    /// the committed one. Nothing is made durable here: the caller syncs the store, then
    /// records the returned root (in a superblock), then releases `freedBlocks`. If a write
    /// fails, the tree is failed: the committed root is untouched, and the caller calls
    /// `abandon()` (which gives back every block of the failed commit, written or not) and
    /// applies the changes again; retrying in place would write blocks twice.
    public func commit(generation: UInt64, progress: CommitProgress? = nil) throws(FSError) -> Commit {
        if let failure { throw failure }
        guard generation >= 1 else { throw .invalidArgument("commit generation 0: a committed root's generation is at least 1") }
        if let last = lastGeneration, !dirty.isEmpty || !freedSinceCommit.isEmpty, generation <= last {
            throw .invalidArgument("commit generation \(generation) is not above the last one, \(last)")
        }
        if let leaf = spilled.first?.value, leaf.generation != generation {
            throw .invalidArgument("commit generation \(generation) is not the \(leaf.generation) its spilled leaves were written with")
        }
        // Children before parents: a parent records its dirty children's checksums. By
        // block within a level, so that the writes (and a power cut among them) replay
        // exactly from a test's seed, whatever the dictionary's order.
        let order = dirty.map { (block: $0.key, level: $0.value.view.level) }
            .sorted { $0.level != $1.level ? $0.level < $1.level : $0.block < $1.block }
        for (written, (block, _)) in order.enumerated() {
            if let progress, progress.isDue(written) { progress.report(written, order.count) }
            let page = dirty[block]!
            TreeNode.setGeneration(page.bytes, generation)
            let view = page.view
            if !view.isLeaf {
                for i in 0..<view.count {
                    let childBlock = view.childBlock(i)
                    if let child = dirty[childBlock] {
                        InternalEntries.setChildGeneration(page.bytes, at: i, generation)
                        InternalEntries.setChildChecksum(page.bytes, at: i, child.view.checksum)
                    } else if !spilled.isEmpty, let leaf = spilled[childBlock] {
                        InternalEntries.setChildGeneration(page.bytes, at: i, leaf.generation)
                        InternalEntries.setChildChecksum(page.bytes, at: i, leaf.checksum)
                    }
                }
            }
            try writeSealed(page, at: block)
        }
        // Each block once: a leaf spilled and changed again is dirty, not spilled.
        let written = dirty.count + spilled.count
        assert(rootBlock.map { spilled[$0] == nil } ?? true, "tree \(treeID): its root was spilled")
        let root = rootBlock.map { block in
            dirty[block].map { Root(block: block, generation: generation, level: rootLevel, checksum: $0.view.checksum) }
                ?? Root(block: block, generation: rootGeneration, level: rootLevel, checksum: rootChecksum)
        }
        dirty.removeAll()
        if !spilled.isEmpty { pages.committedAhead(spilled.keys.sorted()) }
        spilled.removeAll()
        release(spares)
        spares.removeAll()
        writtenAhead.removeAll()
        heldAfterSpill = 0
        let freed = freedSinceCommit.sorted()
        freedSinceCommit.removeAll()
        committedRoot = root
        if written > 0 || !freed.isEmpty { lastGeneration = generation }
        return Commit(root: root, freedBlocks: freed, writtenBlocks: written)
    }

    /// Seals `page` and writes it at `block`, by its commit or `ahead` of it
    /// (`spillLeaves`). A failed write fails the tree: retrying in place would write the
    /// blocks already written a second time, so the caller abandons the changes (their
    /// blocks go back) and applies them again.
    func writeSealed(_ page: TreePage, at block: UInt64, ahead: Bool = false) throws(FSError) {
        TreeNode.seal(page.bytes)
        do {
            if ahead {
                try pages.writePageAhead(block, from: page.buffer)
            } else {
                try pages.writePage(block, from: page.buffer)
            }
        } catch {
            failure = error
            throw error
        }
    }
}
