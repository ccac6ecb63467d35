#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Synchronization

/// A reader-writer lock whose shared side writes only a counter of the caller's CPU
/// (Linux's `percpu_rw_semaphore`): taking it shared is one atomic add on a cache line
/// other CPUs seldom touch, and a load of a flag they only read, where a
/// `pthread_rwlock_t` makes every shared holder write the lock's one word, which then moves
/// between the CPUs with every request. Taking it alone is slow (it sums every counter,
/// and sleeps until the shared holders it found have left): for what is rare.
///
/// How the two sides meet (a store-load handshake, both in one sequentially consistent
/// order): a shared taker adds one to its counter, then loads `exclusive`; an exclusive
/// taker stores `exclusive`, then sums the counters. Either the taker sees the flag (it
/// takes its count back and waits until the exclusive holder is done) or the exclusive
/// taker's sum sees its count (and waits for it to leave). A shared holder leaving while
/// the flag is set wakes the exclusive taker under `mutex`, which that taker holds from
/// its sum to its wait, so the wake is not lost.
///
/// Writers are preferred, as `ReadWriteLock` prefers them: once an exclusive taker has set
/// the flag, new shared takers wait behind it. So a thread must never take the lock twice,
/// in either mode: a second shared take would wait behind an exclusive taker that waits
/// for the first. Exclusive holders take turns (`exclusiveHolders`).
public final class ShardedReadWriteLock: @unchecked Sendable {
    /// The counters of shared holders, one per CPU, each alone in `counterStride` bytes
    /// (two cache lines, against the adjacent line prefetch) of one allocation aligned to
    /// them: counters of different CPUs must not share a line, or every shared take would
    /// move it again. Raw memory rather than an array of objects: reaching an object
    /// retained it, a write to its header on every take.
    private let counters: UnsafeMutableRawPointer
    private let counterCount: Int
    private static let counterStride = 128
    /// Set while an exclusive holder holds the lock or waits for the shared holders to leave.
    private let exclusive = Atomic<Bool>(false)
    /// Orders the waits: a shared taker's for the exclusive holder to let go, the exclusive
    /// taker's for the shared holders to leave.
    private let mutex = PthreadLock()
    private let changed = PthreadCondition()
    /// Exclusive holders take turns.
    private let exclusiveHolders = PthreadLock()

    /// Counters, one per CPU up to `maximumCounters` (CPUs share them past it).
    public init() {
        counterCount = max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_CONF))), Self.maximumCounters))
        counters = .allocate(byteCount: counterCount * Self.counterStride, alignment: Self.counterStride)
        for index in 0..<counterCount { slot(index).initialize(to: Atomic(0)) }
    }

    deinit {
        for index in 0..<counterCount { _ = slot(index).move() }
        counters.deallocate()
    }

    /// Counter `index`'s atomic.
    private func slot(_ index: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        (counters + index * Self.counterStride).assumingMemoryBound(to: Atomic<Int>.self)
    }

    static let maximumCounters = 64

    /// A shared hold: the counter it added to, which its release takes from (the thread may
    /// run on another CPU by then).
    public struct SharedHold: Sendable {
        let counter: Int
    }

    /// Takes the lock shared; waits while an exclusive holder holds it or waits for it.
    @inlinable
    public func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let hold = lockShared()
        defer { unlockShared(hold) }
        return try body()
    }

    /// Takes the lock alone; waits for the shared holders in flight to leave, and holds
    /// back new ones meanwhile.
    @inlinable
    public func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lockExclusive()
        defer { unlockExclusive() }
        return try body()
    }

    public func lockShared() -> SharedHold {
        while true {
            let counter = Int(offloadfs_current_cpu()) % counterCount
            slot(counter).pointee.add(1, ordering: .sequentiallyConsistent)
            if !exclusive.load(ordering: .sequentiallyConsistent) { return SharedHold(counter: counter) }
            // An exclusive taker came first: its sum may have counted this, so leave as a
            // holder leaves, then wait for it to be done.
            unlockShared(SharedHold(counter: counter))
            mutex.withLock { changed.wait(on: mutex) { !exclusive.load(ordering: .relaxed) } }
        }
    }

    public func unlockShared(_ hold: SharedHold) {
        let left = slot(hold.counter).pointee.subtract(1, ordering: .sequentiallyConsistent)
        assert(left.newValue >= 0, "a shared hold was let go twice")
        if exclusive.load(ordering: .sequentiallyConsistent) {
            mutex.withLock { changed.broadcast() }
        }
    }

    public func lockExclusive() {
        exclusiveHolders.lock()
        exclusive.store(true, ordering: .sequentiallyConsistent)
        mutex.withLock { changed.wait(on: mutex) { sharedHolders == 0 } }
    }

    public func unlockExclusive() {
        mutex.withLock {
            exclusive.store(false, ordering: .sequentiallyConsistent)
            changed.broadcast()
        }
        exclusiveHolders.unlock()
    }

    /// Shared holders now (each counter is never below zero: a hold gives back to the
    /// counter it took from).
    private var sharedHolders: Int {
        (0..<counterCount).reduce(0) { $0 + slot($1).pointee.load(ordering: .sequentiallyConsistent) }
    }

    /// True while an exclusive holder holds the lock or waits for it (tests).
    public var isHeldExclusively: Bool { exclusive.load(ordering: .relaxed) }
}
