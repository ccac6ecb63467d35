extension TreeVolume {
    /// Fills the empty filesystem tree with `items` (keys strictly increasing) bottom-up
    /// and commits it: one pass, each node written once, memory two nodes a level
    /// (`CopyOnWriteTree.bulkLoad`). For images made whole at once: the upgrade of a
    /// version 1 image (step 5) and the scale benchmark's generator. The tree must be
    /// empty and no operation pending. Image extents among the items hold references the
    /// block space does not know: only items without image extents (inline bytes) belong
    /// here until the upgrade passes the data references too.
    @discardableResult
    public func bulkLoad<Items: Sequence>(_ items: Items) throws(FSError) -> VolumeCommitReport
    where Items.Element == (TreeKey, [UInt8]) {
        guard filesystem.tree.isEmpty, filesystem.tree.dirtyNodeCount == 0,
              delta.layers().allSatisfy({ $0.objectCount == 0 }) else {
            throw .invalidArgument("a bulk load needs an empty filesystem tree and no pending operation")
        }
        return try committing(closingOpen: true) { (generation, chain) throws(FSError) in
            var inodes = FileSystemTree.InodeChanges()
            let counted = items.lazy.map { (key, value) -> (TreeKey, [UInt8]) in
                if key.kind == ItemKind.inode.rawValue {
                    inodes.added += 1
                    inodes.highest = max(inodes.highest, key.object)
                }
                return (key, value)
            }
            let loaded = try filesystem.tree.bulkLoad(counted, generation: generation.number)
            return try finishCommit(generation, loaded, inodes: inodes, journal: chain)
        }!
    }
}
