import OffloadCore
import Synchronization

/// A regular file's data while the namespace holds it.
final class VolumeCachedFile {
    let data: OffloadedFile
    /// The observer that journals the data's changes (attached at `init`).
    let journal: VolumeFileJournal
    /// Orders O_APPEND writes, which share the namespace lock: each reads the size and
    /// writes there as one step (`AppendLocks`, shared by inode number).
    var appendLock: PthreadLock { AppendLocks.lock(for: journal.inode) }
    /// Handles open on the file (changed under the file cache's lock held alone).
    var openCount = 0
    /// The open generation when the file last changed: it may go once a commit holds it.
    /// Set by its changes' frames (`journal`), read by an eviction (`evictIfDone`), which
    /// holds no lock of the file's: an atomic.
    let changedIn = Atomic<UInt64>(0)
    /// Set when the file leaves the cache clean (`evictIfDone`), before its data is
    /// unloaded (`OffloadedFile.unload` leaves it empty): a reader (no namespace lock) that
    /// found the file in the cache reads its size and then this flag, and when set answers
    /// from the inode's item instead (`VolumeNamespace.attributes`).
    let evicted = Atomic<Bool>(false)
    /// The inode's item as the last frame that stated it left it, while the file is
    /// cached: what a change of its data writes back with the new size and times
    /// (`journal`), without a reader and a read of the layered view for every write
    /// (a fifth of a random 4 KiB write's CPU in the daemon). Set by `journal` and by
    /// every operation's frame that states the inode (`noteJournaled`), both of which run
    /// with the file's other changes shut out (the inode's lock, `InodeLocks`, or the
    /// namespace lock held alone); nil until the first. Debug builds check it against the view.
    var journaledItem: InodeItem?
    /// Whether the file is known to have no "security.capability" (bit 0), and how many
    /// changes of that attribute came since the file was cached (the bits above). The
    /// kernel asks for it before every write, and answering from the tree each time (a
    /// lookup in the layered view) was 6% of the daemon's CPU under 4 KiB random writes.
    /// The mark is set by a create (a new file has none) and by a getxattr that found
    /// none, only if no change came since it loaded the word before taking its reader
    /// (`markCapabilityAbsent`); a setxattr or removexattr of the name counts itself and
    /// clears the mark after its frame (`capabilityChanged`). So an absence read before
    /// a change's frame is never marked after it, with no lock: getxattr takes no
    /// namespace lock, and a change run again with the lock held alone (ENOSPC) holds no
    /// inode lock.
    private let capabilityState = Atomic<UInt64>(0)

    /// The word `markCapabilityAbsent` compares with; `lacksCapability` of it.
    var capabilityWord: UInt64 { capabilityState.load(ordering: .acquiring) }
    static func lacksCapability(_ word: UInt64) -> Bool { word & 1 != 0 }
    var lacksCapability: Bool { Self.lacksCapability(capabilityWord) }

    /// Marks the attribute absent, unless a change came since `word` was loaded.
    func markCapabilityAbsent(ifStill word: UInt64) {
        _ = capabilityState.compareExchange(expected: word, desired: word | 1, ordering: .acquiringAndReleasing)
    }

    /// A change of the attribute, after its frame: counted, and the mark cleared.
    func capabilityChanged() {
        var word = capabilityState.load(ordering: .relaxed)
        while true {
            let (exchanged, found) = capabilityState.compareExchange(expected: word, desired: (word | 1) &+ 1,
                                                                     ordering: .acquiringAndReleasing)
            if exchanged { return }
            word = found
        }
    }

    /// `data` with its changes journaled as inode `inode`'s.
    init(data: OffloadedFile, inode: UInt64, namespace: VolumeNamespace) {
        self.data = data
        journal = VolumeFileJournal(inode: inode, namespace: namespace)
        data.attach(journal)
    }

    /// The data's size and stored bytes, nil when the file was evicted before both were
    /// read (`evicted` is set before the unload, which takes the file's lock that the two
    /// reads take).
    var sizesUnlessEvicted: (size: UInt64, stored: UInt64)? {
        let read = (size: data.size, stored: data.allocatedByteCount)
        return evicted.load(ordering: .acquiring) ? nil : read
    }
}

/// An open file handle: its inode and how it was opened.
struct VolumeFileHandle {
    let inode: UInt64
    let writable: Bool
    let append: Bool
}
