/// What the kernel references (`VolumeNamespace.kernelReferences`, under its own lock):
/// its lookup counts by inode, and the inodes among them that lost their last name while
/// referenced (orphans, `VolumeNamespace.state`). FORGET reads the second to know, without
/// reading the inode's item from the image, whether the last reference it takes away
/// leaves an inode to drop: after `drop_caches` the kernel forgets a whole cache's worth of
/// inodes, and each look at an item the daemon no longer caches was a read from the disk
/// (0.9 preads more for each cold lookup at 1,000,000 files while the FORGETs of the
/// lookups before it went on: docs/BENCHMARKS.md, "Cold lookups").
struct KernelReferences {
    /// References the kernel holds, by inode (absent: none).
    var counts: [UInt64: UInt64] = [:]
    /// Referenced inodes with no name left, kept under an orphan item until the last
    /// reference goes (a superset: an operation that failed after marking one leaves a
    /// mark that the next FORGET clears after looking at the item).
    var unlinked = Set<UInt64>()
    /// Unlinked inodes whose last reference went, in FORGET's order: each is dropped in
    /// the next frame an operation writes (`VolumeNamespace.dropForgotten`), not in a
    /// frame of its own.
    var forgotten: [UInt64] = []

    /// Takes `lookups` references from `number`: whether they were its last and it has no
    /// name left, so it is to be dropped.
    mutating func release(_ number: UInt64, lookups: UInt64) -> Bool {
        guard let count = counts[number] else { return false }
        let left = count - min(lookups, count)
        counts[number] = left == 0 ? nil : left
        return left == 0 && unlinked.contains(number)
    }

    /// `release`, and an inode to drop joins `forgotten`: whether `forgotten` reached a
    /// multiple of `batch`, so the caller writes their drops now (drops whose frame
    /// failed come back, and are tried again `batch` FORGETs later, not at every one).
    mutating func forget(_ number: UInt64, lookups: UInt64, batch: Int) -> Bool {
        guard release(number, lookups: lookups) else { return false }
        forgotten.append(number)
        return forgotten.count % batch == 0
    }

    /// The forgotten inodes the kernel still references none of, handed to the caller,
    /// which drops them; the list is emptied.
    mutating func takeForgotten() -> [UInt64] {
        defer { forgotten = [] }
        return forgotten.filter { counts[$0] == nil }
    }

    /// Whether the kernel references `number`, which just lost its last name; when it
    /// does, the inode is marked as having none (in the same hold of the lock as the
    /// count is read, so a FORGET that takes the last reference either comes before, and
    /// the caller drops the inode, or after, and finds the mark).
    mutating func keepUnlinked(_ number: UInt64) -> Bool {
        guard (counts[number] ?? 0) > 0 else { return false }
        unlinked.insert(number)
        return true
    }
}
