import Synchronization

/// The changes of one generation: what every operation that joined it recorded, as net
/// state per object (`ObjectChanges`), in shards with a lock each, so operations on
/// different objects do not wait for one another (docs/ARCHITECTURE.md, "Requests, the
/// delta and the commit").
///
/// A generation is open while operations join it; closed, it takes no new joins, and
/// once the operations inside it have left, nothing changes it any more and the commit
/// reads it without contention. Readers read it throughout, open or closed.
public final class DeltaGeneration: @unchecked Sendable {
    // @unchecked: every shard's state is reached only through its PthreadMutex.
    public let number: UInt64
    static let shardCount = 16
    private let shards: [PthreadMutex<[UInt64: ObjectChanges]>]
    private let orphanChanges = PthreadMutex<[UInt64: DeltaValue<OrphanItem>]>([:])
    /// Set (under `orphanChanges`' lock) once an orphan change is recorded: until then
    /// `orphanChange(of:)` answers without that lock, which every change of an object new
    /// to the generation asked (a lock every change took: docs/ARCHITECTURE.md, "Shared
    /// locks off the request path"). A change of one inode and a read after its answer
    /// are ordered with the record by the caller's locks or the reply, as the shards are.
    private let hasOrphanChanges = Atomic<Bool>(false)
    /// Objects changed so far: read by every operation's budget check, so an atomic.
    private let changedObjects = Atomic<Int>(0)
    /// Bytes of the items changed so far (`CommitLoad.itemBytes`), and leaves their keys
    /// may land in (`CommitLoad.scatteredLeaves`, not capped here): added to only by
    /// changes that add something (`ObjectChanges.record`: a name of an existing child,
    /// an xattr, an extent, a symlink's target), not by attributes or a create's name.
    private let changedItemBytes = Atomic<Int>(0)
    private let changedScatteredLeaves = Atomic<Int>(0)
    /// Operations inside this generation (`MetadataDelta.join` to `leave`): an atomic, as
    /// jbd2's `t_updates`, so that joining takes no lock every operation shares.
    let operationsInside = Atomic<Int>(0)
    /// Set once `MetadataDelta` closed this generation to new joins; from then on, the
    /// last operation to leave wakes the commit waiting for it.
    let isClosed = Atomic<Bool>(false)
    /// Debug builds only (filled inside `assert`): the inodes made and dropped here, which
    /// left the generation, so that a later change to one traps as a change to a dropped
    /// inode is refused (`record`).
    private let vanishedInDebugBuilds = PthreadMutex(Set<UInt64>())

    init(number: UInt64) {
        self.number = number
        shards = (0..<Self.shardCount).map { _ in PthreadMutex([:]) }
    }

    private func shard(_ object: UInt64) -> PthreadMutex<[UInt64: ObjectChanges]> {
        shards[Int(truncatingIfNeeded: object % UInt64(Self.shardCount))]
    }

    /// Records one operation's changes, in order: all of them, or (a change to an inode
    /// already dropped, which only a damaged journal states) none. Each change takes its
    /// object's shard alone; the caller's object locks keep other writers of the same
    /// objects out meanwhile, and readers from seeing half an operation. Every operation
    /// of a format 2 namespace comes here, so the shards' values are read and changed in
    /// place (a copy of an `ObjectChanges` retains and releases each of its maps), and the
    /// counter of changed objects is taken once.
    ///
    /// `born`: the inode numbers the operation gave out (a create's). An inode made and
    /// dropped within this generation leaves it altogether, orphan item included, and
    /// stops counting against the dirty cap: no older layer holds anything of it, so
    /// nothing is left for readers to hide or for the commit to delete (10,000 files made
    /// and removed had brought the next commit forward into the copy after them, with no
    /// work for it). Replay passes none: its generations keep such an inode as dropped,
    /// which the commit finds nothing to delete for, and this function's refusal of a
    /// change after a drop stays whole for the journal's frames. Live, the namespace never
    /// changes an inode it dropped (its calls find the inode gone first); debug builds
    /// trap on one that left the generation.
    func record(_ changes: [JournalChange], born: Range<UInt64> = 0..<0) throws(FSError) {
        // By index, not `for change in changes`: the iterator copies each change (its
        // payload's arrays retained and released), and a change is only read here.
        // An operation drops at most a few inodes, so they are kept in an array.
        var droppedHere: [UInt64] = []
        for i in changes.indices {
            assert(!vanishedInDebugBuilds.withLock { $0.contains(changes[i].object) },
                   "a change to inode \(changes[i].object), made and dropped in generation \(number): \(changes[i])")
            if case .orphan = changes[i] { continue }
            let object = changes[i].object
            guard !droppedHere.contains(object), !shard(object).withLock({ Self.isCleared(object, in: $0) }) else {
                throw .damagedImage("a change to inode \(object) after it was dropped: \(changes[i])")
            }
            if case .drop = changes[i] { droppedHere.append(object) }
        }
        var newObjects = 0, itemBytes = 0, scatteredLeaves = 0
        var vanished: [UInt64] = []
        for i in changes.indices {
            let object = changes[i].object
            // An inode counts once, whether the generation changed its items, its orphan
            // item, or both (an unlink while the kernel references the file does both):
            // counted twice, 10,000 creates and unlinks reached the dirty cap (20,000)
            // and committed under the namespace lock in the middle of the unlinks. The two
            // maps are read under their own locks, one after the other: exact because no
            // two operations record changes of one inode at once (the caller's locks).
            if case .orphan(_, let item) = changes[i] {
                // After the drop that took the inode out (an order no caller uses): its
                // orphan item, too, was made in this generation.
                if vanished.contains(object) { continue }
                let isNew = orphanChanges.withLock { orphans in
                    defer {
                        orphans[object] = item.map { .set($0) } ?? .removed
                        hasOrphanChanges.store(true, ordering: .releasing)
                    }
                    return orphans[object] == nil
                } && shard(object).withLock({ $0.index(forKey: object) == nil })
                if isNew { newObjects += 1 }
                continue
            }
            if case .drop = changes[i], shard(object).withLock({ Self.removeIfBorn(object, from: &$0) }) {
                vanished.append(object)
                continue
            }
            // A drop as the first change is no birth, whatever the number.
            let isBirth: Bool
            if case .drop = changes[i] { isBirth = false } else { isBirth = born.contains(object) }
            let childIsNew = changes[i].namesNewChild(born)
            let (first, added, leaves) = shard(object).withLock { objects in
                objects[object, default: ObjectChanges()].record(changes[i], born: isBirth, childIsNew: childIsNew)
            }
            itemBytes += added
            scatteredLeaves += leaves
            if first && orphanChange(of: object) == nil { newObjects += 1 }
        }
        if !vanished.isEmpty {
            // The orphan item it may have had was made here too: nothing older to remove.
            orphanChanges.withLock { orphans in for object in vanished { orphans[object] = nil } }
            assert({ vanishedInDebugBuilds.withLock { $0.formUnion(vanished) }; return true }())
        }
        let net = newObjects - vanished.count
        if net != 0 { changedObjects.wrappingAdd(net, ordering: .relaxed) }
        // A vanished inode's items stay counted: the estimate may only be too high.
        if itemBytes != 0 { changedItemBytes.wrappingAdd(itemBytes, ordering: .relaxed) }
        if scatteredLeaves != 0 { changedScatteredLeaves.wrappingAdd(scatteredLeaves, ordering: .relaxed) }
        assert(changedObjects.load(ordering: .relaxed) >= 0, "a generation counted fewer objects than it removed")
    }

    /// Removes `object`'s changes when it was made in this generation (its drop then
    /// leaves nothing to record); false, changing nothing, otherwise.
    private static func removeIfBorn(_ object: UInt64, from objects: inout [UInt64: ObjectChanges]) -> Bool {
        guard let index = objects.index(forKey: object), objects.values[index].born else { return false }
        objects.remove(at: index)
        return true
    }

    /// What this generation changed about `object`, or nil when nothing.
    /// Whether the generation dropped `object`, read in place (`objects[object]?.cleared`
    /// would copy its changes out first).
    private static func isCleared(_ object: UInt64, in objects: borrowing [UInt64: ObjectChanges]) -> Bool {
        guard let index = objects.index(forKey: object) else { return false }
        return objects.values[index].cleared
    }

    public func changes(of object: UInt64) -> ObjectChanges? {
        shard(object).withLock { $0[object] }
    }

    /// `body` applied to what this generation changed about `object`, read in place under
    /// its shard's lock; nil when it changed nothing. What readers use (`LayeredFileSystem`
    /// asks every generation on every read): `changes(of:)` copies the value out, which
    /// retains and releases each of its maps.
    public func withChanges<T: Sendable>(of object: UInt64, _ body: (borrowing ObjectChanges) -> T) -> T? {
        shard(object).withLock { objects in objects[object].map { body($0) } }
    }

    /// What this generation says of `inode`'s orphan item, or nil when nothing.
    public func orphanChange(of inode: UInt64) -> DeltaValue<OrphanItem>? {
        guard hasOrphanChanges.load(ordering: .acquiring) else { return nil }
        return orphanChanges.withLock { $0[inode] }
    }

    /// Every orphan change (readers merging the orphan list; the commit).
    public func allOrphanChanges() -> [UInt64: DeltaValue<OrphanItem>] {
        orphanChanges.withLock { $0 }
    }

    /// Every object's changes, by object number (the commit, once the generation is quiet).
    public func allChanges() -> [(object: UInt64, changes: ObjectChanges)] {
        shards.flatMap { shard in shard.withLock { objects in objects.map { ($0.key, $0.value) } } }
            .sorted { $0.object < $1.object }
    }

    /// How many objects this generation changed (the commit starts early past a cap): an
    /// inode whose items and orphan item both changed counts once. A counter kept by
    /// `record`, since every operation asks.
    public var objectCount: Int { changedObjects.load(ordering: .relaxed) }

    /// What this generation's commit may write (`CommitLoad`), its scattered leaves not
    /// yet capped at what the tree has (`MetadataDelta.commitLoad(after:)` caps them).
    public var commitLoad: CommitLoad {
        CommitLoad(objects: changedObjects.load(ordering: .relaxed), itemBytes: changedItemBytes.load(ordering: .relaxed),
                   scatteredLeaves: changedScatteredLeaves.load(ordering: .relaxed))
    }
}
