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
/// Lock order: an operation's object locks, then this delta's lock (held only for the
/// few instructions of join, leave, close and the layer list; never across a change, an
/// allocation of tree nodes or I/O), then a generation's shard locks.
public final class MetadataDelta: @unchecked Sendable {
    // @unchecked: `open`, `closed` and `active` are reached only with `lock` held.
    private let lock = PthreadLock()
    private let quiet = PthreadCondition()
    private var open: DeltaGeneration {
        didSet { openNumberNow.store(open.number, ordering: .releasing) }
    }
    /// `open.number`, read without the lock (`openNumber`); stored with `open`, under it.
    private let openNumberNow: Atomic<UInt64>
    /// Closed and not yet retired, oldest first.
    private var closed: [DeltaGeneration] = []
    /// Operations inside each generation that has any.
    private var active: [UInt64: Int] = [:]

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

    /// How many objects the open generation changed (`DeltaGeneration.objectCount`).
    public var openObjectCount: Int { lock.withLock { open }.objectCount }

    /// How many objects the generations numbered above `generation` changed, the open one
    /// and the closed ones not yet retired: what the commits still to come write
    /// (`TreeVolume.blocksHeldForCommits`; a commit whose block space settled is past
    /// `generation` there, its nodes taken already).
    public func objectCount(after generation: UInt64) -> Int {
        lock.lock()
        let openNow = open, closedNow = closed
        lock.unlock()
        var count = openNow.number > generation ? openNow.objectCount : 0
        for closed in closedNow where closed.number > generation { count += closed.objectCount }
        return count
    }

    /// An operation inside a generation; `leave` it exactly once.
    public struct Ticket: Sendable {
        public let generation: DeltaGeneration
    }

    /// Enters the open generation.
    public func join() -> Ticket {
        lock.withLock {
            active[open.number, default: 0] += 1
            return Ticket(generation: open)
        }
    }

    /// Records one operation's changes into the generation it joined (open, or closed
    /// while it was inside). `born`: the inode numbers the operation gave out
    /// (`DeltaGeneration.record`).
    public func record(_ changes: [JournalChange], born: Range<UInt64> = 0..<0, in ticket: Ticket) throws(FSError) {
        try ticket.generation.record(changes, born: born)
    }

    public func leave(_ ticket: Ticket) {
        lock.withLock {
            let number = ticket.generation.number
            guard let count = active[number], count > 0 else { preconditionFailure("left generation \(number) twice") }
            if count == 1 {
                active[number] = nil
                quiet.broadcast()
            } else {
                active[number] = count - 1
            }
        }
    }

    /// Closes the open generation to new joins and returns it; the next one opens.
    public func close() -> DeltaGeneration {
        lock.withLock {
            let closing = open
            closed.append(closing)
            open = DeltaGeneration(number: closing.number + 1)
            return closing
        }
    }

    /// True when a generation is closed and not yet retired.
    public var hasClosedGeneration: Bool { lock.withLock { !closed.isEmpty } }

    /// The generation the next commit writes: the oldest closed one (the open one is
    /// closed first when none is), once every operation inside it has left.
    public func nextToCommit() -> DeltaGeneration {
        let generation = lock.withLock {
            if closed.isEmpty {
                closed.append(open)
                open = DeltaGeneration(number: open.number + 1)
            }
            return closed[0]
        }
        waitUntilQuiet(generation)
        return generation
    }

    /// Waits until every operation that joined `generation` has left. Never blocks new
    /// operations: they join a later generation.
    public func waitUntilQuiet(_ generation: DeltaGeneration) {
        lock.withLock {
            precondition(closed.contains { $0 === generation }, "waiting for a generation that is not closed")
            quiet.wait(on: lock) { active[generation.number] == nil }
        }
    }

    /// Drops `generation`, the oldest closed one, once the root that holds it is published.
    public func retire(_ generation: DeltaGeneration) {
        lock.withLock {
            precondition(closed.first === generation, "generations retire oldest first")
            precondition(active[generation.number] == nil, "retiring a generation with operations inside")
            closed.removeFirst()
        }
    }

    /// The generations a reader looks in before the committed tree, newest first.
    public func layers() -> [DeltaGeneration] {
        lock.withLock { [open] + closed.reversed() }
    }
}
