/// The items a leaf (or two neighbouring leaves) will hold after one change, read
/// straight from the old pages: the tree writes them back into one page, or splits them
/// over two, without building an array of items first.
struct LeafItems {
    enum Edit {
        case insert(at: Int, TreeKey, UnsafeRawBufferPointer)
        case replace(at: Int, UnsafeRawBufferPointer)
        case remove(at: Int)
    }

    let first: TreeNodeView
    let second: TreeNodeView?
    let edit: Edit?
    let count: Int

    init(_ first: TreeNodeView, _ second: TreeNodeView? = nil, edit: Edit? = nil) {
        self.first = first
        self.second = second
        self.edit = edit
        var count = first.count + (second?.count ?? 0)
        switch edit {
        case .insert: count += 1
        case .remove: count -= 1
        case .replace, nil: break
        }
        self.count = count
    }

    /// Item `i` of the result: its key and value bytes (pointing into the old pages or
    /// the caller's value).
    func item(_ i: Int) -> (key: TreeKey, value: UnsafeRawBufferPointer) {
        var source = i
        switch edit {
        case .insert(let at, let key, let value):
            if i == at { return (key, value) }
            if i > at { source -= 1 }
        case .replace(let at, let value):
            if i == at { return (original(i).key, value) }
        case .remove(let at):
            if i >= at { source += 1 }
        case nil:
            break
        }
        return original(source)
    }

    private func original(_ i: Int) -> (key: TreeKey, value: UnsafeRawBufferPointer) {
        if i < first.count { return (first.key(i), first.value(i)) }
        let second = second!
        return (second.key(i - first.count), second.value(i - first.count))
    }

    func bytes(_ i: Int) -> Int { TreeNode.leafBytes(valueBytes: item(i).value.count) }

    /// Bytes the items take (headers and values): the old leaves' own counts (a leaf's
    /// values are packed, `TreeNodeView.usedBytes`) and the edit's difference, rather than
    /// a sum over every item, which each insert into a leaf paid.
    var totalBytes: Int {
        var total = first.usedBytes + (second?.usedBytes ?? 0)
        switch edit {
        case .insert(_, _, let value): total += TreeNode.leafBytes(valueBytes: value.count)
        case .replace(let at, let value): total += value.count - original(at).value.count
        case .remove(let at): total -= TreeNode.leafBytes(valueBytes: original(at).value.count)
        case nil: break
        }
        assert(total == (0..<count).reduce(0) { $0 + bytes($1) }, "a leaf's bytes counted from its header differ from its items'")
        return total
    }

    /// Writes items `range` into `page` as a whole leaf (header included).
    func write(_ range: Range<Int>, into page: UnsafeMutableRawPointer, imageID: UInt64, treeID: UInt32, block: UInt64) {
        TreeNode.writeHeader(page, imageID: imageID, treeID: treeID, level: 0, count: 0, generation: 0, block: block)
        var builder = LeafBuilder(page)
        for i in range {
            let (key, value) = item(i)
            builder.append(key, value)
        }
        builder.finish()
    }

    /// Where to cut the items into two leaves that both fit: the cut that leaves the two
    /// sides closest in bytes. Both sides are non-empty. A cut always exists when every
    /// item is at most `maximumValueBytes` and the items fit in two leaves' worth minus
    /// one item (see `TreeNode.maximumValueBytes`).
    func splitPoint() -> Int {
        precondition(count >= 2)
        let total = totalBytes
        var best = -1, bestImbalance = Int.max, left = 0
        for cut in 1..<count {
            left += bytes(cut - 1)
            let right = total - left
            guard left <= TreeNode.leafSpace, right <= TreeNode.leafSpace else { continue }
            let imbalance = abs(left - right)
            if imbalance < bestImbalance { best = cut; bestImbalance = imbalance }
        }
        precondition(best > 0, "no split of \(count) items (\(total) bytes) fits two leaves")
        return best
    }
}
