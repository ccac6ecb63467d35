/// The metadata reserve (docs/ARCHITECTURE.md, "The metadata reserve"): blocks the block
/// space holds back from file data, so that a filesystem whose files filled it can still
/// journal what frees space (rm, truncate) and commit it. Without it, the commit after a
/// full disk had no room for its nodes, failed, and left the image read-only.
///
/// The reserve is a set of blocks taken out of the free space like any allocation (in
/// `takenBlocks`, so `freeBlockCount` does not count them: df shows them as used, as ext4's
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
    public var reserveBlocks: UInt64 { reserveCount }

    /// Up to `wanted` and at least `least` contiguous blocks out of the reserve, from its
    /// first run that holds `least`, as far as `access` allows (nil: none). They stay in
    /// `takenBlocks`: the caller records them or gives them back.
    func takeFromReserve(_ wanted: UInt64, atLeast least: UInt64 = 1, _ access: ReserveAccess) -> Range<UInt64>? {
        let floor: UInt64
        switch access {
        case .none: return nil
        case .journal: floor = reserveTarget - reserveTarget / 4
        case .commit: floor = 0
        }
        let left = reserveBlocks
        guard left > floor, left - floor >= least,
              let run = reserve.ranges.first(where: { UInt64($0.count) >= least }) else { return nil }
        let count = min(wanted, UInt64(run.count), left - floor)
        let blocks = run.lowerBound..<run.lowerBound + count
        reserve.remove(contentsOf: blocks)
        return blocks
    }

    /// Takes blocks from the free space into the reserve until it holds `reserveTarget`
    /// (fewer when the free space has fewer). Errors reading the free space leave it short.
    /// The highest free blocks first (`takeHighest`), else wherever `take` finds some.
    public func refillReserve() {
        withRoomNotedOnce { () -> Void in
            while reserveBlocks < reserveTarget {
                let wanted = reserveTarget - reserveBlocks
                guard let blocks = (try? takeHighest(wanted)) ?? (try? take(wanted, reserve: ReserveAccess.none)) else { return }
                reserve.insert(contentsOf: blocks)
            }
        }
    }

    /// Groups from the top of the space that `takeHighest` looks in.
    static let highestGroupsTried: UInt64 = 4

    /// Up to `wanted` contiguous free blocks from the top of the space: the highest free
    /// run of the last groups (`highestGroupsTried`; nil when they have none), taken as
    /// `take` takes them (prepared, in `takenBlocks`) but leaving the group data allocations
    /// work in alone. The reserve lies there, above the data, because a capacity may
    /// shrink (`TreeVolume+Capacity.swift`): it is recorded nowhere, so it does not keep
    /// a smaller capacity from any block, but data placed above it would. Taken low, the
    /// first 1 MiB reserve of a 64 MiB image pushed 8 MiB of data up past 9.8 MiB.
    func takeHighest(_ wanted: UInt64) throws(FSError) -> Range<UInt64>? {
        let firstGroup = firstBlock / blocksPerGroup
        var group = (endBlock - 1) / blocksPerGroup
        for _ in 0..<Self.highestGroupsTried {
            // A group with no free block needs no load (blocks past the end count as
            // free in its summary; its load then finds none).
            if try blockTree.groupSummary(group).freeBlocks > 0,
               let blocks = try freeRuns(of: group).takeHighest(upTo: min(wanted, blocksPerGroup)) {
                do {
                    try prepareBlocks?(blocks)
                } catch .noSpace {
                    makeFree(blocks)
                    return nil
                } catch {
                    makeFree(blocks)  // free again, as `take` gives them back
                    throw error
                }
                takenBlocks.insert(contentsOf: blocks)
                freeEstimate -= min(freeEstimate, UInt64(blocks.count))
                return blocks
            }
            guard group > firstGroup else { return nil }
            group -= 1
        }
        return nil
    }

    /// Sets the reserve's target; the blocks past it go back to the free space at once,
    /// and the next commit refills up to it.
    public func setReserveTarget(_ blocks: UInt64) {
        reserveTarget = blocks
        withRoomNotedOnce { () -> Void in
            while reserveBlocks > reserveTarget, let last = reserve.ranges.last {
                let excess = min(UInt64(last.count), reserveBlocks - reserveTarget)
                let blocks = last.upperBound - excess..<last.upperBound
                reserve.remove(contentsOf: blocks)
                unprepare(blocks)
                giveBack(blocks)
            }
        }
    }
}
