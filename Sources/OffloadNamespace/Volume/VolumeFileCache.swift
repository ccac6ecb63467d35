import OffloadCore

/// The regular files a format 2 namespace holds (`VolumeCachedFile`, by inode) and its
/// open file handles, in shards by inode number, each with its own lock: every request on
/// an open file looks its handle and file up in the file's shard, so reads and writes of
/// different files take no lock they share (issue 11, item 5: one reader-writer lock
/// before, whose shared side wrote the lock's one word on every read and write), and the
/// changes that share the namespace lock (creates, `VolumeNamespace.changingNames`; opens
/// and closes, `changingInodes`) add to their file's shard. A handle lives in the shard of
/// the inode it was given out for (every request names both). Leaf locks: nothing is
/// taken while one is held, and a cached file's own lock is never taken under one
/// (`evictIfDone` unloads a file after letting go of it).
///
/// The closed files whose changes wait for a commit (`Sweep`) have a lock of their own,
/// taken inside a shard's hold by the last close that notes a changed file or evicts it
/// (and by a drop), and alone by the sweep after a commit: a file noted after a sweep
/// took the set waits for the next commit's sweep. Order: a shard's lock, then the
/// sweep's.
final class VolumeFileCache: @unchecked Sendable {
    // @unchecked: each shard's state is reached only under its lock.
    struct Shard {
        var files: [UInt64: VolumeCachedFile] = [:]
        /// Handles open on this shard's files, by handle number.
        var handles: [UInt64: VolumeFileHandle] = [:]
    }

    struct Sweep {
        /// Closed cached files whose changes wait for a commit, and the commit the last
        /// sweep of them saw (`VolumeNamespace.evictCommittedFiles`).
        var awaitingCommit = Set<UInt64>()
        var lastEvictedAt: UInt64 = 0
    }

    /// A shard's state and its lock (`state` is reached only under `lock`).
    private final class LockedShard: @unchecked Sendable {
        let lock = PthreadLock()
        var state = Shard()
    }
    private let shards: [LockedShard]
    let sweep = PthreadMutex(Sweep())

    init() {
        shards = (0..<InodeShards.count).map { _ in LockedShard() }
    }

    private func shard(_ number: UInt64) -> LockedShard {
        shards[InodeShards.index(number)]
    }

    /// The cached file of inode `number`.
    func file(_ number: UInt64) -> VolumeCachedFile? {
        let shard = shard(number)
        return shard.lock.withLock { shard.state.files[number] }
    }

    /// The handle and the file it is open on, when `handle` was given out for inode `number`.
    func opened(_ number: UInt64, handle: UInt64) -> (file: VolumeCachedFile, handle: VolumeFileHandle)? {
        let shard = shard(number)
        return shard.lock.withLock { () -> (file: VolumeCachedFile, handle: VolumeFileHandle)? in
            guard let opened = shard.state.handles[handle], opened.inode == number,
                  let file = shard.state.files[number] else { return nil }
            return (file, opened)
        }
    }

    /// Reads or changes the shard of inode `number` (its file, and the handles open on it),
    /// under the shard's lock. A cached file's `openCount` changes only this way.
    func changing<R>(_ number: UInt64, _ body: (inout Shard) -> R) -> R {
        let shard = shard(number)
        return shard.lock.withLock { body(&shard.state) }
    }

    /// Open file handles in all shards.
    var handleCount: Int { shards.reduce(0) { count, shard in count + shard.lock.withLock { shard.state.handles.count } } }

    /// Every cached file and every handle, each shard read under its lock in turn.
    var all: Shard {
        var all = Shard()
        for shard in shards {
            shard.lock.withLock {
                all.files.merge(shard.state.files) { first, _ in first }
                all.handles.merge(shard.state.handles) { first, _ in first }
            }
        }
        return all
    }
}
