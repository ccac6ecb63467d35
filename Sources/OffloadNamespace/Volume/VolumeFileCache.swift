import OffloadCore

/// The regular files a format 2 namespace holds (`VolumeCachedFile`, by inode) and its
/// open file handles, under a reader-writer lock of their own: every request on an open
/// file looks its handle and file up here (shared, so reads and writes of different files
/// do not take turns), and the changes that share the namespace lock (creates,
/// `VolumeNamespace.changingNames`; opens and closes, `changingInodes`) add to it. A leaf
/// lock: nothing is taken while it is held, and a cached file's own lock is never taken
/// under it (`evictIfDone` unloads a file after letting go of it).
final class VolumeFileCache: @unchecked Sendable {
    // @unchecked: `state` is reached only under `lock`.
    struct State {
        var files: [UInt64: VolumeCachedFile] = [:]
        var handles: [UInt64: VolumeFileHandle] = [:]
        /// Closed cached files whose changes wait for a commit, and the commit the last
        /// sweep of them saw (`VolumeNamespace.evictCommittedFiles`).
        var awaitingCommit = Set<UInt64>()
        var lastEvictedAt: UInt64 = 0
    }

    private let lock = ReadWriteLock()
    private var state = State()

    /// The cached file of inode `number`.
    func file(_ number: UInt64) -> VolumeCachedFile? {
        lock.withReadLock { state.files[number] }
    }

    /// The handle and the file it is open on, when `handle` was given out for inode `number`.
    func opened(_ number: UInt64, handle: UInt64) -> (file: VolumeCachedFile, handle: VolumeFileHandle)? {
        lock.withReadLock { () -> (file: VolumeCachedFile, handle: VolumeFileHandle)? in
            guard let opened = state.handles[handle], opened.inode == number, let file = state.files[number] else { return nil }
            return (file, opened)
        }
    }

    /// Reads the state (shared).
    func reading<R>(_ body: (State) -> R) -> R {
        lock.withReadLock { body(state) }
    }

    /// Changes the state (alone).
    func changing<R>(_ body: (inout State) -> R) -> R {
        lock.withWriteLock { body(&state) }
    }
}
