import CLinuxShims
import OffloadCore

/// When the maintenance gives the heap's free memory back to the kernel (glibc's
/// `malloc_trim`, which frees the pages of free chunks anywhere in the arenas; glibc by
/// itself gives back only the top of a heap). Freed memory otherwise stays resident for
/// the next allocations: the RAM bytes a commit placed in the image (20,000 files of
/// 3,000 bytes: 40 MiB), a retired generation's changes, the inodes the kernel forgot.
/// Under a burst that frees more than it allocates again, the daemon stayed 35-45 MiB
/// above its budget until the burst ended (docs/ARCHITECTURE.md, "The heap given back
/// under load").
///
/// - At rest, after the commit that ends a chain of settling commits: everything, and the
///   pages of the node cache's free slots.
/// - Under load, after a commit, when the daemon's anonymous memory is over its budget
///   (`budget`) and either the last trim gave back at least `growthBytes` or the memory
///   grew `growthBytes` since: a trim that finds the memory in use is not tried again
///   until it grows. (What a trim gave back is the figure before less the figure after,
///   while requests go on allocating: a trim counted futile waits for growth measured
///   from its own figure.) The trim holds each arena's lock while it walks the arena's
///   free chunks and gives back their pages: 5-13 ms for 23-58 MiB in one burst's trims
///   (docs/ARCHITECTURE.md, "The heap given back under load").
///
/// - On a tick with no commit (`withoutCommit`), when the heap's free bytes grew at least
///   `growthBytes` past their lowest since the last trim (or the memory grew that much
///   since it, with that much free) and the daemon is at rest or over its budget: memory
///   freed with no
///   change to commit (files closed and their extent lists unloaded, inodes the kernel
///   forgot after `drop_caches`) was never given back before, since every trim followed a
///   commit (a hunt, thirty-sixth session: 206 MiB kept after closing a file of a million
///   RAM pieces, until some unrelated change was committed).
///
/// Used by the maintenance thread alone (its tick), behind a lock all the same.
final class HeapTrim: Sendable {
    static let growthBytes: UInt64 = 8 << 20

    /// The daemon's memory budget, issue 11's figure: 64 MiB, 256 bytes an inode the
    /// kernel references (`inodes`: those the daemon keeps), and the file bytes held in RAM
    /// (`--memory-limit`).
    static func budget(inodes: UInt64, heldBytes: Int) -> UInt64 {
        (64 << 20) + 256 * inodes + UInt64(max(0, heldBytes))
    }

    /// The anonymous memory after the last trim, and what that trim gave back.
    private let last = PthreadMutex<(after: UInt64, released: UInt64)>((0, growthBytes))
    /// The heap's free bytes after the last trim, lowered to every lower reading since: a
    /// trim keeps the pages it gives back counted free (`mallinfo2`), so what a tick with
    /// no commit looks for is free memory grown past that mark.
    private let lowestFree = PthreadMutex<UInt64>(0)
    /// The namespace's holdings at the last tick with no commit that looked
    /// (`withoutCommit`), and whether the next tick looks again though they stay the same.
    private let lastHoldings = PthreadMutex<(holdings: (inodes: Int, handles: Int), looksAgain: Bool)?>(nil)

    struct Trim {
        var seconds: Double
        var releasedBytes: UInt64
    }

    /// Trims when due (`isDue`) and says what it took and gave back; nil when none was.
    /// `nodeCache`'s free slots go too at rest.
    func afterCommit(atRest: Bool, budget: UInt64, nodeCache: NodeReadCache?) -> Trim? {
        if atRest { nodeCache?.releaseFreeSlots() }
        guard let before = ProcessMemory.anonymousResidentBytes() else {
            if atRest { _ = offloadfs_release_free_memory() }
            return nil
        }
        let due = last.withLock { last in
            Self.isDue(atRest: atRest, anonymous: before, budget: budget, lastAfter: last.after, lastReleased: last.released)
        }
        guard due else { return nil }
        return trim(from: before)
    }

    /// Trims on a tick that committed nothing, when due (`isDueWithoutCommit`); nil when
    /// not. Measures the heap's free bytes (`offloadfs_heap_free_bytes`), which the trim
    /// after a commit does not need (a commit frees what it placed and wrote), only at rest
    /// or over the budget, and only when `holdings` (what the namespace keeps for the
    /// kernel: inodes referenced, handles open) changed since the last look, or on the
    /// tick after one that saw them change: a file's memory may go after its handle (a
    /// last close's file is unloaded by the commit that holds its changes, a kernel's
    /// RELEASE ends after the tick that saw the handle go), and a hunt's eleven files of
    /// 200,000 extents closed at once left 20-30 MiB free in the heap, resident, after the
    /// one look their closes caused. Measuring walks
    /// every free chunk under its arena's lock, 120 ms for 400,000 of them (measured on
    /// this machine), which would stall allocations under load and cost an idle daemon a
    /// walk every tick.
    func withoutCommit(atRest: Bool, budget: UInt64, holdings: (inodes: Int, handles: Int)) -> Trim? {
        guard let before = ProcessMemory.anonymousResidentBytes(), atRest || before > budget else { return nil }
        let looks = lastHoldings.withLock { last -> Bool in
            let changed = last.map { $0.holdings != holdings } ?? true
            let looks = changed || last?.looksAgain == true
            last = (holdings, changed)
            return looks
        }
        guard looks else { return nil }
        let free = UInt64(offloadfs_heap_free_bytes())
        let lastAfter = last.withLock { $0.after }
        let due = lowestFree.withLock { lowest in
            lowest = min(lowest, free)
            return Self.isDueWithoutCommit(atRest: atRest, anonymous: before, budget: budget, freeInHeap: free, lowestFree: lowest,
                                           lastAfter: lastAfter)
        }
        guard due else { return nil }
        return trim(from: before)
    }

    /// Trims now, `before` being the anonymous memory before, and notes what it left.
    private func trim(from before: UInt64) -> Trim {
        let started = MonotonicClock.nanoseconds()
        _ = offloadfs_release_free_memory()
        let seconds = Double(MonotonicClock.nanoseconds() &- started) / 1e9
        let after = ProcessMemory.anonymousResidentBytes() ?? before
        let released = before > after ? before - after : 0
        last.withLock { $0 = (after, released) }
        lowestFree.withLock { $0 = UInt64(offloadfs_heap_free_bytes()) }
        return Trim(seconds: seconds, releasedBytes: released)
    }

    /// At rest or over `budget`, when the heap's free bytes have grown `growthBytes` past
    /// their lowest seen since the last trim, or when the anonymous memory has grown that
    /// much since the last trim left it and the heap holds that much free (the chunks that
    /// trim gave back were used and freed again between two looks).
    static func isDueWithoutCommit(atRest: Bool, anonymous: UInt64, budget: UInt64, freeInHeap: UInt64,
                                   lowestFree: UInt64, lastAfter: UInt64) -> Bool {
        guard atRest || anonymous > budget else { return false }
        return freeInHeap >= lowestFree + growthBytes || (anonymous >= lastAfter + growthBytes && freeInHeap >= growthBytes)
    }

    /// At rest always; under load when `anonymous` is over `budget` and the last trim
    /// gave back `growthBytes` or more, or the memory grew that much since it.
    static func isDue(atRest: Bool, anonymous: UInt64, budget: UInt64, lastAfter: UInt64, lastReleased: UInt64) -> Bool {
        atRest || (anonymous > budget && (lastReleased >= growthBytes || anonymous >= lastAfter + growthBytes))
    }
}
