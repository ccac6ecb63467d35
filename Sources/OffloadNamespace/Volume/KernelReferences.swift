import OffloadCore
import Synchronization

/// What the kernel references (`VolumeNamespace.kernelReferences`): its lookup counts by
/// inode, the inodes among them that lost their last name while referenced (orphans,
/// `VolumeNamespace.state`), and the unlinked inodes whose last reference went, waiting
/// for a frame to drop them. FORGET reads the second to know, without reading the inode's
/// item from the image, whether the last reference it takes away leaves an inode to drop:
/// after `drop_caches` the kernel forgets a whole cache's worth of inodes, and each look
/// at an item the daemon no longer caches was a read from the disk (0.9 preads more for
/// each cold lookup at 1,000,000 files while the FORGETs of the lookups before it went on:
/// docs/BENCHMARKS.md, "Cold lookups").
///
/// The counts and marks are in shards by inode number, each with its own lock: every
/// lookup adds a reference and every FORGET takes some away, and under one lock that was a
/// mutex every lookup in every directory took (issue 11, item 5). What decides on one
/// inode (a FORGET's last reference, an unlink's mark) reads its count and mark in one
/// hold of its shard's lock, as it did of the one lock. The forgotten list has a lock of
/// its own, taken only by FORGETs of unlinked inodes and by those who take the list; its
/// length is mirrored in an atomic, so a change finds it empty without a lock.
final class KernelReferenceTable: Sendable {
    private let shards: [PthreadMutex<KernelReferenceShard>]
    private let forgotten = PthreadMutex<[UInt64]>([])
    /// `forgotten.count`, stored with it under its lock.
    private let forgottenCount = Atomic<Int>(0)

    init() {
        shards = (0..<InodeShards.count).map { _ in PthreadMutex(KernelReferenceShard()) }
    }

    private func shard(_ number: UInt64) -> PthreadMutex<KernelReferenceShard> {
        shards[InodeShards.index(number)]
    }

    /// Hands the kernel one more reference to `number`.
    func reference(_ number: UInt64) {
        shard(number).withLock { $0.counts[number, default: 0] += 1 }
    }

    /// Takes `lookups` references from `number`; when they were its last and it has no
    /// name left, it joins the forgotten list. Returns whether the list then reached a
    /// multiple of `batch`, so the caller writes their drops now (drops whose frame failed
    /// come back, and are tried again `batch` FORGETs later, not at every one).
    func forget(_ number: UInt64, lookups: UInt64, batch: Int) -> Bool {
        guard shard(number).withLock({ $0.release(number, lookups: lookups) }) else { return false }
        return forgotten.withLock { list in
            list.append(number)
            forgottenCount.store(list.count, ordering: .relaxed)
            return list.count % batch == 0
        }
    }

    /// How many inodes the kernel references (each shard counted under its lock in turn):
    /// what the daemon's memory budget counts (`HeapTrim`) and `offloadfs status` shows.
    var referencedCount: Int {
        shards.reduce(0) { total, shard in total + shard.withLock { $0.counts.count } }
    }

    /// Whether any forgotten inode waits for its drop (without a lock: one forgotten on
    /// another thread meanwhile waits for the next frame, as drops do).
    var hasForgotten: Bool { forgottenCount.load(ordering: .relaxed) > 0 }

    /// The forgotten inodes the kernel still references none of, handed to the caller,
    /// which drops them; the list is emptied. One referenced again meanwhile is left out
    /// (its next FORGET brings it back).
    func takeForgotten() -> [UInt64] {
        guard hasForgotten else { return [] }
        let taken = forgotten.withLock { list -> [UInt64] in
            defer {
                list = []
                forgottenCount.store(0, ordering: .relaxed)
            }
            return list
        }
        return taken.filter { number in shard(number).withLock { $0.counts[number] == nil } }
    }

    /// Puts `numbers` (taken, and not dropped after all) back at the front of the
    /// forgotten list, or at its end with `atEnd`.
    func giveBack(_ numbers: [UInt64], atEnd: Bool = false) {
        guard !numbers.isEmpty else { return }
        forgotten.withLock { list in
            list = atEnd ? list + numbers : numbers + list
            forgottenCount.store(list.count, ordering: .relaxed)
        }
    }

    /// Whether the kernel references `number`, which just lost its last name; when it
    /// does, the inode is marked as having none (in the same hold of its shard's lock as
    /// the count is read, so a FORGET that takes the last reference either comes before,
    /// and the caller drops the inode, or after, and finds the mark).
    func keepUnlinked(_ number: UInt64) -> Bool {
        shard(number).withLock { $0.keepUnlinked(number) }
    }

    /// The inodes marked as having no name left while referenced (each shard read under
    /// its lock in turn).
    func unlinkedInodes() -> [UInt64] {
        shards.flatMap { shard in shard.withLock { Array($0.unlinked) } }
    }

    /// Whether the kernel still references `number`.
    func isReferenced(_ number: UInt64) -> Bool {
        shard(number).withLock { $0.counts[number] != nil }
    }

    /// Clears `number`'s mark (dropped, or found with a name after all).
    func clearUnlinked(_ number: UInt64) {
        shard(number).withLock { _ = $0.unlinked.remove(number) }
    }

    /// Everything at once, for tests (each shard read under its lock in turn).
    func withSnapshot<R>(_ body: (KernelReferences) -> R) -> R {
        var all = KernelReferences()
        for shard in shards {
            shard.withLock { part in
                all.counts.merge(part.counts) { first, _ in first }
                all.unlinked.formUnion(part.unlinked)
            }
        }
        all.forgotten = forgotten.withLock { $0 }
        return body(all)
    }
}

/// One shard of `KernelReferenceTable`: the lookup counts and unlinked marks of the inodes
/// whose numbers hash to it.
struct KernelReferenceShard {
    /// References the kernel holds, by inode (absent: none).
    var counts: [UInt64: UInt64] = [:]
    /// Referenced inodes with no name left, kept under an orphan item until the last
    /// reference goes (a superset: an operation that failed after marking one leaves a
    /// mark that the next FORGET clears after looking at the item).
    var unlinked = Set<UInt64>()

    /// Takes `lookups` references from `number`: whether they were its last and it has no
    /// name left, so it is to be dropped.
    mutating func release(_ number: UInt64, lookups: UInt64) -> Bool {
        guard let count = counts[number] else { return false }
        let left = count - min(lookups, count)
        counts[number] = left == 0 ? nil : left
        return left == 0 && unlinked.contains(number)
    }

    mutating func keepUnlinked(_ number: UInt64) -> Bool {
        guard (counts[number] ?? 0) > 0 else { return false }
        unlinked.insert(number)
        return true
    }
}

/// The whole of `KernelReferenceTable` at one time, for tests.
struct KernelReferences {
    var counts: [UInt64: UInt64] = [:]
    var unlinked = Set<UInt64>()
    var forgotten: [UInt64] = []
}
