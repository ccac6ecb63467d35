import Synchronization

/// The changes made since the last commit, by generation, and the exact cut between one
/// commit and the next (docs/ARCHITECTURE.md, "One exact cut per commit": jbd2's handles,
/// btrfs's transaction joins).
///
/// An operation takes its object locks, `join`s the open generation, records its changes
/// (and writes its journal frame, tagged with the ticket's generation), and `leave`s. A
/// commit `close`s the open generation (new operations join the next one and are never
/// blocked by the commit), waits until the operations inside the closed one have left
/// (`waitUntilQuiet`), writes exactly its changes into the tree, publishes the new root,
/// and only then `retire`s it. Every answered operation's changes are therefore in exactly
/// one generation: in the committed tree, or in a generation the journal replays.
///
/// Readers take `layers()` (newest first) before they load the committed root and its
/// generation: a layer retired after they took the list is already in any root they load
/// later, and `LayeredFileSystem` passes over the layers that root already holds (laid
/// over a newer root, an older generation's net state would undo later changes).
///
/// Joining and leaving take no lock that every operation shares (jbd2's
/// `start_this_handle`: `j_state_lock` read, `t_updates` incremented): an operation reads
/// the open generation holding `gate` shared, which writes only a counter of its CPU
/// (`ShardedReadWriteLock`), and counts itself in the generation's own atomic
/// (`DeltaGeneration.operationsInside`); it leaves with an atomic decrement, and takes
/// `lock` only when it is the last to leave a closed generation, to wake the commit
/// waiting for it. A close replaces the open generation holding `gate` alone and `lock`,
/// so that no operation is between reading the open generation and counting itself in it.
///
/// Lock order: an operation's object locks, then `gate` (shared: join, the open
/// generation's count and the count of the generations still to commit; alone: close and
/// retire), then this delta's `lock` (the closed list, the
/// layer list, the wait for quiet; held only for a few instructions, never across a
/// change, an allocation of tree nodes or I/O), then a generation's shard locks.
public final class MetadataDelta: @unchecked Sendable {
    // @unchecked: `open` and `closed` are written holding both `gate` alone and `lock`,
    // and read holding either.
    private let gate = ShardedReadWriteLock()
    private let lock = PthreadLock()
    private let quiet = PthreadCondition()
    private var open: DeltaGeneration {
        didSet { openNumberNow.store(open.number, ordering: .releasing) }
    }
    /// `open.number`, read without the lock (`openNumber`); stored with `open`, under it.
    private let openNumberNow: Atomic<UInt64>
    /// Closed and not yet retired, oldest first.
    private var closed: [DeltaGeneration] = []

    /// A delta over a tree whose last commit was `committedGeneration`. After a crash,
    /// mount replays every journal frame newer than that commit into the open generation,
    /// which must then be numbered as the newest frame replayed (`replayedThrough`): the
    /// commit of that generation covers those frames, and the journal is truncated up to
    /// it; numbered lower, frames of the higher numbers would outlive their commit and be
    /// replayed again after a later crash, over newer changes.
    public init(committedGeneration: UInt64, replayedThrough: UInt64 = 0) {
        let first = max(committedGeneration + 1, replayedThrough)
        openNumberNow = Atomic(first)
        open = DeltaGeneration(number: first)
    }

    /// The open generation's number: an operation joining now would join it, and one that
    /// joined before is in it or in an older one.
    public var openNumber: UInt64 { openNumberNow.load(ordering: .acquiring) }

    /// The open generation's objects and item bytes (`DeltaGeneration.commitLoad`, its
    /// scattered leaves not capped): what the volume's budget reads after each operation.
    public var openLoad: CommitLoad { gate.withReadLock { open.commitLoad } }

    /// What the generations numbered above `generation` changed, the open one and the
    /// closed ones not yet retired: what the commits still to come write
    /// (`TreeVolume.blocksHeldForCommits`; a commit whose block space settled is past
    /// `generation` there, its nodes taken already).
    /// Holding `gate` shared, as a join does: every change on an image under about 938 MiB
    /// of room reads it in its budget (`TreeVolume.roomUse`), where the delta's mutex was
    /// a lock every change took (docs/ARCHITECTURE.md, "Shared locks off the request path").
    /// Each generation's scattered leaves are capped at what the tree can have at its
    /// commit (`CommitLoad.cappingScatteredLeaves`), then the generations are added up.
    public func commitLoad(after generation: UInt64) -> CommitLoad {
        gate.withReadLock {
            let bound = committedLeafBound.load(ordering: .relaxed)
            let counted = open.number > generation
            // The items of every generation waiting: leaves the earlier commits may add
            // before the later ones run.
            var itemBytes = counted ? open.commitLoad.itemBytes : 0
            for closed in closed where closed.number > generation { itemBytes += closed.commitLoad.itemBytes }
            var total = CommitLoad()
            if counted { total = open.commitLoad.cappingScatteredLeaves(leafBound: bound, waitingItemBytes: itemBytes) }
            for closed in closed where closed.number > generation {
                total = total + closed.commitLoad.cappingScatteredLeaves(leafBound: bound, waitingItemBytes: itemBytes)
            }
            return total
        }
    }

    /// The most leaves the committed filesystem tree can have (`CommitLoad.leaves(belowLevel:)`
    /// of its root's level): set by the volume at its opening and at each commit it
    /// publishes (`noteCommittedTree(level:)`).
    private let committedLeafBound = Atomic<Int>(.max)

    /// Notes the level of the committed filesystem tree's root (nil: an empty tree).
    public func noteCommittedTree(level: UInt8?) {
        committedLeafBound.store(level.map(CommitLoad.leaves(belowLevel:)) ?? 1, ordering: .relaxed)
    }

    /// An operation inside a generation; `leave` it exactly once.
    public struct Ticket: Sendable {
        public let generation: DeltaGeneration
    }

    /// Enters the open generation.
    public func join() -> Ticket {
        gate.withReadLock {
            let generation = open
            generation.operationsInside.add(1, ordering: .sequentiallyConsistent)
            return Ticket(generation: generation)
        }
    }

    /// Records one operation's changes into the generation it joined (open, or closed
    /// while it was inside). `born`: the inode numbers the operation gave out
    /// (`DeltaGeneration.record`).
    public func record(_ changes: [JournalChange], born: Range<UInt64> = 0..<0, in ticket: Ticket) throws(FSError) {
        try ticket.generation.record(changes, born: born)
    }

    public func leave(_ ticket: Ticket) {
        let generation = ticket.generation
        let left = generation.operationsInside.subtract(1, ordering: .sequentiallyConsistent).newValue
        precondition(left >= 0, "left generation \(generation.number) twice")
        // The store-load handshake with `waitUntilQuiet`: it sets `isClosed` (under `gate`
        // alone), then reads the count holding `lock`; this takes the count down, then reads
        // `isClosed`. Either the waiter sees zero, or this sees the flag and wakes it under
        // `lock`, which the waiter holds from its read to its wait.
        if left == 0, generation.isClosed.load(ordering: .sequentiallyConsistent) {
            lock.withLock { quiet.broadcast() }
        }
    }

    /// Closes the open generation to new joins and returns it; the next one opens.
    public func close() -> DeltaGeneration {
        gate.withWriteLock {
            lock.withLock {
                let closing = open
                closeOpen()
                return closing
            }
        }
    }

    /// Moves the open generation to the closed list and opens the next. Caller holds `gate`
    /// alone and `lock`.
    private func closeOpen() {
        let closing = open
        closing.isClosed.store(true, ordering: .sequentiallyConsistent)
        closed.append(closing)
        open = DeltaGeneration(number: closing.number + 1)
    }

    /// True when a generation is closed and not yet retired.
    public var hasClosedGeneration: Bool { lock.withLock { !closed.isEmpty } }

    /// The generation the next commit writes: the oldest closed one (the open one is
    /// closed first when none is), once every operation inside it has left.
    public func nextToCommit() -> DeltaGeneration {
        let generation = lock.withLock { closed.first }
            ?? gate.withWriteLock {
                lock.withLock {
                    // Closed by another caller meanwhile: that one is next.
                    if closed.isEmpty { closeOpen() }
                    return closed[0]
                }
            }
        waitUntilQuiet(generation)
        return generation
    }

    /// Waits until every operation that joined `generation` has left. Never blocks new
    /// operations: they join a later generation.
    public func waitUntilQuiet(_ generation: DeltaGeneration) {
        lock.withLock {
            precondition(closed.contains { $0 === generation }, "waiting for a generation that is not closed")
            quiet.wait(on: lock) { generation.operationsInside.load(ordering: .sequentiallyConsistent) == 0 }
        }
    }

    /// Drops `generation`, the oldest closed one, once the root that holds it is published.
    /// Holding `gate` alone too, since `commitLoad(after:)` reads the closed list holding
    /// it shared (once a commit).
    public func retire(_ generation: DeltaGeneration) {
        gate.withWriteLock {
            lock.withLock {
                precondition(closed.first === generation, "generations retire oldest first")
                precondition(generation.operationsInside.load(ordering: .relaxed) == 0,
                             "retiring a generation with operations inside")
                closed.removeFirst()
            }
        }
    }

    /// The generations a reader looks in before the committed tree, newest first.
    public func layers() -> [DeltaGeneration] {
        lock.withLock { [open] + closed.reversed() }
    }
}
