import OffloadCore
import Synchronization

/// Handle numbers (files' and directories' from one sequence, an atomic counter) and the
/// open directory handles with the directory each is for, in shards by the directory's
/// inode number, each with its own lock: opendir, readdir, fsyncdir and releasedir name
/// the directory, so listings of different directories take no lock they share (issue
/// 11, item 5: one mutex for the numbers and every directory handle before). A leaf: no
/// lock is taken while a shard's is held.
final class VolumeHandles: Sendable {
    private let next = Atomic<UInt64>(1)
    private let shards: [PthreadMutex<[UInt64: UInt64]>]

    init() {
        shards = (0..<InodeShards.count).map { _ in PthreadMutex([:]) }
    }

    private func shard(_ directory: UInt64) -> PthreadMutex<[UInt64: UInt64]> {
        shards[InodeShards.index(directory)]
    }

    /// A number no handle has had.
    func take() -> UInt64 { next.wrappingAdd(1, ordering: .relaxed).oldValue }

    /// A new handle open on directory `directory`.
    func openDirectory(_ directory: UInt64) -> UInt64 {
        let handle = take()
        shard(directory).withLock { $0[handle] = directory }
        return handle
    }

    /// Whether `handle` was given out for directory `directory` and is open.
    func isOpen(_ handle: UInt64, on directory: UInt64) -> Bool {
        shard(directory).withLock { $0[handle] } == directory
    }

    /// Closes `handle`, open on directory `directory` (a handle not open on it is left).
    func closeDirectory(_ handle: UInt64, on directory: UInt64) {
        shard(directory).withLock { handles in
            if handles[handle] == directory { handles[handle] = nil }
        }
    }

    /// Open directory handles in all shards.
    var directoryCount: Int { shards.reduce(0) { count, shard in count + shard.withLock { $0.count } } }
}
