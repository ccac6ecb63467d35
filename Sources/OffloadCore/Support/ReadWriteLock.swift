#if canImport(Glibc)
import Glibc
#endif

/// A pthread reader-writer lock: many readers of one file at once, one writer alone.
///
/// `Synchronization.Mutex` has no shared mode, and reads of one file from several FUSE
/// worker threads must not serialise, so this wraps `pthread_rwlock_t`. The lock lives in
/// its own allocation because a pthread lock must never move.
///
/// Writers are preferred (`PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP`): glibc's
/// default lets a new reader in while a writer waits, so readers that keep overlapping
/// (several threads reading one file) starve writes for as long as they read. With
/// writer preference a waiting writer blocks new readers, which is why a thread must
/// never take the read lock twice: the second would wait behind the writer that waits
/// for the first. No code path does (every read-locked section is a leaf).
public final class ReadWriteLock: @unchecked Sendable {
    @usableFromInline let lock: UnsafeMutablePointer<pthread_rwlock_t>

    public init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        defer { pthread_rwlockattr_destroy(&attributes) }
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        let rc = pthread_rwlock_init(lock, &attributes)
        precondition(rc == 0, "pthread_rwlock_init failed: \(rc)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inlinable
    public func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let rc = pthread_rwlock_rdlock(lock)
        precondition(rc == 0, "pthread_rwlock_rdlock failed: \(rc)")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    @inlinable
    public func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let rc = pthread_rwlock_wrlock(lock)
        precondition(rc == 0, "pthread_rwlock_wrlock failed (re-entered?): \(rc)")
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
