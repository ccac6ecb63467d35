extension CopyOnWriteTree {
    /// Calls `body` with the item of the greatest key at or below `key` (nil when every
    /// key is above it, or the tree is empty), read in place: the value bytes are valid
    /// only during the call. For items keyed by where a run starts (extents by file
    /// offset, block runs by their first block): which one covers a position.
    ///
    /// Separators are lower bounds, so the leaf a search lands in may start above `key`
    /// (its first items were removed since the separator was set): the floor is then the
    /// last item of the leaf before, found by climbing to the nearest ancestor with a
    /// child to the left and going down that child's rightmost path, as `scan` climbs to
    /// the right.
    public func withFloor<R>(_ key: TreeKey, _ body: ((key: TreeKey, value: UnsafeRawBufferPointer)?) throws(FSError) -> R)
        throws(FSError) -> R {
        guard let rootBlock else { return try body(nil) }
        var path: [(view: TreeNodeView, child: Int)] = []
        var view = try descend(from: rootBlock, to: key, &path)
        let (index, found) = view.search(key)
        var floor = found ? index : index - 1
        while floor < 0 {
            while let last = path.last, last.child == 0 { path.removeLast() }
            guard case (let parent, var child)? = path.popLast() else { return try body(nil) }
            child -= 1
            path.append((parent, child))
            view = try self.child(child, of: parent)
            while !view.isLeaf {
                let last = view.count - 1
                path.append((view, last))
                view = try self.child(last, of: view)
            }
            // An empty leaf (only a damaged image holds one) sends the search further left.
            floor = view.count - 1
        }
        return try body((view.key(floor), view.value(floor)))
    }

    /// The item of the greatest key at or below `key`, or nil.
    public func floor(_ key: TreeKey) throws(FSError) -> (key: TreeKey, value: [UInt8])? {
        try withFloor(key) { $0.map { ($0.key, Array($0.value)) } }
    }
}
