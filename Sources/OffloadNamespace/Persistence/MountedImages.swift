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

    /// Upgrades the format 1 image at `path` to format 2 in place and opens it: format 1's
    /// own recovery and clean unmount first (its journal replayed, orphans freed, both
    /// superblock copies the same commit), then `TreeVolume.upgrade`, which is crash-safe
    /// (until its second slot is durable the image is format 1; run again, it upgrades
    /// again). Costs one format 1 mount more than the upgrade itself, once.
    static func upgrade(path: String, capacity: CapacityRequest, memoryLimiter: MemoryLimiter,
                        meter: ProgressMeter?) throws(FSError) -> VolumeFileSystem {
        let started = DispatchTime.now()
        var report: ImageFileSystem.OpenReport
        do {
            let formatOne = try ImageFileSystem.open(path: path, capacity: capacity, memoryLimiter: memoryLimiter,
                                                     meter: meter)
            report = formatOne.report
            try formatOne.close(meter: meter)
        }
        let volume = try upgradedVolume(path: path, meter: meter)
        // Format 1's recovery and the upgrade's generation (about 2 KB an inode at their
        // peak) are gone now; give their pages back, or the daemon would keep them for
        // its whole life (glibc keeps freed memory in its arenas: 1.5 GiB after
        // upgrading 1,000,000 files).
        _ = offloadfs_release_free_memory()
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: memoryLimiter)
        report.upgradedFromFormatOne = true
        report.seconds = ImageFileSystem.seconds(since: started)
        return VolumeFileSystem(volume: volume, namespace: namespace, report: report)
    }

    /// The upgrade itself (`TreeVolume.upgrade`), on format 1's recovery read again after
    /// its clean unmount; everything it read is released when it returns.
    private static func upgradedVolume(path: String, meter: ProgressMeter?) throws(FSError) -> TreeVolume {
        let storage = try FileImageStorage(path: path)
        guard case .image(let superblock, _) = try ImageIdentity.read(storage) else {
            throw .damagedImage("'\(path)' is no longer a format 1 image after its format 1 unmount")
        }
        let read = { (offset: UInt64, count: Int) in storage.readBytes(at: offset, count: count) }
        // Read and checked again as format 1's recovery does, with its progress (at 1M
        // files these take about 10 s, which the mount's waiters must see move).
        meter?.begin(ImageFileSystem.Phase.readingMetadata, unit: .bytes)
        let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length, read: read,
                                          progress: { meter?.update(done: $0, total: $1) })
        meter?.begin(ImageFileSystem.Phase.checking)
        let analysis = ImageAnalysis(replay, fileBytes: storage.length, meter: meter)
        let previous = ImageReplay.previousCommitSegments(of: superblock, fileBytes: storage.length, read: read)
        meter?.begin(VolumeFileSystem.Phase.upgrading)
        var random = SystemRandomNumberGenerator()
        let progress = meter.map { meter in
            CommitProgress(began: { step in meter.begin("\(VolumeFileSystem.Phase.upgrading): \(step.rawValue)") }) { done, total in
                meter.update(done: UInt64(done), total: UInt64(total))
            }
        }
        do {
            return try TreeVolume.upgrade(storage, from: replay, analysis: analysis, previousSegments: previous,
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
