import OffloadCore

/// What one format 2 operation builds up while it runs (`VolumeNamespace.changing`,
/// `changingNames`, `changingInodes`): its frame's changes, the number of the inode it made, and the cached
/// files its frame drops. Its own, not the
/// namespace's: operations in different directories run at once.
struct VolumeOperation {
    var changes: [JournalChange] = []
    /// The inode this operation made (`newNode`): its frame is that inode's birth
    /// (`TreeVolume.perform(born:)`), and the image counts one inode more once it is
    /// written. A number taken by an operation whose frame was refused is skipped.
    var born: UInt64?
    /// Cached files of inodes the frame drops, taken out of the cache by `state` and let
    /// go of (`releaseAll`: their blocks released in memory, with the marks a journaled
    /// release leaves) only once the frame is written; put back when it fails
    /// (`writeFrame`).
    var droppedFiles: [(UInt64, VolumeCachedFile)] = []

    var bornNumbers: Range<UInt64> { born.map { $0..<$0 + 1 } ?? 0..<0 }
}
