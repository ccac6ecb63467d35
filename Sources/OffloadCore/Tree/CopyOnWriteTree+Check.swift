/// What `CopyOnWriteTree.check` counted.
public struct TreeCheckReport: Equatable, Sendable, CustomStringConvertible {
    /// Nodes at each level (index 0: leaves).
    public var nodesPerLevel: [Int] = []
    public var items = 0
    /// Bytes of values.
    public var valueBytes = 0
    /// Bytes the nodes use for items (headers, values, entries), of `nodes * 4048`.
    public var usedBytes = 0

    public var nodes: Int { nodesPerLevel.reduce(0, +) }

    public var description: String {
        "\(items) items (\(valueBytes) value bytes) in \(nodes) nodes, per level \(nodesPerLevel), \(usedBytes) bytes used"
    }
}

extension CopyOnWriteTree {
    /// Walks the whole working tree (committed and dirty nodes) and checks every node as
    /// a reader would (`TreeNode.validate`), plus what only the whole tree shows: each
    /// child one level below its parent, every key inside the range its parents give it
    /// ([key i, key i+1) of the parent entry), every internal node's key 0 equal to that
    /// range's lower bound, no empty node but an empty tree's, and a root with at least
    /// two children when it is not a leaf, and no node reached twice (through two
    /// parents, or two entries of one). Changed nodes are checked by the item rules
    /// alone (they have no generation or checksum until the commit). Throws
    /// `.damagedImage` at the first fault. Memory: one path of nodes (the recursion is
    /// at most 8 deep), and the set of the blocks visited (8 bytes or so a node).
    public func check() throws(FSError) -> TreeCheckReport {
        var report = TreeCheckReport()
        try forEachNode(&report) { _ in }
        return report
    }

    /// Calls `body` with the block of every node of the working tree, checking as `check`.
    func forEachNodeBlock(_ body: (UInt64) -> Void) throws(FSError) {
        var report = TreeCheckReport()
        try forEachNode(&report, body)
    }

    private func forEachNode(_ report: inout TreeCheckReport, _ visit: (UInt64) -> Void) throws(FSError) {
        guard let root = rootBlock else { return }
        report.nodesPerLevel = Array(repeating: 0, count: Int(rootLevel) + 1)
        var seen = Set<UInt64>()
        try check(root, level: rootLevel, generation: rootGeneration, checksum: rootChecksum, lower: .minimum,
                  upper: nil, isRoot: true, &seen, &report, visit)
    }

    private func check(_ block: UInt64, level: UInt8, generation: UInt64, checksum: UInt32, lower: TreeKey, upper: TreeKey?,
                       isRoot: Bool, _ seen: inout Set<UInt64>, _ report: inout TreeCheckReport,
                       _ visit: (UInt64) -> Void) throws(FSError) {
        let expected = expectation(block: block, level: level, generation: generation, checksum: checksum)
        guard seen.insert(block).inserted else {
            throw TreeNode.damaged(expected, "the node is referenced twice (a second parent, or a second entry of one)")
        }
        let view: TreeNodeView
        if let page = dirty[block] {
            view = page.view
            guard view.block == block, view.level == level, view.imageID == imageID, view.treeID == treeID else {
                throw TreeNode.damaged(expected, "a changed node's header does not match where it is (block \(view.block), level \(view.level))")
            }
            try TreeNode.validateItems(view, expected, checkingGenerations: false)
        } else {
            view = try node(block, level: level, generation: generation, checksum: checksum)
        }
        let count = view.count
        guard count >= (isRoot && !view.isLeaf ? 2 : 1) else {
            throw TreeNode.damaged(expected, "\(isRoot ? "the root" : "a node") with \(count) entries")
        }
        guard lower <= view.key(0), upper.map({ view.key(count - 1) < $0 }) ?? true else {
            throw TreeNode.damaged(expected, "keys \(view.key(0))...\(view.key(count - 1)) outside the range [\(lower), \(upper.map { "\($0)" } ?? "end")) its parent gives")
        }
        report.nodesPerLevel[Int(level)] += 1
        visit(block)
        report.usedBytes += view.usedBytes
        if view.isLeaf {
            report.items += count
            for i in 0..<count { report.valueBytes += view.valueLength(i) }
            return
        }
        guard view.key(0) == lower else {
            throw TreeNode.damaged(expected, "key 0 is \(view.key(0)), not the lower bound \(lower) its parent gives")
        }
        for i in 0..<count {
            try check(view.childBlock(i), level: level - 1, generation: view.childGeneration(i),
                      checksum: view.childChecksum(i), lower: view.key(i),
                      upper: i + 1 < count ? view.key(i + 1) : upper, isRoot: false, &seen, &report, visit)
        }
    }
}
