/// A change to block references made during a generation and applied to the block tree by
/// that generation's commit (btrfs's delayed references): the request path records it
/// in memory, and only the commit reads or changes the tree.
public enum BlockReferenceChange: Hashable, Sendable {
    /// Blocks the allocator handed out, with one reference each.
    case allocate(Range<UInt64>, BlockRun.Use)
    /// One more reference to each block (a clone).
    case retain(Range<UInt64>)
    /// One reference fewer to each block; a block left with none becomes a pending free
    /// of the generation.
    case release(Range<UInt64>)
}
