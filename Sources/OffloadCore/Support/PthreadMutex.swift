#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutual-exclusion lock owning the value it guards, over `pthread_mutex_t`.
///
/// Why not `Synchronization.Mutex`: on Linux it waits with raw futex calls inside the
/// (uninstrumented) standard library, so ThreadSanitizer cannot see that it orders
/// memory and reports every access it guards as a race; a five-line probe with
/// `Mutex<Int>` shows it. TSan intercepts pthread calls, so with this lock a
/// `swift test --sanitize=thread` run checks the namespace and the allocator for real. The interface is
/// `Mutex.withLock`'s (`inout sending` in, `sending` out), so callers get the same
/// compile-time region checks either way.
///
/// A lock that guards a section of code and no value is a `PthreadLock`, not a
/// `PthreadMutex<Void>` (see there why).
public final class PthreadMutex<Value: ~Copyable>: @unchecked Sendable {
    // @unchecked: `value` is only touched between lock and unlock.
    @usableFromInline var value: Value
    @usableFromInline let lock = PthreadLock()

    public init(_ value: consuming sending Value) {
        self.value = value
    }

    /// Runs `body` with the lock held. Keep `body` short and free of file I/O: everyone
    /// else waits on this lock. Inlinable, so callers in other modules get it specialized
    /// rather than through generic metadata.
    @inlinable
    public func withLock<Result, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// A mutual-exclusion lock over `pthread_mutex_t` that guards a section of code (one
/// reclaim, one checkpoint, one append at a time) rather than a value.
///
/// Why not `PthreadMutex<Void>`: ThreadSanitizer instruments the `inout` access that its
/// `withLock` makes to the empty value as a write at the object's first word, which any
/// other call on the same lock reads (the class's type metadata), so two threads taking
/// the lock in turn are reported as a race that is not there. `scripts/tsan` showed it
/// with fsync and the maintenance timer reclaiming at once (`LockTests` reproduces it).
///
/// The pthread mutex lives in its own allocation because a pthread lock must never move.
public final class PthreadLock: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the lock held (inlinable, as `PthreadMutex.withLock`).
    @inlinable
    public func withLock<Result, E: Error>(_ body: () throws(E) -> Result) throws(E) -> Result {
        lock()
        defer { unlock() }
        return try body()
    }

    @inlinable
    func lock() {
        let rc = pthread_mutex_lock(mutex)
        precondition(rc == 0, "pthread_mutex_lock failed (re-entered?): \(rc)")
    }

    @inlinable
    func unlock() {
        pthread_mutex_unlock(mutex)
    }
}
