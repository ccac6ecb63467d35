#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A condition variable over `pthread_cond_t`, used with a `PthreadLock` (pthread calls,
/// so ThreadSanitizer sees the ordering; see `PthreadMutex` for why not the standard
/// library's locks).
public final class PthreadCondition: @unchecked Sendable {
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        let rc = pthread_cond_init(condition, nil)
        precondition(rc == 0, "pthread_cond_init failed: \(rc)")
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Waits until `satisfied` holds; the caller holds `lock` (inside `lock.withLock`).
    public func wait(on lock: PthreadLock, until satisfied: () -> Bool) {
        while !satisfied() { pthread_cond_wait(condition, lock.mutex) }
    }

    /// Wakes every waiter; call with the lock held, after changing what they wait for.
    public func broadcast() { pthread_cond_broadcast(condition) }
}
