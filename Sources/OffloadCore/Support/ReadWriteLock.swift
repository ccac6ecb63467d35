#if canImport(Glibc)
import Glibc
#endif

/// A pthread reader-writer lock: many readers of one file at once, one writer alone.
///
/// `Synchronization.Mutex` has no shared mode, and reads of one file from several FUSE
/// worker threads must not serialise, so this wraps `pthread_rwlock_t`. The lock lives in
/// its own allocation because a pthread lock must never move.
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        let rc = pthread_rwlock_init(lock, nil)
        precondition(rc == 0, "pthread_rwlock_init failed: \(rc)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inline(__always)
    func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let rc = pthread_rwlock_rdlock(lock)
        precondition(rc == 0, "pthread_rwlock_rdlock failed: \(rc)")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    @inline(__always)
    func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let rc = pthread_rwlock_wrlock(lock)
        precondition(rc == 0, "pthread_rwlock_wrlock failed (re-entered?): \(rc)")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
