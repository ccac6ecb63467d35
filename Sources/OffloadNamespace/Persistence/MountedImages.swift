#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Dispatch
import OffloadCore

/// Opens an image for a mount in the format its bytes say (`MountedImage`).
///
/// - A format 2 image (commit slots) opens as format 2 (`VolumeFileSystem`).
/// - A new image (no file, an empty one, or `fresh`) is made in `newFormat`.
/// - A format 1 image opens as format 1, unless `newFormat` is `.two` (the default) and
///   the mount is not read-only: then it is upgraded in place first (`upgrade`). A
///   read-only mount, or `offloadfs mount --format 1`, keeps it format 1.
/// - Anything else (a foreign file, a damaged or newer image) goes to format 1's open,
///   whose errors explain it.
///
/// Format 2 is the default since 2026-12-03 (docs/ARCHITECTURE.md, "Format 2 by default").
public enum MountedImages {
    public static func open(path: String, capacity: CapacityRequest, fresh: Bool = false, readOnly: Bool = false,
                            newFormat: ImageFormat = .two, memoryLimiter: MemoryLimiter,
                            meter: ProgressMeter? = nil) throws(FSError) -> any MountedImage {
        guard !readOnly || !fresh else { throw .invalidArgument("a read-only mount cannot start '\(path)' afresh") }
        let found: ImageFormat?
        do {
            // Read with pread before anything is mapped; closed again before the open
            // below locks the file.
            let storage = try FileImageStorage(path: path, readOnly: readOnly)
            switch try ImageIdentity.read(storage) {
            case .empty: found = nil
            case .newerVersion(CommitSlot.version): found = .two
            // Version 0 kept no files: a new image (format 1's open starts it afresh too).
            case .versionZero: found = nil
            // Never written, `--fresh` or not: only an offloadfs image is started afresh
            // (before, `--fresh` made a format 2 image over any file, an ext4 image
            // included). The same words as format 1's open.
            case .foreign:
                throw .invalidArgument("'\(path)' is not an offloadfs image (it has data but no offloadfs header); it was left untouched")
            case .newerVersion(let version):
                throw .invalidArgument("image '\(path)' was written by a newer offloadfs (\(Superblock.versionName(version))); "
                                       + "this one reads formats 1 and 2; it was left untouched")
            default: found = .one
            }
            if (fresh || found == nil) && newFormat == .two && !readOnly {
                return try VolumeFileSystem.create(storage: storage, capacity: capacity, memoryLimiter: memoryLimiter,
                                                   meter: meter)
            }
            if fresh && found == .two {
                // Started afresh as format 1: format 1 refuses a newer format's bytes.
                try storage.setLength(0)
            } else if found == .two {
                return try VolumeFileSystem.open(storage: storage, capacity: capacity, memoryLimiter: memoryLimiter,
                                                 meter: meter)
            }
        }
        if found == .one, newFormat == .two, !readOnly, !fresh {
            return try upgrade(path: path, capacity: capacity, memoryLimiter: memoryLimiter, meter: meter)
        }
        return try ImageFileSystem.open(path: path, capacity: capacity, fresh: fresh, readOnly: readOnly,
                                        memoryLimiter: memoryLimiter, meter: meter)
    }

    /// Upgrades the format 1 image at `path` to format 2 in place and opens it, with
    /// `TreeVolume.upgrade`, which is crash-safe (until its second slot is durable the
    /// image is format 1; run again, it upgrades again), on format 1's recovery read
    /// read-only (its journal replayed, the tree checked).
    ///
    /// A cleanly unmounted image, mounted without `--size`, is upgraded from that recovery
    /// at once (`directUpgrade`): format 1's own mount would replay nothing and only free
    /// the orphans its last checkpoint holds, which the upgrade frees too, and at
    /// 10,000,000 files it takes minutes and 13 GB. Any other image is mounted and cleanly
    /// unmounted by format 1 first (its journal replayed, orphans freed, both superblock
    /// copies the same commit, a new capacity applied), which costs one format 1 mount
    /// more, once.
    static func upgrade(path: String, capacity: CapacityRequest, memoryLimiter: MemoryLimiter,
                        meter: ProgressMeter?) throws(FSError) -> VolumeFileSystem {
        let started = DispatchTime.now()
        if let fileSystem = try directUpgrade(path: path, capacity: capacity, memoryLimiter: memoryLimiter, meter: meter) {
            fileSystem.report.upgradedFromFormatOne = true
            fileSystem.report.seconds = ImageFileSystem.seconds(since: started)
            return fileSystem
        }
        var report: ImageFileSystem.OpenReport
        do {
            let formatOne = try ImageFileSystem.open(path: path, capacity: capacity, memoryLimiter: memoryLimiter,
                                                     meter: meter)
            report = formatOne.report
            try formatOne.close(meter: meter)
        }
        let volume: TreeVolume
        do {
            // Everything the recovery read is released at the end of this scope.
            guard let recovery = try FormatOneRecovery.read(FileImageStorage(path: path), meter: meter) else {
                throw .damagedImage("'\(path)' is no longer a format 1 image after its format 1 unmount")
            }
            volume = try upgradedVolume(recovery, capacityBytes: nil, path: path, meter: meter)
        }
        // Format 1's recovery and the upgrade's generation (about 2 KB an inode at their
        // peak) are gone now; give their pages back, or the daemon would keep them for
        // its whole life (glibc keeps freed memory in its arenas: 1.5 GiB after
        // upgrading 1,000,000 files).
        _ = offloadfs_release_free_memory()
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: memoryLimiter)
        report.upgradedFromFormatOne = true
        report.formatOneMountedFirst = true
        report.seconds = ImageFileSystem.seconds(since: started)
        return VolumeFileSystem(volume: volume, namespace: namespace, report: report)
    }

    /// The upgrade without format 1's mount, or nil when it needs one: the image was not
    /// cleanly unmounted (its journal holds changes), its last unmount failed, its two
    /// superblock copies differ, the mount asks for a capacity (`--size`: format 1's open
    /// applies it, and the upgrade needs the room), or its recovery finds problems (format
    /// 1's open then refuses it, saying so). Once upgraded, the volume is closed and the
    /// image opened as any format 2 image (`VolumeFileSystem.open`), which applies the
    /// mount's default capacity as format 1's open would have.
    private static func directUpgrade(path: String, capacity: CapacityRequest, memoryLimiter: MemoryLimiter,
                                      meter: ProgressMeter?) throws(FSError) -> VolumeFileSystem? {
        guard case .kept = capacity else { return nil }
        // Kept for the format 2 open below (its lock with it); released on a return of nil,
        // before format 1's open locks the file again.
        let storage = try FileImageStorage(path: path)
        let orphans: Int
        do {
            // A checkpoint, no journal frames, nothing to repair. Orphans (a checkpoint written
            // while a file unlinked while open was still open holds it, as a daemon's last
            // one does for files the kernel had not forgotten) are left out of the tree, and
            // their blocks freed by the upgrade, as format 1's open frees them.
            guard let superblock = try FormatOneRecovery.cleanlyUnmounted(storage), superblock.checkpointFrames > 0,
                  let recovery = try FormatOneRecovery.read(storage, meter: meter),
                  recovery.analysis.isClean, recovery.replay.journalFrames == 0 else { return nil }
            orphans = recovery.replay.inodes.count - recovery.analysis.reachable.count
            // The capacity format 1's open would give it: the one it keeps, or else this
            // mount's default (the superblock of an image whose capacity is not kept holds
            // the last mount's, or 64 TiB from `offloadfs-genimage`).
            let volume = try upgradedVolume(recovery, capacityBytes: capacity.resolved(keptIn: superblock).bytes,
                                            path: path, meter: meter)
            // The storage outlives this volume for the open below: nothing here may map
            // it (`fileBlocks()`), since an image is mapped once per storage.
            try volume.close()
        }
        _ = offloadfs_release_free_memory()
        let fileSystem = try VolumeFileSystem.open(storage: storage, capacity: capacity,
                                                   memoryLimiter: memoryLimiter, meter: meter)
        fileSystem.report.formatOneMountedFirst = false
        fileSystem.report.orphansFreed = orphans
        return fileSystem
    }

    /// Format 1's recovery of an image, read-only, as the upgrade takes it.
    private struct FormatOneRecovery {
        var storage: FileImageStorage
        var replay: ImageReplay
        var analysis: ImageAnalysis
        /// The previous commit's metadata segments (format 1's repair may still read them).
        var previousSegments: [LogSegment]

        /// The superblock when both copies are valid, the same commit, cleanly unmounted
        /// without an unmount error.
        static func cleanlyUnmounted(_ storage: FileImageStorage) throws(FSError) -> Superblock? {
            guard case .image(let superblock, otherCopyAgrees: true) = try ImageIdentity.read(storage),
                  superblock.cleanlyUnmounted, superblock.unmountError == 0 else { return nil }
            return superblock
        }

        /// Read and checked as format 1's recovery does, with its progress (at 1M files
        /// these take about 10 s, which the mount's waiters must see move). Nil when the
        /// image is not format 1.
        static func read(_ storage: FileImageStorage, meter: ProgressMeter?) throws(FSError) -> FormatOneRecovery? {
            guard case .image(let superblock, _) = try ImageIdentity.read(storage) else { return nil }
            let read = { (offset: UInt64, count: Int) in storage.readBytes(at: offset, count: count) }
            meter?.begin(ImageFileSystem.Phase.readingMetadata, unit: .bytes)
            let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length, read: read,
                                              progress: { meter?.update(done: $0, total: $1) })
            meter?.begin(ImageFileSystem.Phase.checking)
            let analysis = ImageAnalysis(replay, fileBytes: storage.length, meter: meter)
            let previousSegments = ImageReplay.previousCommitSegments(of: superblock, fileBytes: storage.length, read: read)
            return FormatOneRecovery(storage: storage, replay: replay, analysis: analysis,
                                     previousSegments: previousSegments)
        }
    }

    /// The upgrade itself (`TreeVolume.upgrade`) on `recovery`, on the storage it was read
    /// from, to `capacityBytes` (nil: the one the format 1 superblock holds).
    private static func upgradedVolume(_ recovery: FormatOneRecovery, capacityBytes: UInt64?, path: String,
                                       meter: ProgressMeter?) throws(FSError) -> TreeVolume {
        meter?.begin(VolumeFileSystem.Phase.upgrading)
        var random = SystemRandomNumberGenerator()
        let progress = meter.map { meter in
            CommitProgress(began: { step in meter.begin("\(VolumeFileSystem.Phase.upgrading): \(step.rawValue)") }) { done, total in
                meter.update(done: UInt64(done), total: UInt64(total))
            }
        }
        let storage = recovery.storage
        do {
            return try TreeVolume.upgrade(storage, from: recovery.replay, analysis: recovery.analysis,
                                          previousSegments: recovery.previousSegments, capacityBytes: capacityBytes,
                                          nameHashKey: SipHash24(key0: random.next(), key1: random.next()),
                                          progress: progress)
        } catch {
            // Said as format 1 only while its bytes are (a crash-safe upgrade is format 1
            // until its second slot; a failure syncing that slot may leave either).
            let stillFormatOne: Bool
            if case .image? = try? ImageIdentity.read(storage) { stillFormatOne = true } else { stillFormatOne = false }
            throw explained(error, path: path, stillFormatOne: stillFormatOne)
        }
    }

    /// An upgrade's failure, said as what it means for the image: it is still format 1
    /// (the upgrade is crash-safe: until its second slot is durable the image is format
    /// 1), and `--format 1` mounts it as it is. Unchanged when its bytes are no longer
    /// format 1's.
    static func explained(_ error: FSError, path: String, stillFormatOne: Bool) -> FSError {
        guard stillFormatOne else { return error }
        let keep = "'\(path)' is still a format 1 image; `offloadfs mount --format 1` mounts it without upgrading"
        switch error {
        case .noSpace, .system(errno: ENOSPC, call: _), .system(errno: EDQUOT, call: _):
            return .invalidArgument("no room to upgrade '\(path)' to format 2 (its new tree needs free space inside "
                                    + "the capacity and on the disk under it): mount it once with a larger --size, "
                                    + "or free space on that disk; \(keep)")
        case .damagedImage(let why):
            return .damagedImage("\(why); \(keep)")
        case .invalidArgument(let why):
            return .invalidArgument("\(why); \(keep)")
        default:
            return error
        }
    }
}
