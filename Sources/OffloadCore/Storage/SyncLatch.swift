import Synchronization

/// The first fdatasync failure of an image, kept for good ("fsyncgate"): after writeback
/// failed the kernel may have dropped the dirty pages and reports the error once, so a
/// later fdatasync succeeds although data is lost; every later sync fails too.
///
/// Syncs run one at a time, with the latch checked and set in the same hold: Linux
/// reports a writeback error once per open file, so of two fdatasyncs at once one may
/// see EIO and the other 0, and the second must not report success. One latch per image:
/// format 2's volume syncs through it before its image is mapped and hands it to the
/// mapping (`ImageMapping`) after, so a failure on either path holds for both.
public final class SyncLatch: Sendable {
    private let failure = PthreadMutex<FSError?>(nil)
    /// An atomic: every change reads it (`TreeVolume.prepareJournalAppend`), where a
    /// mutex was a lock every change took.
    private let finished = Atomic<UInt64>(0)

    public init() {}

    /// Syncs that have returned (failed ones included): writeback write-protects the
    /// mapping's pages it cleans, so pages made writable before the count last moved may
    /// fault again (`TreeVolume.prepareJournalAppend`).
    public var finishedSyncs: UInt64 { finished.load(ordering: .acquiring) }

    /// Runs `flush` (an fdatasync, and what must happen in the same hold) unless a sync
    /// failed before; a failure of `flush` is latched and thrown.
    public func sync<R>(_ flush: () throws(FSError) -> R) throws(FSError) -> R {
        defer { finished.add(1, ordering: .releasing) }
        return try failure.withLock { (failure) throws(FSError) -> R in
            if let failure { throw failure }
            do throws(FSError) {
                return try flush()
            } catch {
                let latched = FSError.io("the image could not be flushed to disk (\(error)); data written before may be lost, so every later fsync fails: unmount, check the disk, and run `offloadfs fsck` on the image")
                failure = latched
                throw latched
            }
        }
    }
}
