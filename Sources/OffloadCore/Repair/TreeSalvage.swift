/// Reads a format 2 tree of a damaged image node by node, trusting nothing a damaged node
/// says: repair's reader (docs/ARCHITECTURE.md, "Repairing format 2").
///
/// The walk goes down from the root in key order and hands out every item of every leaf
/// that validates against its parent's record, each once and in increasing key order
/// (an item outside the key range its parent gives the leaf is passed over). A node that
/// does not validate is recorded with the key range its parent gave it:
/// - a leaf: its items are lost;
/// - an internal node: the leaves under it are looked for among `candidates` (the block
///   tree's runs of this tree's nodes, which name every live node whatever its parent),
///   read one by one and kept when they validate on their own (checksum, image, tree,
///   block, level 0) and hold keys in the lost range; they are read in key order. A leaf
///   under it that is damaged too is lost, and so is the range when there are no candidates.
///
/// Memory: one page per level, plus, while a damaged internal node's range is
/// recovered, 25 bytes per candidate leaf in that range (never the whole tree's).
struct TreeSalvage {
    /// A node that did not read, and the key range its parent gave it.
    struct Damage {
        var lower: TreeKey
        var upper: TreeKey?
        var level: UInt8
        var block: UInt64
        var why: String
        /// Leaves found for a damaged internal node's range.
        var recoveredLeaves = 0
    }

    let io: any TreePageIO
    let imageID: UInt64
    let treeID: UInt32
    let blocks: Range<UInt64>
    /// Blocks that may hold this tree's leaves (for damaged internal nodes).
    var candidates = RangeSet<UInt64>()
    private(set) var damages: [Damage] = []
    private(set) var nodesRead = 0
    private(set) var itemsHandedOut = 0
    /// Items passed over: outside their leaf's range, or not after the last one handed out.
    private(set) var itemsOutOfPlace = 0
    private var last: TreeKey?
    private var pages: [TreePage] = (0...Int(TreeNode.maximumLevel)).map { _ in TreePage() }

    init(io: any TreePageIO, imageID: UInt64, treeID: UInt32, blocks: Range<UInt64>) {
        self.io = io
        self.imageID = imageID
        self.treeID = treeID
        self.blocks = blocks
    }

    /// Walks the tree at `root`; `node` gets every block the walk read as a node of the
    /// tree (damaged ones included: their blocks are the old commit's), `item` every item.
    mutating func walk(_ root: CopyOnWriteTree.Root?, node: (UInt64) -> Void,
                       item: (TreeKey, UnsafeRawBufferPointer) throws(FSError) -> Void) throws(FSError) {
        last = nil
        guard let root else { return }
        guard root.level <= TreeNode.maximumLevel else {
            damages.append(Damage(lower: .minimum, upper: nil, level: root.level, block: root.block,
                                  why: "the root claims level \(root.level)"))
            return try recover(.minimum, nil, item)
        }
        try visit(root.block, level: root.level, generation: root.generation, checksum: root.checksum,
                  lower: .minimum, upper: nil, node: node, item: item)
    }

    private mutating func visit(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32,
                                lower: TreeKey, upper: TreeKey?, node: (UInt64) -> Void,
                                item: (TreeKey, UnsafeRawBufferPointer) throws(FSError) -> Void) throws(FSError) {
        let page = pages[Int(level)]
        let expected = TreeNodeExpectation(imageID: imageID, treeID: treeID, block: block, level: level,
                                           generation: generation, checksum: checksum)
        if blocks.contains(block) { node(block) }
        do throws(FSError) {
            guard blocks.contains(block) else { throw .damagedImage("block \(block) lies outside the block space") }
            try io.readPage(block, into: page.mutableBuffer)
            try TreeNode.validate(page.buffer, expected)
        } catch {
            damages.append(Damage(lower: lower, upper: upper, level: level, block: block, why: "\(error)"))
            if level > 0 { try recover(lower, upper, item) }
            return
        }
        nodesRead += 1
        let view = page.view
        if view.isLeaf {
            try handOut(view, lower: lower, upper: upper, item)
            return
        }
        for i in 0..<view.count {
            // A child's range is its entry's, inside the range this node was given.
            let childLower = i == 0 ? lower : max(lower, view.key(i))
            var childUpper = i + 1 < view.count ? view.key(i + 1) : upper
            if let bound = upper, let own = childUpper, own > bound { childUpper = bound }
            if let childUpper, childUpper <= childLower { continue }
            try visit(view.childBlock(i), level: level - 1, generation: view.childGeneration(i),
                      checksum: view.childChecksum(i), lower: childLower, upper: childUpper, node: node, item: item)
            // The child's reads used the deeper levels' pages only: this node's view holds.
        }
    }

    private mutating func handOut(_ view: TreeNodeView, lower: TreeKey, upper: TreeKey?,
                                  _ item: (TreeKey, UnsafeRawBufferPointer) throws(FSError) -> Void) throws(FSError) {
        for i in 0..<view.count {
            let key = view.key(i)
            guard key >= lower, upper.map({ key < $0 }) ?? true, last.map({ key > $0 }) ?? true else {
                itemsOutOfPlace += 1
                continue
            }
            last = key
            itemsHandedOut += 1
            try item(key, view.value(i))
        }
    }

    /// Leaves among the candidates that hold keys in `lower..<upper`, read in key order.
    private mutating func recover(_ lower: TreeKey, _ upper: TreeKey?,
                                  _ item: (TreeKey, UnsafeRawBufferPointer) throws(FSError) -> Void) throws(FSError) {
        let page = pages[0]
        var found: [(first: TreeKey, block: UInt64)] = []
        for run in candidates.ranges {
            for block in run where blocks.contains(block) {
                guard let view = readLeaf(block, into: page), view.count > 0 else { continue }
                let first = view.key(0), lastKey = view.key(view.count - 1)
                guard lastKey >= lower, upper.map({ first < $0 }) ?? true else { continue }
                found.append((first, block))
            }
        }
        found.sort { $0.first < $1.first }
        damages[damages.count - 1].recoveredLeaves = found.count
        for leaf in found {
            guard let view = readLeaf(leaf.block, into: page) else { continue }
            nodesRead += 1
            try handOut(view, lower: lower, upper: upper, item)
        }
    }

    /// The leaf of this tree at `block` when it validates on its own (no parent to say
    /// its generation and checksum: its own are taken).
    private func readLeaf(_ block: UInt64, into page: TreePage) -> TreeNodeView? {
        guard (try? io.readPage(block, into: page.mutableBuffer)) != nil else { return nil }
        let view = page.view
        guard view.level == 0 else { return nil }
        let expected = TreeNodeExpectation(imageID: imageID, treeID: treeID, block: block, level: 0,
                                           generation: view.generation, checksum: view.checksum)
        guard (try? TreeNode.validate(page.buffer, expected)) != nil else { return nil }
        return view
    }
}
