/// The commit's side of the files' blocks (caller holds the space lock).
extension VolumeFileBlocks {
    /// The part of `blocks` no commit has recorded yet.
    func unclaimedPart(of blocks: Range<UInt64>) -> BlockRanges {
        unclaimed.restricted(to: blocks)
    }

    /// Records `blocks` (unclaimed) as allocated: the first reference an extent item of
    /// this commit takes on them. From now on they are committed blocks. Those files in
    /// memory may hold in changes this commit does not cover are touched in the open
    /// generation (only the next commit's tree counts those changes): a block held more
    /// or less than once (a clone made since, a release), or one that lost a reference in
    /// a change a power cut could undo (an unshared mark: the holder may not be the one
    /// the commit's extent names). A block held once with no such mark has had the same
    /// single holder since that holder's last durable change, so the tree's count of one
    /// is the truth and the file may go on overwriting it in place. (Touching every
    /// claimed block made every write after a commit copy its block until the next one:
    /// random 4 KiB writes into a file laid out just before ran at a fifth of format 1's
    /// rate.)
    func claim(_ blocks: BlockRanges) {
        var shared = BlockRanges()
        for part in blocks.ranges {
            shared.formUnion(BlockRanges(counts.notExclusive(in: part)))
            shared.formUnion(unshared.blocks(in: part))
        }
        for part in blocks.ranges {
            space.recordData(part)
            counts.forget(part)
        }
        unclaimed.subtract(blocks)
        dead.remove(blocks)
        unshared.remove(blocks)
        touch(shared)
    }

    /// While the commit of `generation` applies its extents' references: unclaimed blocks
    /// let go of while it (or an older one) was open are recorded and released, pending
    /// frees of this commit.
    func releaseDead(through generation: UInt64) {
        let released = unclaimed.intersection(dead.blocks(through: generation))
        dead.removeAll(keys: { $0 <= generation })
        for part in released.ranges {
            space.recordData(part)
            space.release(part)
        }
        unclaimed.subtract(released)
    }

    /// From the end of a commit's settling (caller holds the space lock, and lets go of it
    /// while the commit syncs and writes its slot) to its publication, the block tree is
    /// not asked whether a committed block is exclusive (only blocks verified before
    /// answer). The touched marks cover only reference changes made through this store; a
    /// drop of an inode not in memory, or the rest of a drop carried over, releases
    /// references in the tree alone, and until the slot is durable a power cut can bring
    /// them back.
    func holdExclusivityUntilPublished() {
        settledUnpublished = true
    }

    /// Once the commit of `generation` is durable and published: the touched marks its
    /// block tree now counts are dropped. (Dropped earlier, a commit failing after them
    /// would leave a block counted once by the tree and shared in memory looking
    /// exclusive.)
    func dropTouched(through generation: UInt64) {
        settledUnpublished = false
        // The tree's counts are the new commit's now. A verdict stays true unless the
        // commit raised the block's count above one: a reference gained on a committed
        // block (a clone, a copy) goes through this store and marked it touched, so those
        // blocks are asked again; a block freed and handed out again comes back through
        // `claim`, which marks it touched when more than one reference or an unshared mark
        // holds it, and otherwise has one holder again; a reference lost in the tree alone
        // (the drop of an inode not in memory) only lowers a count, and no file writes a
        // block it does not reference. (An extent split inside a block raises its count
        // without a mark, but every reference is the same file's.)
        // By the smaller side: a drop can touch millions of blocks, the set holds at most
        // `verifiedLimit`.
        let changed = touched.blocks(through: generation)
        if changed.ranges.reduce(0, { $0 + $1.count }) > verifiedExclusive.count {
            verifiedExclusive = verifiedExclusive.filter { !changed.contains($0) }
        } else {
            for range in changed.ranges {
                for block in range { verifiedExclusive.remove(block) }
            }
        }
        touched.removeAll(keys: { $0 <= generation })
    }
}
