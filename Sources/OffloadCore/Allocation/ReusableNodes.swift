/// Freed tree nodes kept, unpunched, for the nodes of later commits
/// (docs/ARCHITECTURE.md, "Freed nodes reused without a punch").
///
/// A node a commit replaces becomes a pending free of that commit, as every freed block
/// does. Data blocks among the pending frees are punched and retired into the free
/// space, which hands out blocks that read as zeros (but for what a crash left there).
/// A node block need not read as zeros to become a node again, so the nodes the trees
/// free (not the block tree's own) stay pending instead: not punched, not retired, and
/// handed to the next commits' node allocations first (`take`), oldest first. A commit
/// that writes a node on such a block deletes its pending free and records the node run
/// in the same commit, so the block is never free; one that does not leaves it pending.
/// A pending free of generation g names blocks only roots before g use, so one of a
/// generation at most the last durable one the caller punched through
/// (`BlockSpace.durableGeneration`, which is bounded by the oldest reader too) may be
/// written over: neither the durable root, the commit before it (kept for repair) nor
/// any reader uses it.
///
/// Only this memory knows which pending frees are kept: a crash forgets it, and opening
/// punches every pending free (`TreeVolume.init`), so no block that was not punched
/// reaches the free space (the unmount lets them go first, `TreeVolume.close`). Beyond
/// a bound (`limit`) the oldest kept blocks are let go (`evict`): one whose generation
/// was punched through already is punched explicitly (`toPunch`), the others by their
/// generation's punch, as any pending free.
struct ReusableNodes {
    /// Blocks kept, by the generation that freed them, oldest first; each generation's
    /// blocks highest first (so taking pops the lowest: a commit's nodes stay together).
    private var waiting: [(generation: UInt64, blocks: [UInt64])] = []
    /// How many blocks `waiting` holds.
    private(set) var waitingCount = 0
    /// Blocks handed out since the last commit, with the generation of their pending free.
    private(set) var handedOut: [UInt64: UInt64] = [:]
    /// Blocks let go whose generation's punch ran already: the caller punches them
    /// (`TreeVolume.startPunch`), and only after that may they retire. The first
    /// `punching` of them are in the punch in flight.
    private(set) var toPunch: [(generation: UInt64, block: UInt64)] = []
    private(set) var punching = 0

    /// Blocks kept and not yet reused, by every path: for tests and status.
    var count: Int { waitingCount + handedOut.count + toPunch.count }

    /// Keeps `blocks`, freed by the commit of `generation` (newer than every kept one).
    mutating func add(generation: UInt64, _ blocks: [UInt64]) {
        guard !blocks.isEmpty else { return }
        precondition(waiting.last.map { $0.generation < generation } ?? true, "kept nodes are added in generation order")
        waiting.append((generation, blocks.sorted(by: >)))
        waitingCount += blocks.count
    }

    /// A kept block of a generation at most `through`, oldest first, now handed out; nil
    /// when there is none.
    mutating func take(through: UInt64) -> UInt64? {
        guard let first = waiting.first, first.generation <= through, let block = waiting[0].blocks.popLast() else { return nil }
        if waiting[0].blocks.isEmpty { waiting.removeFirst() }
        waitingCount -= 1
        handedOut[block] = first.generation
        return block
    }

    /// Takes back a block `take` handed out and its tree gave back unwritten; false when
    /// the block did not come from here.
    mutating func giveBack(_ block: UInt64) -> Bool {
        guard let generation = handedOut.removeValue(forKey: block) else { return false }
        let at = waiting.firstIndex { $0.generation >= generation } ?? waiting.count
        if at < waiting.count, waiting[at].generation == generation {
            let place = waiting[at].blocks.firstIndex { $0 < block } ?? waiting[at].blocks.count
            waiting[at].blocks.insert(block, at: place)
        } else {
            waiting.insert((generation, [block]), at: at)
        }
        waitingCount += 1
        return true
    }

    /// The blocks handed out that `recorded` holds (the nodes the committed trees wrote):
    /// their pending frees go, their node runs come, in the commit. Others stay handed out.
    func reused(in recorded: (UInt64) -> Bool) -> [(generation: UInt64, block: UInt64)] {
        handedOut.filter { recorded($0.key) }.map { ($0.value, $0.key) }.sorted { $0.block < $1.block }
    }

    /// After a commit that recorded `blocks` as nodes.
    mutating func committed(_ blocks: [(generation: UInt64, block: UInt64)]) {
        for entry in blocks { handedOut[entry.block] = nil }
    }

    /// Every block whose pending free must stay when a commit retires the punched ones:
    /// those kept, handed out, or let go and not yet punched.
    var kept: BlockRanges { Self.ranges(waiting.flatMap(\.blocks) + handedOut.keys + toPunch.map(\.block)) }

    /// The blocks waiting and handed out: the punch of their generation leaves them out.
    var unpunched: BlockRanges { Self.ranges(waiting.flatMap(\.blocks) + handedOut.keys) }

    private static func ranges(_ blocks: [UInt64]) -> BlockRanges {
        var ranges = BlockRanges()
        for range in BlockSpace.ranges(of: blocks.sorted()) { ranges.insert(contentsOf: range) }
        return ranges
    }

    /// Lets the oldest waiting blocks go until at most `limit` wait: those of generations
    /// at most `punchedThrough` join `toPunch`, the others are punched with their
    /// generation. Returns how many went.
    @discardableResult
    mutating func evict(keeping limit: Int, punchedThrough: UInt64) -> Int {
        var evicted = 0
        while waitingCount > limit, let oldest = waiting.first {
            let excess = waitingCount - limit
            let going = oldest.blocks.count <= excess ? oldest.blocks : Array(oldest.blocks.suffix(excess))
            if oldest.generation <= punchedThrough {
                toPunch += going.map { (oldest.generation, $0) }
            }
            if going.count == oldest.blocks.count {
                waiting.removeFirst()
            } else {
                waiting[0].blocks.removeLast(going.count)
            }
            waitingCount -= going.count
            evicted += going.count
        }
        return evicted
    }

    /// The blocks to punch explicitly, now in the punch that starts.
    mutating func startPunch() -> [Range<UInt64>] {
        punching = toPunch.count
        return toPunch.map { $0.block..<$0.block + 1 }
    }

    /// The punch in flight ended: when it succeeded, what it punched may retire.
    mutating func finishPunch(succeeded: Bool) {
        if succeeded { toPunch.removeFirst(punching) }
        punching = 0
    }
}
