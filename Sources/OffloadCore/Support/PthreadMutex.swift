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
/// The pthread mutex lives in its own allocation because a pthread lock must never move.
public final class PthreadMutex<Value: ~Copyable>: @unchecked Sendable {
    // @unchecked: `value` is only touched between pthread_mutex_lock and unlock.
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(_ value: consuming sending Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the lock held. Keep `body` short and free of file I/O: everyone
    /// else waits on this lock.
    public func withLock<Result, E: Error>(_ body: (inout sending Value) throws(E) -> sending Result) throws(E) -> sending Result {
        let rc = pthread_mutex_lock(mutex)
        precondition(rc == 0, "pthread_mutex_lock failed (re-entered?): \(rc)")
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
