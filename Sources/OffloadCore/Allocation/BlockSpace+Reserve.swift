/// The metadata reserve (docs/ARCHITECTURE.md, "The metadata reserve"): blocks the block
/// space holds back from file data, so that a filesystem whose files filled it can still
/// journal what frees space (rm, truncate) and commit it. Without it, the commit after a
/// full disk had no room for its nodes, failed, and left the image read-only.
///
/// The reserve is a set of blocks taken out of the free space like any allocation (in
/// `taken`, so `freeBlockCount` does not count them: df shows them as used, as ext4's
/// reserved blocks) and recorded nowhere: a crash leaves them free. Allocations that find
/// the free space empty take from it: file data never, journal segments its first
/// quarter (so the commit that follows always has three quarters: the tree items it
/// writes take about twice the journal bytes that state them, leaves being half to full,
/// plus its new journal chain and the block tree's nodes), a commit all of it. After each
/// commit the volume refills it from the free space.
public enum ReserveAccess: Sendable, Equatable {
    /// File data: never.
    case none
    /// Journal segments between commits: down to three quarters of the target.
    case journal
    /// A commit: all of it.
    case commit
}

extension BlockSpace {
    /// Blocks in the reserve now.
    public var reserveBlocks: UInt64 { reserve.ranges.reduce(0) { $0 + UInt64($1.count) } }

    /// Up to `wanted` contiguous blocks out of the reserve, as far as `access` allows
    /// (nil: none). They stay in `taken`: the caller records them or gives them back.
    func takeFromReserve(_ wanted: UInt64, _ access: ReserveAccess) -> Range<UInt64>? {
        let floor: UInt64
        switch access {
        case .none: return nil
        case .journal: floor = reserveTarget - reserveTarget / 4
        case .commit: floor = 0
        }
        let left = reserveBlocks
        guard left > floor, let first = reserve.ranges.first else { return nil }
        let count = min(wanted, UInt64(first.count), left - floor)
        let blocks = first.lowerBound..<first.lowerBound + count
        reserve.remove(contentsOf: blocks)
        return blocks
    }

    /// Takes blocks from the free space into the reserve until it holds `reserveTarget`
    /// (fewer when the free space has fewer). Errors reading the free space leave it short.
    public func refillReserve() {
        while reserveBlocks < reserveTarget {
            guard let blocks = try? take(reserveTarget - reserveBlocks, reserve: ReserveAccess.none) else { return }
            reserve.insert(contentsOf: blocks)
        }
    }

    /// Sets the reserve's target; the blocks past it go back to the free space at once,
    /// and the next commit refills up to it.
    public func setReserveTarget(_ blocks: UInt64) {
        reserveTarget = blocks
        while reserveBlocks > reserveTarget, let last = reserve.ranges.last {
            let excess = min(UInt64(last.count), reserveBlocks - reserveTarget)
            let blocks = last.upperBound - excess..<last.upperBound
            reserve.remove(contentsOf: blocks)
            unprepare(blocks)
            giveBack(blocks)
        }
    }
}
