/// The entries of one directory, with readdir cookies that stay valid while it changes.
///
/// Kernel contract: readdir is called again and again with the `nextOffset` of the last
/// entry the kernel kept, and entries may be added or removed in between (`rm -rf` reads
/// and unlinks at the same time). POSIX allows added or removed entries to appear or not,
/// but an entry that stays must be returned exactly once. So each entry gets a cookie
/// from a per-directory counter that only grows, entries are kept in cookie order, and
/// readdir resumes at the first entry whose cookie is greater than the one passed back.
/// Removing an entry never renumbers the others. Cookies 1 and 2 belong to "." and "..";
/// entries start at 3.
///
/// Cost: lookup by name O(1); insert O(1) amortised; remove O(log n) (binary search for
/// the slot, which becomes a tombstone; tombstones are swept out once they are more than
/// half the slots, so the sweep is amortised O(1)); readdir O(log n + entries returned).
///
/// Locking: guarded by the namespace lock like the inode that owns it.
final class Directory {
    struct Entry: Equatable {
        var inode: InodeNumber
        var kind: FileKind
        let cookie: UInt64
    }

    /// The parent directory, for ".." and for the cycle check of rename. The root is its
    /// own parent. Unchanged when the directory is removed (it is empty then anyway).
    var parent: InodeNumber

    private var entriesByName: [FileName: Entry] = [:]
    /// Slots in increasing cookie order; a removed entry leaves a tombstone (nil name).
    private var slots: [(cookie: UInt64, name: FileName?)] = []
    private var tombstoneCount = 0
    private var nextCookie = Directory.firstEntryCookie

    static let dotCookie: UInt64 = 1
    static let dotDotCookie: UInt64 = 2
    static let firstEntryCookie: UInt64 = 3

    init(parent: InodeNumber) { self.parent = parent }

    var count: Int { entriesByName.count }
    var isEmpty: Bool { entriesByName.isEmpty }

    func entry(named name: FileName) -> Entry? { entriesByName[name] }

    /// Adds a name that is not present yet, after every existing entry.
    func insert(_ name: FileName, inode: InodeNumber, kind: FileKind) {
        precondition(entriesByName[name] == nil, "directory entry inserted twice")
        let cookie = nextCookie
        nextCookie += 1
        entriesByName[name] = Entry(inode: inode, kind: kind, cookie: cookie)
        slots.append((cookie: cookie, name: name))
    }

    /// Points an existing name at another inode, keeping its cookie and so its place in
    /// any listing in progress (rename over an existing name, RENAME_EXCHANGE).
    func replace(_ name: FileName, inode: InodeNumber, kind: FileKind) {
        guard let old = entriesByName[name] else {
            preconditionFailure("replacing a directory entry that does not exist")
        }
        entriesByName[name] = Entry(inode: inode, kind: kind, cookie: old.cookie)
    }

    /// Removes a name; returns its entry, or nil when it was not there.
    @discardableResult
    func remove(_ name: FileName) -> Entry? {
        guard let entry = entriesByName.removeValue(forKey: name) else { return nil }
        let index = firstSlot(after: entry.cookie - 1)
        precondition(index < slots.count && slots[index].cookie == entry.cookie,
                     "directory slot missing for a live entry")
        slots[index].name = nil
        tombstoneCount += 1
        if tombstoneCount > 32 && tombstoneCount * 2 > slots.count {
            slots.removeAll { $0.name == nil }
            tombstoneCount = 0
        }
        return entry
    }

    /// Up to `limit` live entries whose cookies are greater than `cookie`, in order.
    func entries(after cookie: UInt64, limit: Int) -> [(name: FileName, entry: Entry)] {
        var result: [(name: FileName, entry: Entry)] = []
        var index = firstSlot(after: cookie)
        while index < slots.count && result.count < limit {
            if let name = slots[index].name, let entry = entriesByName[name] {
                result.append((name: name, entry: entry))
            }
            index += 1
        }
        return result
    }

    /// Index of the first slot whose cookie is greater than `cookie` (binary search:
    /// slots are sorted because cookies only grow and insertion appends).
    private func firstSlot(after cookie: UInt64) -> Int {
        var low = 0
        var high = slots.count
        while low < high {
            let middle = (low + high) / 2
            if slots[middle].cookie <= cookie { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
