#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import OffloadCore

/// A format 2 image as a mount serves it (`MountedImage`): the volume (`TreeVolume`), its
/// namespace (`VolumeNamespace`), the maintenance commits, and the clean unmount
/// (docs/ARCHITECTURE.md, "Steps" 4d).
///
/// Opening reads the commit slots and the two roots, replays the journal frames after the
/// last commit and commits them: its cost follows the journal, not the tree. Its capacity
/// follows `--size` and the default as format 1's does (`TreeVolume+Capacity.swift`): a
/// `--size` is kept for later mounts, larger ones grow it, smaller ones shrink it while
/// everything in use lies below (otherwise refused, the image untouched), and an image
/// never given one follows the default of each mount. An image whose last mount ran out
/// of room in a commit opens read-only (`TreeVolume.open`), as does one opened with
/// `readOnly`, which writes nothing.
///
/// `@unchecked Sendable`: the volume, the namespace and the maintenance timer are
/// thread-safe under their own locks; `report` is set before the file system is shared
/// (`MountedImages.upgrade` completes it) and only read after.
public final class VolumeFileSystem: MountedImage, @unchecked Sendable {
    public let volume: TreeVolume
    public let namespace: VolumeNamespace
    public let operations: any FileSystemOperations
    public internal(set) var report: ImageFileSystem.OpenReport
    public let isReadOnly: Bool
    public let capacityBytes: UInt64
    public let capacityIsSet: Bool
    /// Asked for read-write, the volume opened failed: no room for a commit (`open`).
    let openedWithoutRoom: Bool
    public var format: ImageFormat { .two }
    private let maintenance = MaintenanceTimer()
    /// When the heap's free memory goes back to the kernel after a commit.
    private let heapTrim = HeapTrim()

    /// The smallest capacity a format 2 image is made with (`TreeVolume.minimumCapacity`).
    public static let minimumCapacity = TreeVolume.minimumCapacity

    /// The steps of `open` and `close`, as a `ProgressMeter` shows them.
    public enum Phase {
        public static let formatting = "making a format 2 image"
        public static let replaying = "replaying the journal"
        public static let upgrading = "upgrading the image to format 2"
        public static let committing = "writing the final commit"
    }

    init(volume: TreeVolume, namespace: VolumeNamespace, report: ImageFileSystem.OpenReport) {
        self.volume = volume
        self.namespace = namespace
        self.report = report
        // A failed volume (a full image, or read-only storage) serves what it holds and
        // refuses every change.
        isReadOnly = volume.isReadOnly || volume.failure != nil
        openedWithoutRoom = !volume.isReadOnly && volume.failure == .noSpace
        operations = isReadOnly ? ReadOnlyFileSystem(namespace) : namespace
        capacityBytes = volume.current.capacityBytes
        capacityIsSet = volume.current.capacityIsSet
    }

    /// Makes a new format 2 image on `storage` (emptied first) with `capacity` and opens it.
    public static func create(storage: any ImageStorage, capacity: CapacityRequest, memoryLimiter: MemoryLimiter,
                              meter: ProgressMeter? = nil) throws(FSError) -> VolumeFileSystem {
        let started = DispatchTime.now()
        meter?.begin(Phase.formatting)
        guard !storage.isReadOnly else {
            throw .invalidArgument("'\(storage.name)' holds no filesystem yet, and a read-only mount cannot create one")
        }
        let (capacityBytes, isSet) = capacity.resolved(keptIn: nil)
        guard capacityBytes >= minimumCapacity else {
            throw .capacityTooSmall(capacityBytes: capacityBytes, neededBytes: minimumCapacity, liveBytes: 0)
        }
        guard capacityBytes <= TreeVolume.maximumCapacity else { throw BackingStore.capacityPastTheLimit(capacityBytes) }
        try storage.setLength(0)
        let blockSize = UInt64(BackingStore.blockSize)
        var random = SystemRandomNumberGenerator()
        let volume = try TreeVolume.format(storage, capacityBytes: capacityBytes / blockSize * blockSize,
                                           capacityIsSet: isSet, imageID: Superblock.newImageID(),
                                           nameHashKey: SipHash24(key0: random.next(), key1: random.next()))
        var report = ImageFileSystem.OpenReport(created: true, inodes: 1, journalFrames: 0, orphansFreed: 0,
                                                repairs: [], seconds: 0)
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: memoryLimiter)
        try volume.commit()
        report.seconds = ImageFileSystem.seconds(since: started)
        return VolumeFileSystem(volume: volume, namespace: namespace, report: report)
    }

    /// Opens the format 2 image on `storage` with `capacity` (`TreeVolume.open`: a
    /// `--size` too small for what the image holds is refused before anything is
    /// written), replays its journal and drops the inodes its last mount left unlinked
    /// while open.
    public static func open(storage: any ImageStorage, capacity: CapacityRequest, memoryLimiter: MemoryLimiter,
                            meter: ProgressMeter? = nil) throws(FSError) -> VolumeFileSystem {
        let started = DispatchTime.now()
        meter?.begin(Phase.replaying)
        let volume = try TreeVolume.open(storage, capacity: capacity)
        let orphans = try volume.reader().orphans().filter { $0.item.state != .dropping }.count
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: memoryLimiter)
        var report = ImageFileSystem.OpenReport(created: false, inodes: Int(clamping: namespace.usage.inodes),
                                                journalFrames: UInt64(volume.replayedFrames),
                                                orphansFreed: volume.isReadOnly ? 0 : orphans, repairs: [], seconds: 0)
        report.previousUnmountError = volume.opened.unmountError
        if let failure = volume.failure, !volume.isReadOnly {
            // The disk under the image is what is full when it has less room than the
            // image's own free space: a larger --size gives nothing there (its capacity
            // change needs a commit too), and the advice said to try one.
            let free = (try? volume.fileBlocks())?.spaceCounts().free ?? 0
            if let host = storage.hostAvailableBytes, host < free {
                report.warnings.append("the disk holding the image has no room left for a commit (\(failure); \(host) bytes free there); it is served read-only: free space on that disk and mount it again (a larger --size does not help)")
            } else {
                report.warnings.append("the image has no room left for a commit (\(failure)); it is served read-only: mount it again with a larger --size (--size \((volume.current.capacityBytes >> 20) + 8)M gives a commit room enough), or, if the disk holding it is what is full, free space there and mount it again")
            }
        }
        report.replaySeconds = ImageFileSystem.seconds(since: started)
        report.seconds = report.replaySeconds
        return VolumeFileSystem(volume: volume, namespace: namespace, report: report)
    }

    public func usage() -> MountedImageUsage {
        let (free, available) = (try? volume.fileBlocks())?.spaceCounts() ?? (0, 0)
        let namespaceUsage = namespace.usage
        return MountedImageUsage(
            path: volume.storage.name, capacityBytes: capacityBytes, availableBytes: available, freeBytes: free,
            imageBytes: volume.storage.length, diskBytes: volume.storage.diskBytes,
            // Blocks waiting for their punch count as in use until it is done.
            liveBytes: capacityBytes - min(free, capacityBytes), reclaimableBytes: 0,
            inodes: namespaceUsage.inodes, openHandles: UInt64(namespaceUsage.openHandles),
            journalBytes: volume.journalBytesSinceCommit, checkpointBytes: 0, generation: volume.current.generation,
            nodeCacheBytes: UInt64(volume.nodeCache.slots.resident * TreeNode.size),
            referencedInodes: namespaceUsage.referencedInodes)
    }

    /// A failed journal or commit fails every later change until the image is mounted
    /// again (which replays the journal from the last durable commit); an image opened
    /// without room for a commit is served read-only.
    public var problem: String? {
        if let failure = namespace.journalFailure {
            return "changes are refused until the image is mounted again: a journal frame could not be written (\(failure))"
        }
        if let failure = volume.failure {
            if openedWithoutRoom {
                return "served read-only: the image has no room left for a commit (\(failure)); unmount, and mount it again "
                    + "with a larger --size or after freeing space on the disk holding it"
            }
            return "changes are refused until the image is mounted again: a commit failed (\(failure))"
        }
        return nil
    }

    /// Every `interval` seconds, and when operations bring the open generation near the
    /// volume's limits: commits what changed since the last commit when
    /// `VolumeCommitPolicy` says so (with `journalBytes` given, at every tick that finds
    /// that much journal: the crash soak sets a short interval so kills land inside
    /// commits). A commit makes every change durable and starts the punch of the blocks
    /// freed two commits ago, so `du` follows deletions; a tick that does not commit
    /// syncs the journal when it grew.
    public func startMaintenance(interval: Double, journalBytes: UInt64?,
                                 onWrite: (@Sendable (MaintenanceWrite) -> Void)?,
                                 onError: @escaping @Sendable (FSError) -> Void) {
        guard !isReadOnly else { return }
        let policy = journalBytes.map { VolumeCommitPolicy.everyTick(journalBytes: $0) } ?? VolumeCommitPolicy()
        maintenance.start(interval: interval, tick: { [self] () throws(FSError) in
            let started = DispatchTime.now()
            // Other files on the disk under the image change what it can still give.
            volume.refreshHostRoom()
            let journal = volume.journalBytesSinceCommit
            guard let commit = try namespace.commitIfChanged(policy: policy) else {
                // Not committed yet: the journal is made durable anyway, so a power cut
                // loses at most one interval of work, as on format 1 (README).
                if journal > 0 { try volume.sync() }
                // Memory freed with nothing to commit goes back too (`HeapTrim`).
                let atRest = (volume.secondsSinceLastAppend ?? .infinity) >= (policy.idleSeconds ?? 1)
                let usage = namespace.usage
                let budget = HeapTrim.budget(inodes: usage.referencedInodes, heldBytes: namespace.memoryLimiter.usedBytes)
                if let trim = heapTrim.withoutCommit(atRest: atRest, budget: budget,
                                                     holdings: (Int(usage.referencedInodes), usage.openHandles)) {
                    onWrite?(MaintenanceWrite(kind: "heap trim", seconds: trim.seconds, details: [
                        ("heap_trim_released_bytes", "\(trim.releasedBytes)"),
                    ]))
                }
                return
            }
            let seconds = ImageFileSystem.seconds(since: started)
            // The heap's free memory goes back (`HeapTrim`): a generation's changes, the
            // inodes the kernel forgot and the bytes the commit placed were freed, and
            // glibc keeps freed memory in its arenas (72 MiB of RssAnon after `tar -x` of
            // /usr/include and its commit, 7 MiB once trimmed). At rest always; under load
            // only over the daemon's budget, since the trim takes the allocator's locks
            // that requests' allocations need.
            let atRest = (volume.secondsSinceLastAppend ?? .infinity) >= (policy.idleSeconds ?? 1)
            // At rest, the settling commits this one leaves owing run one after another,
            // not one a tick: what an `rm` freed is free space (`df`) once the last has run,
            // within a tick of the rm's commit instead of five ticks (docs/ARCHITECTURE.md,
            // "Freed space at rest"). Each waits for the punch the one before started.
            let settlingOwed = atRest && namespace.owesSettlingCommits
            if settlingOwed { maintenance.wake() }
            // At rest, the whole trim once the chain has ended, with the pages of the node
            // cache's free slots (the nodes commits replaced).
            let budget = HeapTrim.budget(inodes: UInt64(namespace.kernelReferences.referencedCount),
                                         heldBytes: namespace.memoryLimiter.usedBytes)
            let trim = heapTrim.afterCommit(atRest: atRest && !settlingOwed, budget: budget, nodeCache: volume.nodeCache)
            onWrite?(MaintenanceWrite(kind: "commit", seconds: seconds, details: [
                ("generation", "\(commit.generation)"), ("journal_bytes", "\(journal)"),
                ("nodes_written", "\(commit.filesystemNodesWritten + commit.blockTreeNodesWritten)"),
                ("placed_bytes", "\(commit.placedBytes)"),
                ("heap_trim_seconds", trim.map { "\($0.seconds)" } ?? "none"),
                ("heap_trim_released_bytes", trim.map { "\($0.releasedBytes)" } ?? "none"),
            ]))
        }, onError: onError)
        namespace.onNearingBudget { [maintenance] in maintenance.wake() }
    }

    /// Stops maintenance and commits everything, the slot marked cleanly unmounted.
    public func close(meter: ProgressMeter?) throws(FSError) {
        namespace.onNearingBudget(nil)
        maintenance.stop()
        guard !isReadOnly else { return }
        meter?.begin(Phase.committing)
        try namespace.close()
    }

    /// Format 2 has no place for it: the failed commit left the volume failed, and a slot
    /// written after it could name a generation whose frames replay would then skip. The
    /// journal still holds every answered change; the next mount replays it.
    public func recordUnmountFailure(errno: UInt32) throws(FSError) -> Bool { false }
}
