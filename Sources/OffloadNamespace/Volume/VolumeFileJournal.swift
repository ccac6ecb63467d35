import OffloadCore

/// Journals a cached file's changes: its new size and times with the range, one frame
/// (format 1's `FileJournal`). Runs under the file's write lock, inside an operation that
/// holds the namespace lock (shared, for writes, fallocate and copy_file_range).
///
/// `@unchecked Sendable`: `credit` is touched only under the file's write lock, which
/// serialises the file's changes.
final class VolumeFileJournal: FileChangeObserver, @unchecked Sendable {
    let inode: UInt64
    weak var namespace: VolumeNamespace?
    /// The namespace's volume, held here so that a reservation always ends in it, even
    /// when the namespace is gone.
    let volume: TreeVolume
    /// Journal room the change under way reserved (`willChange`), until its frame.
    private var credit = 0
    /// The change bytes `credit` was reserved for.
    private var creditBytes = 0

    init(inode: UInt64, namespace: VolumeNamespace) {
        self.inode = inode
        self.namespace = namespace
        volume = namespace.volume
    }

    /// Reserves the journal's room first (`TreeVolume.reserveRoom`), so that a full image
    /// refuses the change having changed nothing, whatever other files' changes append
    /// meanwhile (the bound is format 1's record bound, larger than format 2's encoding,
    /// plus the inode item). A change that reserves again before its frame reserves the
    /// whole anew, in one claim: the frame's claim is then always one reservation for a
    /// frame at least as large, which `TreeVolume.perform` relies on for frames over
    /// `TreeVolume.largestPooledFrame` (their reservation raised the journal's spare
    /// floor).
    func willChange(recordBytes: Int) throws(FSError) {
        let bytes = creditBytes + recordBytes + 128
        let claim = try volume.reserveRoom(changeBytes: bytes)
        volume.releaseRoom(credit)
        credit = claim
        creditBytes = bytes
    }

    func changeAbandoned() {
        let reserved = credit
        credit = 0
        creditBytes = 0
        volume.releaseRoom(reserved)
    }

    func fileChanged(_ change: FileChange) {
        let reserved = credit
        credit = 0
        creditBytes = 0
        guard let namespace else { return volume.releaseRoom(reserved) }
        namespace.journal(inode, change, reserved: reserved)
    }
}
