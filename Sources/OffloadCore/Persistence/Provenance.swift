/// What a salvaging replay's objects rest on (`ImageReplay.provenance`, only with
/// `salvage`): which inodes the checkpoint still described, and which byte ranges of each
/// regular file some surviving record states, from the checkpoint or the journal since.
///
/// A damaged checkpoint frame takes records with it. A checkpoint states every file whole
/// (`file range` records covering `0..<size`), so a file that existed when the checkpoint
/// was taken and whose bytes no surviving record states lost them; that is how
/// `ImageSalvage` finds what to take from the previous commit, or to report by path.
public struct Provenance: Sendable {
    /// Set once the checkpoint is read: later records come from the journal.
    var inJournal = false
    /// Checkpoint frames that were damaged or missing (their records are lost).
    public internal(set) var lostCheckpointFrames: UInt64 = 0
    /// The checkpoint's `next inode` record (its first): inodes below it existed when the
    /// checkpoint was taken, so the checkpoint had records of every one still alive.
    var checkpointNextInode: UInt64?
    /// The highest inode number the checkpoint still has a record of: the bound to use
    /// when the frame with `next inode` is lost.
    var checkpointHighestInode: UInt64 = 0
    /// Byte ranges of each regular file that a surviving record states.
    var statedRanges: [UInt64: [Range<UInt64>]] = [:]

    mutating func note(_ record: MetadataRecord) {
        switch record {
        case .nextInode(let next) where !inJournal:
            checkpointNextInode = next
        case .inode(let inode) where !inJournal:
            checkpointHighestInode = max(checkpointHighestInode, inode.number)
        case .drop(let inode):
            statedRanges[inode] = nil
        default:
            break
        }
    }

    mutating func stated(_ range: Range<UInt64>, of inode: UInt64) {
        statedRanges[inode, default: []].append(range)
    }

    /// True when the checkpoint should have described `inode` (it existed then).
    func checkpointHad(_ inode: UInt64) -> Bool {
        inode < (checkpointNextInode ?? checkpointHighestInode &+ 1)
    }

    /// The byte ranges of a regular file of `size` bytes that no surviving record states:
    /// nil when it lost nothing; `[0..<size]` (possibly empty, for a size of 0) when no
    /// record states any of it. Only for files the checkpoint should have described.
    func lostRanges(of inode: UInt64, size: UInt64) -> [Range<UInt64>]? {
        guard checkpointHad(inode) else { return nil }
        guard let stated = statedRanges[inode] else { return [0..<size] }
        var lost: [Range<UInt64>] = []
        var cursor: UInt64 = 0
        for range in stated.sorted(by: { $0.lowerBound < $1.lowerBound }) where cursor < size {
            if range.lowerBound > cursor { lost.append(cursor..<min(range.lowerBound, size)) }
            cursor = max(cursor, range.upperBound)
        }
        if cursor < size { lost.append(cursor..<size) }
        return lost.isEmpty ? nil : lost
    }

    /// Records that `inode`'s whole content now comes from elsewhere (the previous commit).
    mutating func replaced(_ inode: UInt64, size: UInt64) {
        statedRanges[inode] = [0..<size]
    }
}
