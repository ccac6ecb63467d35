import OffloadCore

/// The locks that make an O_APPEND write's "find the end, write there" one step between
/// appenders to the same file (POSIX): a fixed table of 64, the file's inode number
/// choosing one (`InodeShards`' hashing), instead of a lock in every cached file. A lock
/// of its own cost each open file about 80 bytes of the daemon (a `PthreadLock` object
/// and its separately allocated mutex) for a path that only O_APPEND writes without the
/// writeback cache take; two files' appends that share a lock wait for each other, never
/// for anything else (the lock is a leaf but for the file's own write lock, taken inside
/// it: `FileDataRules.write`).
enum AppendLocks {
    private static let locks = (0..<InodeShards.count).map { _ in PthreadLock() }

    /// The lock of the appends of inode `number` (format 1: of the file object at that address).
    static func lock(for number: UInt64) -> PthreadLock {
        locks[InodeShards.index(number)]
    }
}
