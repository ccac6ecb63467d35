/// The free runs of the groups an allocator has allocated in lately, at most `capacity`
/// groups: the least recently used one is dropped to load another, and loaded again from
/// the block tree when needed. So the allocator's memory is bounded by the number of
/// groups it keeps (each at most a group's runs), whatever the image's size.
final class LoadedBlockGroups {
    let capacity: Int
    private var groups: [UInt64: (free: FreeSpaceMap, lastUse: UInt64)] = [:]
    private var clock: UInt64 = 0
    /// Groups loaded (read from the block tree) so far: tests see eviction work.
    private(set) var loads = 0

    init(capacity: Int) {
        precondition(capacity >= 1)
        self.capacity = capacity
    }

    var count: Int { groups.count }

    /// The free runs of `group` if it is loaded, marked as just used.
    func free(_ group: UInt64) -> FreeSpaceMap? {
        guard let entry = groups[group] else { return nil }
        clock += 1
        groups[group] = (entry.free, clock)
        return entry.free
    }

    /// Keeps `free` as the free runs of `group`, dropping the least recently used group
    /// when full.
    func add(_ group: UInt64, _ free: FreeSpaceMap) {
        if groups[group] == nil, groups.count >= capacity,
           let oldest = groups.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            groups[oldest] = nil
        }
        clock += 1
        loads += 1
        groups[group] = (free, clock)
    }

    /// Forgets every group (they are read again when needed).
    func removeAll() { groups.removeAll() }
}
