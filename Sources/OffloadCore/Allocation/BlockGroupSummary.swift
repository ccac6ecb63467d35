/// The free space of one group of blocks, as the block tree keeps it (docs/FORMAT.md,
/// "Block tree ... group summaries"): how many blocks of the group are free and the
/// longest run of free ones, so that an allocator picks a group that can serve a request
/// without reading the group's runs, and mount reads nothing per group.
///
/// A block is free when no run holds it and no pending free names it: a block freed by a
/// generation stays used here until its pending item is deleted (the reuse rule:
/// docs/ARCHITECTURE.md, "Reuse is counted in commits"), so a summary never promises a
/// block that may not be handed out yet. Every block of the group's range counts, the
/// image's header blocks and blocks past its capacity included: the summary is a function
/// of the items alone, not of the capacity (which may grow), and the allocator clips.
///
/// Key (2^63 + 2^62 + group, `kind`, 0), after every run and every pending free. Value
/// (8 bytes): free blocks u32, largest free run u32. A group with no item is entirely
/// free (an empty image has no summary items; a group whose last used block is freed for
/// good loses its item), so the number of items follows the groups in use, not the image.
public struct BlockGroupSummary: Hashable, Sendable, CustomStringConvertible {
    public var freeBlocks: UInt32
    public var largestFreeRun: UInt32

    public init(freeBlocks: UInt32, largestFreeRun: UInt32) {
        self.freeBlocks = freeBlocks
        self.largestFreeRun = largestFreeRun
    }

    public var description: String { "\(freeBlocks) free, largest run \(largestFreeRun)" }

    /// 1 GiB of 4 KiB blocks: the format's group (ext4's flex groups and XFS's allocation
    /// groups are of this order; a group's runs are what an allocation there reads).
    public static let formatBlocksPerGroup: UInt64 = 262_144
    public static let kind: UInt8 = 3
    public static let keyBase: UInt64 = (1 << 63) + (1 << 62)
    static let encodedSize = 8

    /// A group with nothing used.
    public static func allFree(blocksPerGroup: UInt64) -> BlockGroupSummary {
        BlockGroupSummary(freeBlocks: UInt32(blocksPerGroup), largestFreeRun: UInt32(blocksPerGroup))
    }

    static func key(group: UInt64) -> TreeKey { TreeKey(object: keyBase + group, kind: kind, offset: 0) }

    /// The summary of `group` (of `blocksPerGroup` blocks) in which `used` (sorted,
    /// disjoint, inside the group) are the used blocks.
    static func of(group: UInt64, blocksPerGroup: UInt64, used: [Range<UInt64>]) -> BlockGroupSummary {
        var cursor = group * blocksPerGroup
        var free: UInt64 = 0, largest: UInt64 = 0
        for range in used + [(group + 1) * blocksPerGroup..<(group + 1) * blocksPerGroup] {
            assert(range.lowerBound >= cursor, "used ranges must be sorted and disjoint")
            let gap = range.lowerBound - cursor
            free += gap
            largest = max(largest, gap)
            cursor = range.upperBound
        }
        return BlockGroupSummary(freeBlocks: UInt32(free), largestFreeRun: UInt32(largest))
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: Self.encodedSize)
        w.u32(freeBlocks); w.u32(largestFreeRun)
        return w.bytes
    }

    /// Decodes an item's value; damage when it cannot be a summary of such a group.
    static func decode(_ key: TreeKey, _ value: UnsafeRawBufferPointer, blocksPerGroup: UInt64) throws(FSError)
        -> (group: UInt64, summary: BlockGroupSummary) {
        var r = ByteReader(value)
        guard key.kind == kind, key.offset == 0, key.object >= keyBase, value.count == encodedSize,
              let free = try? r.u32(), let largest = try? r.u32(),
              largest <= free, UInt64(free) < blocksPerGroup, free == 0 || largest >= 1 else {
            throw .damagedImage("block tree item \(key): not a group summary of a group of \(blocksPerGroup) blocks")
        }
        return (key.object - keyBase, BlockGroupSummary(freeBlocks: free, largestFreeRun: largest))
    }
}
