#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import OffloadCore

/// Readers for the requests that read the layered view (`VolumeNamespace.reading`, and the
/// changes that share the namespace lock):
/// a `VolumeReader` is a tree object with a buffer per level and serves one thread at a
/// time, so each request takes one of its own, and gives it back for the next request.
///
/// A reader is handed out again only while it still reads the current state: taken at
/// the last published commit and with the open generation among its layers. A reader
/// from before a publication would read correctly (its layers hold the generations over
/// its root) but holds back the punch of what later commits free, and one from before
/// a generation closed lacks the new open generation, so both are let go on their way
/// back. Making a reader costs its level buffers (about 40 KiB, zeroed) and its root
/// node's read; the nodes themselves come from the volume's shared cache.
///
/// Idle readers are kept per CPU (`shards`, each with its own lock): a request takes from
/// and gives back to its CPU's shard, so requests on different CPUs take no lock they
/// share (issue 11, item 5: a pool under one lock was a mutex every lookup and getattr
/// took twice).
final class VolumeReaderPool: @unchecked Sendable {
    // @unchecked: each shard's `idle` is reached only under its lock; the volume is
    // thread-safe.
    private let volume: TreeVolume
    private final class Shard: @unchecked Sendable {
        let lock = PthreadLock()
        /// Idle readers, each with the open generation's number it was taken at.
        var idle: [(reader: VolumeReader, open: UInt64)] = []
    }
    private let shards: [Shard]
    /// Idle readers kept in all, spread over the shards, but at least two a shard (so up
    /// to 64 on a machine of 32 CPUs or more): the FUSE threads seldom read more at once
    /// on this machine's cores, and more only make readers that are let go again.
    static let kept = 8
    /// Idle readers a shard keeps.
    private let keptPerShard: Int
    /// Shards past this many are shared by CPUs (each idle reader holds about 40 KiB).
    static let maximumShards = 32

    init(volume: TreeVolume) {
        self.volume = volume
        let count = max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_CONF))), Self.maximumShards))
        shards = (0..<count).map { _ in Shard() }
        keptPerShard = max(2, Self.kept / count)
    }

    /// The caller's CPU's shard.
    private var localShard: Shard { shards[Int(offloadfs_current_cpu()) % shards.count] }

    /// Where a reader taken now stands: the published commit and the open generation.
    private var position: (committed: UInt64, open: UInt64) {
        (volume.committedGeneration, volume.delta.openNumber)
    }

    /// A reader of the current state, for the caller alone until `give`. The caller may
    /// hold no namespace lock (`VolumeNamespace.reading`): a reader handed out again was
    /// taken when the same commit was published and the same generation open as when
    /// `position` is read here, so it holds every generation with a frame answered
    /// before this call; one made here takes its layers after that read. A generation
    /// that closes or a commit that publishes meanwhile only makes the reader let go on
    /// its way back.
    func take() throws(FSError) -> (reader: VolumeReader, open: UInt64) {
        let now = position
        // Stale readers met on the way are let go here, outside the shard's lock (a
        // reader's end leaves its epoch). The rest of the idle ones are looked at when
        // taken; a commit drains them all (`drain`), so none holds back its punch.
        var stale: [VolumeReader] = []
        let shard = localShard
        let found = shard.lock.withLock { () -> (reader: VolumeReader, open: UInt64)? in
            while let last = shard.idle.popLast() {
                if last.reader.generation == now.committed && last.open == now.open { return last }
                stale.append(last.reader)
            }
            return nil
        }
        stale.removeAll()
        if let found { return found }
        return (try volume.reader(), now.open)
    }

    /// Gives back a reader `take` handed out, to the caller's CPU's shard (not
    /// necessarily the one it came from). Its position is checked under the shard's lock:
    /// a commit publishes before it drains the pool (`drain`), so a reader given back as a
    /// commit publishes is either seen stale here or drained after.
    func give(_ taken: (reader: VolumeReader, open: UInt64)) {
        let shard = localShard
        shard.lock.withLock {
            let now = position
            guard taken.reader.generation == now.committed, taken.open == now.open,
                  shard.idle.count < keptPerShard else { return }
            shard.idle.append(taken)
        }
    }

    /// Lets every idle reader go (after a commit: their epochs hold back its punch).
    func drain() {
        var gone: [VolumeReader] = []
        for shard in shards {
            shard.lock.withLock {
                gone += shard.idle.map(\.reader)
                shard.idle.removeAll()
            }
        }
        gone.removeAll()
    }

    /// Idle readers in all shards (tests).
    var idleCount: Int { shards.reduce(0) { count, shard in count + shard.lock.withLock { shard.idle.count } } }
}
