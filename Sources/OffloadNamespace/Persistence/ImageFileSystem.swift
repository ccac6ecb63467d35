#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import OffloadCore

/// A filesystem kept in an image file: the store, the namespace recovered from (or
/// created in) it, and the journal that keeps the image up to date. What `mount` serves
/// and what `fsck --repair` opens.
///
/// Opened read-only (`-o ro`), it writes not one byte: the image is opened `O_RDONLY` and
/// mapped `PROT_READ`, recovery replays the journal in memory only (no checkpoint, no
/// punch, no truncation, no superblock), there is no journal and no maintenance, and the
/// namespace is served through `ReadOnlyFileSystem`, which refuses every change (EROFS).
/// `@unchecked Sendable`: no mutable field of its own (the maintenance timer locks itself).
public final class ImageFileSystem: @unchecked Sendable {
    public let store: BackingStore
    public let namespace: Namespace
    /// Where every change is recorded; nil when read-only.
    public let journal: NamespaceJournal?
    /// What to serve: the namespace, or, read-only, the namespace behind `ReadOnlyFileSystem`.
    public let operations: any FileSystemOperations
    public let report: OpenReport
    public var isReadOnly: Bool { store.isReadOnly }
    private let maintenance = MaintenanceTimer()

    /// What opening found and did.
    public struct OpenReport: Sendable {
        public var created: Bool
        public var inodes: Int
        public var journalFrames: UInt64
        public var orphansFreed: Int
        public var repairs: [String]
        /// After a repair that lost or salvaged something: one line per file restored,
        /// emptied, cut short, moved or unnamed, by path (`ImageSalvage.describe`).
        public var affected: [String] = []
        /// 0, or the errno with which the image's last unmount failed its final checkpoint
        /// (this open recovered what that checkpoint would have held from the journal).
        public var previousUnmountError: UInt32 = 0
        /// What the mount should warn about (format 2: an image served read-only since it
        /// has no room left for a commit).
        public var warnings: [String] = []
        /// This open upgraded a format 1 image to format 2 (`MountedImages.upgrade`).
        public var upgradedFromFormatOne = false
        /// The upgrade mounted and cleanly unmounted the image as format 1 first (it was not
        /// cleanly unmounted, the mount set a capacity, or another condition of
        /// `MountedImages.directUpgrade` failed); the other fields are then what format 1's
        /// recovery found. False when it upgraded a cleanly unmounted image from its
        /// checkpoint directly.
        public var formatOneMountedFirst = false
        /// Seconds spent reading the metadata, rebuilding the tree, and writing the
        /// first checkpoint (or keeping the last one), and in all.
        public var replaySeconds = 0.0
        public var restoreSeconds = 0.0
        public var checkpointSeconds = 0.0
        public var seconds: Double
    }

    /// The steps of `open` and `close`, as a `ProgressMeter` shows them.
    public enum Phase {
        public static let opening = "opening the image"
        public static let readingMetadata = "reading metadata"
        public static let checking = "checking the tree"
        public static let rebuilding = "rebuilding the tree"
        public static let checkpointing = "writing a checkpoint"
        public static let syncing = "syncing the image"
        public static let finalCheckpoint = "writing the final checkpoint"
    }

    /// Start a checkpoint once the journal has grown past the checkpoint's own size, and
    /// at least this much: replay then reads at most about twice the tree's metadata,
    /// and the metadata on disk stays within a small multiple of it.
    public static let checkpointJournalBytes: UInt64 = 8 << 20

    private init(store: BackingStore, namespace: Namespace, journal: NamespaceJournal?, report: OpenReport) {
        self.store = store
        self.namespace = namespace
        self.journal = journal
        self.operations = store.isReadOnly ? ReadOnlyFileSystem(namespace) : namespace
        self.report = report
    }

    /// Opens (or creates) the image at `path` and recovers its filesystem: checkpoint,
    /// then journal up to its first torn frame; files unlinked while open are freed;
    /// then a new checkpoint makes the recovered state the image's starting point.
    /// A damaged image is refused (`.damagedImage`) unless `repair`, which fixes what the
    /// analysis found (see `ImageReplay.repair`).
    ///
    /// `capacity` (see `CapacityRequest`) must leave room for what the image holds and
    /// a checkpoint: a smaller one is refused (`.capacityTooSmall`) before anything is written.
    /// `readOnly` opens an existing image without writing it (see the type's documentation);
    /// it cannot be combined with `fresh` or `repair`, and a damaged image is refused.
    /// `meter` follows the steps (`Phase`) as they happen, for whoever waits for the mount.
    public static func open(path: String, capacity: CapacityRequest, fresh: Bool = false, readOnly: Bool = false,
                            memoryLimiter: MemoryLimiter, repair: Bool = false,
                            meter: ProgressMeter? = nil) throws(FSError) -> ImageFileSystem {
        let started = DispatchTime.now()
        guard !readOnly || !repair else { throw .invalidArgument("a read-only open cannot repair") }
        meter?.begin(Phase.opening)
        let storage = try FileImageStorage(path: path, readOnly: readOnly)
        return try open(store: BackingStore(storage: storage, capacity: capacity, fresh: fresh),
                        memoryLimiter: memoryLimiter, repair: repair, meter: meter, started: started)
    }

    /// `open(path:capacity:…)` with the capacity set to `capacityBytes`.
    public static func open(path: String, capacityBytes: UInt64, fresh: Bool = false,
                            memoryLimiter: MemoryLimiter, repair: Bool = false,
                            meter: ProgressMeter? = nil) throws(FSError) -> ImageFileSystem {
        try open(path: path, capacity: .set(capacityBytes), fresh: fresh, memoryLimiter: memoryLimiter,
                 repair: repair, meter: meter)
    }

    /// `open(path:…)` on an image behind any `ImageStorage` (the crash simulator's, in tests).
    public static func open(storage: any ImageStorage, capacityBytes: UInt64, fresh: Bool = false,
                            memoryLimiter: MemoryLimiter, repair: Bool = false,
                            meter: ProgressMeter? = nil) throws(FSError) -> ImageFileSystem {
        try open(storage: storage, capacity: .set(capacityBytes), fresh: fresh, memoryLimiter: memoryLimiter,
                 repair: repair, meter: meter)
    }

    /// `open(path:…)` on an image behind any `ImageStorage` (read-only when the storage is).
    public static func open(storage: any ImageStorage, capacity: CapacityRequest, fresh: Bool = false,
                            memoryLimiter: MemoryLimiter, repair: Bool = false,
                            meter: ProgressMeter? = nil) throws(FSError) -> ImageFileSystem {
        let started = DispatchTime.now()
        guard !storage.isReadOnly || !repair else { throw .invalidArgument("a read-only open cannot repair") }
        meter?.begin(Phase.opening)
        return try open(store: BackingStore(storage: storage, capacity: capacity, fresh: fresh),
                        memoryLimiter: memoryLimiter, repair: repair, meter: meter, started: started)
    }

    private static func open(store: BackingStore, memoryLimiter: MemoryLimiter, repair: Bool,
                             meter: ProgressMeter?, started: DispatchTime) throws(FSError) -> ImageFileSystem {
        let namespace: Namespace
        var report = OpenReport(created: false, inodes: 1, journalFrames: 0, orphansFreed: 0,
                                repairs: [], seconds: 0)
        var recovered = NamespaceJournal.Recovered.nothing
        var nextSequence: UInt64 = 0
        var kept: (Superblock, [LogSegment])?
        // Before recovery rebuilds anything: should it fail half-way (no room to move RAM
        // extents into the image), the files it restored so far are freed, and their
        // blocks must wait in quarantine, not be punched: the image on disk still holds
        // those files.
        store.deferReuse()
        switch store.opened {
        case .new:
            report.created = true
            namespace = Namespace(store: store, memoryLimiter: memoryLimiter)
        case .existing(let superblock):
            let recovery = try recover(superblock, store: store, memoryLimiter: memoryLimiter, repair: repair,
                                       meter: meter, started: started, report: &report)
            namespace = recovery.namespace
            recovered = recovery.chains
            nextSequence = recovery.nextSequence
            kept = recovery.keptCheckpoint
        }
        if store.isReadOnly {
            report.seconds = Self.seconds(since: started)
            return ImageFileSystem(store: store, namespace: namespace, journal: nil, report: report)
        }
        let journal = try NamespaceJournal(store: store, superblock: store.opened.superblock,
                                           recovered: recovered, nextSequence: nextSequence)
        namespace.attach(journal)
        if let (superblock, segments) = kept {
            try journal.keepCheckpoint(of: superblock, segments: segments)
        } else {
            meter?.begin(Phase.checkpointing)
            try journal.checkpoint(namespace, meter: meter)
        }
        meter?.begin(Phase.syncing)
        try store.syncAndReclaim()
        report.seconds = Self.seconds(since: started)
        report.checkpointSeconds = report.seconds - report.replaySeconds - report.restoreSeconds
        return ImageFileSystem(store: store, namespace: namespace, journal: journal, report: report)
    }

    static func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    /// Every `interval` seconds: make the image durable and reuse freed blocks (so `du`
    /// follows deletions without an unmount), and checkpoint once the journal is long.
    ///
    /// `checkpointAfter` overrides the journal size that triggers a checkpoint (the crash
    /// soak sets it tiny, with a short interval, so that kills land inside checkpoints).
    ///
    /// `onCheckpoint` hears of each checkpoint the maintenance takes (the daemon logs it).
    public func startMaintenance(interval: Double = 5, checkpointAfter: UInt64? = nil,
                                 onCheckpoint: (@Sendable (CheckpointTiming) -> Void)? = nil,
                                 onError: @escaping @Sendable (FSError) -> Void) {
        guard journal != nil else { return }  // read-only: nothing to sync or checkpoint
        maintenance.start(interval: interval, tick: { [self] () throws(FSError) in
            if let timing = try self.maintain(checkpointAfter: checkpointAfter) { onCheckpoint?(timing) }
        }, onError: onError)
    }

    /// What one checkpoint of the maintenance took.
    public struct CheckpointTiming: Sendable {
        /// Journal bytes since the previous checkpoint (what the checkpoint made obsolete).
        public var journalBytes: UInt64
        /// The new checkpoint's size.
        public var checkpointBytes: UInt64
        public var seconds: Double
    }

    /// One maintenance tick; returns the checkpoint's timing if it took one.
    @discardableResult
    func maintain(checkpointAfter: UInt64? = nil) throws(FSError) -> CheckpointTiming? {
        guard let journal else { return nil }
        try store.syncAndReclaim()
        let journalBytes = journal.journalBytesSinceCheckpoint
        let threshold = checkpointAfter ?? max(Self.checkpointJournalBytes, journal.checkpointBytes)
        guard journal.hasFailed || journalBytes >= threshold else { return nil }
        let started = DispatchTime.now()
        try journal.checkpoint(namespace)
        try store.syncAndReclaim()
        return CheckpointTiming(journalBytes: journalBytes, checkpointBytes: journal.checkpointBytes,
                                seconds: Self.seconds(since: started))
    }

    /// Stops maintenance and writes the last checkpoint, marked clean: the image then
    /// holds everything, and the next mount reads no journal. Read-only: nothing to do.
    /// `meter` follows it.
    public func close(meter: ProgressMeter? = nil) throws(FSError) {
        guard let journal else { return }
        maintenance.stop()
        meter?.begin(Phase.finalCheckpoint)
        try journal.checkpoint(namespace, clean: true, meter: meter)
        meter?.begin(Phase.syncing)
        try store.syncAndReclaim()
    }
}
