import OffloadCore

/// What one format 2 operation builds up while it runs (`VolumeNamespace.changing`,
/// `changingNames`): its frame's changes, the number of the inode it made, and the cached
/// files its frame leaves with only the kernel's references. Its own, not the
/// namespace's: operations in different directories run at once.
struct VolumeOperation {
    var changes: [JournalChange] = []
    /// The inode this operation made (`newNode`): its frame is that inode's birth
    /// (`TreeVolume.perform(born:)`), and the image counts one inode more once it is
    /// written. A number taken by an operation whose frame was refused is skipped.
    var born: UInt64?
    /// Cached regular files the frame leaves with only the kernel's references, to empty
    /// once it is written (`VolumeNamespace.state`, `emptyUnreadableFiles`).
    var unreadableFiles: [UInt64] = []

    var bornNumbers: Range<UInt64> { born.map { $0..<$0 + 1 } ?? 0..<0 }
}
