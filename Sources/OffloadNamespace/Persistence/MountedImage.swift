import OffloadCore

/// The on-disk format of an image: format 1 (a checkpoint of the whole tree plus a
/// journal; the namespace in RAM) or format 2 (the tree indexed in the image, the
/// default; docs/ARCHITECTURE.md "Metadata at scale: format 2").
public enum ImageFormat: Int, Sendable, CaseIterable {
    case one = 1
    case two = 2
}

/// What `mount` serves: an image opened in its format, what opening it found, its
/// maintenance while mounted, and its unmount. `ImageFileSystem` is format 1's,
/// `VolumeFileSystem` format 2's; `MountedImages.open` picks by the image's bytes. The
/// daemon (MountCommand, DaemonStatus) sees only this.
public protocol MountedImage: AnyObject, Sendable {
    var format: ImageFormat { get }
    /// What to serve (behind `ReadOnlyFileSystem` when read-only).
    var operations: any FileSystemOperations { get }
    var report: ImageFileSystem.OpenReport { get }
    var isReadOnly: Bool { get }
    var capacityBytes: UInt64 { get }
    /// The capacity was set (`--size`) and is kept for later mounts.
    var capacityIsSet: Bool { get }
    /// Sizes and counts for `offloadfs status`; brief locks only.
    func usage() -> MountedImageUsage
    /// Why the mount refuses changes that it would accept were it well (its journal or a
    /// commit failed, or the image is served read-only for want of room), in one line for
    /// `offloadfs status`; nil when it is well (a mount asked to be read-only is).
    var problem: String? { get }
    /// Starts the background work of a mount: every `interval` seconds the image is made
    /// durable and freed blocks reused; format 1 checkpoints once its journal is long
    /// (`journalBytes` overrides how long), format 2 commits what changed (at least
    /// `journalBytes` of journal, when given). `onWrite` hears of each checkpoint or
    /// commit, `onError` of a failure (once while it lasts).
    func startMaintenance(interval: Double, journalBytes: UInt64?,
                          onWrite: (@Sendable (MaintenanceWrite) -> Void)?,
                          onError: @escaping @Sendable (FSError) -> Void)
    /// Stops maintenance and writes everything, marked cleanly unmounted (nothing when
    /// read-only). `meter` follows it.
    func close(meter: ProgressMeter?) throws(FSError)
    /// After `close` failed with `errno`: records it in the image for the next mount and
    /// `offloadfs unmount` to report; false when the format has no place for it (the
    /// journal still holds every change, and the next mount replays it).
    func recordUnmountFailure(errno: UInt32) throws(FSError) -> Bool
}

/// What `offloadfs status` shows of a mounted image.
public struct MountedImageUsage: Sendable, Equatable {
    public var path: String
    public var capacityBytes: UInt64
    /// What writes can still get.
    public var availableBytes: UInt64
    /// The image's free space: `availableBytes`, or more where the disk under the image
    /// has less left than the image has free (`df`'s used is the capacity less this).
    public var freeBytes: UInt64
    /// The image file's length and the disk space it takes.
    public var imageBytes: UInt64
    public var diskBytes: UInt64
    /// Blocks in use (files, metadata), and blocks freed that wait to be punched and reused.
    public var liveBytes: UInt64
    public var reclaimableBytes: UInt64
    public var inodes: UInt64
    public var openHandles: UInt64
    /// Journal written since the last checkpoint (format 1) or commit (format 2): what a
    /// crash now would replay.
    public var journalBytes: UInt64
    /// Format 1's last checkpoint; 0 on format 2, which has none.
    public var checkpointBytes: UInt64
    /// The number of the last checkpoint (format 1) or commit (format 2), one more with
    /// each: how many a span of time saw (`offloadfs status`). Nil on a read-only format 1
    /// mount, which writes none.
    public var generation: UInt64?
    /// The memory the committed tree nodes readers keep take (format 2's
    /// `NodeReadCache`; 0 on format 1).
    public var nodeCacheBytes: UInt64 = 0
    /// Inodes the kernel references (format 2; nil on format 1, which keeps every inode).
    public var referencedInodes: UInt64? = nil
}

/// One write of the maintenance: a checkpoint (format 1) or a commit (format 2).
public struct MaintenanceWrite: Sendable {
    /// "checkpoint", "commit" or "heap trim" (a tick that committed nothing).
    public var kind: String
    public var seconds: Double
    /// What it wrote, for the log (journal bytes it made obsolete, sizes, nodes).
    public var details: [(String, String)]
}
