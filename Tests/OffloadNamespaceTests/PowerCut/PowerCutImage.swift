import Glibc
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation

/// One image as the power-cut test drives it, in either format: what the workload and
/// the checks need beyond `FileSystemOperations` (making and recovering the image on a
/// storage, the maintenance step, snapshots of the tree, a file's extents for failure
/// reports, and fsck after the clean close).
///
/// Format 1 is `ImageFileSystem` (the namespace in RAM, a checkpoint plus a journal);
/// format 2 is `VolumeFileSystem` (the tree in the image, a journal after its last commit).
enum PowerCutImage {
    case one(ImageFileSystem)
    case two(VolumeFileSystem)

    var format: ImageFormat {
        switch self {
        case .one: return .one
        case .two: return .two
        }
    }

    var operations: any FileSystemOperations {
        switch self {
        case .one(let fileSystem): return fileSystem.namespace
        case .two(let fileSystem): return fileSystem.namespace
        }
    }

    /// A new, empty image on `storage`.
    static func create(_ format: ImageFormat, storage: CrashSimulatingStorage, capacity: UInt64,
                       memoryLimit: Int) throws(FSError) -> PowerCutImage {
        let limiter = MemoryLimiter(limitBytes: memoryLimit)
        switch format {
        case .one:
            return .one(try ImageFileSystem.open(storage: storage, capacityBytes: capacity, memoryLimiter: limiter))
        case .two:
            return .two(try VolumeFileSystem.create(storage: storage, capacity: .set(capacity), memoryLimiter: limiter))
        }
    }

    /// What recovering a crash image gave.
    enum Recovery {
        case opened(PowerCutImage)
        /// Recovery refused the image as damaged; `violation` says what became of it.
        case refused(violation: String)
        case failed(violation: String)
    }

    /// What `offloadfs fsck` says of the crash image on `storage` before any mount, when it
    /// is not clean (nil: clean). Format 2 only: its check replays the journal's tail in
    /// memory (`VolumeCheck.runReplaying`) and must write nothing; a replay whose commit
    /// found no room is left unchecked, as fsck leaves it. Format 1's fsck replays
    /// nothing and its analysis runs after recovery (`closeAndCheck`).
    static func checkBeforeRecovery(_ format: ImageFormat, storage: CrashSimulatingStorage) -> String? {
        guard format == .two else { return nil }
        let before = storage.unsyncedPageCount
        let length = storage.length
        let report: VolumeCheck.Report
        do {
            report = try VolumeCheck.runReplaying(storage)
        } catch {
            return "fsck before recovery: \(error)"
        }
        guard storage.unsyncedPageCount == before, storage.length == length else {
            return "fsck before recovery wrote the image"
        }
        if case .notChecked(let why) = report.replay, report.isClean, why.contains("does not fit") { return nil }
        guard report.isClean else { return "fsck before recovery: \(report.problems.prefix(3).joined(separator: "; "))" }
        return nil
    }

    /// Recovers the crash image on `storage`, as the next mount would.
    static func recover(_ format: ImageFormat, storage: CrashSimulatingStorage, capacity: UInt64) -> Recovery {
        let limiter = MemoryLimiter(limitBytes: 64 << 10)
        switch format {
        case .one:
            do {
                return .opened(.one(try ImageFileSystem.open(storage: storage, capacityBytes: capacity, memoryLimiter: limiter)))
            } catch .damagedImage(let why) {
                do {
                    _ = try ImageFileSystem.open(storage: storage, capacityBytes: capacity, memoryLimiter: limiter, repair: true)
                    return .refused(violation: "recovery refused the image (\(why)); repair opened it")
                } catch {
                    return .refused(violation: "recovery refused the image (\(why)) and repair failed: \(error)")
                }
            } catch {
                return .failed(violation: "recovery failed: \(error)")
            }
        case .two:
            do {
                return .opened(.two(try VolumeFileSystem.open(storage: storage, capacity: .kept(default: capacity),
                                                              memoryLimiter: limiter)))
            } catch .damagedImage(let why) {
                // Format 2 has no repair yet: a refusal is a lost image.
                return .refused(violation: "recovery refused the image (\(why)); format 2 has no repair")
            } catch {
                return .failed(violation: "recovery failed: \(error)")
            }
        }
    }

    /// Waits for what the image does in the background: format 2's punch of the blocks
    /// a commit freed, which runs on a queue of its own after the commit returns (the next
    /// commit would wait for it; `waitForPunches` is that wait, earlier). Called at the
    /// end of each operation of the run, so a cut taken before one of the punch's changes
    /// is taken while the operation that started it is in progress: a cut later than the
    /// label it was given (it read the run's progress before copying the images) could
    /// hold the next operation's changes.
    func waitForBackgroundWork() {
        if case .two(let fileSystem) = self { fileSystem.volume.waitForPunches() }
    }

    /// The maintenance a mount runs in the background, at one of its two kinds of moments:
    /// format 1's sync and reclaim of freed blocks (`checkpoint` false) or its checkpoint;
    /// format 2 has one, the tick's commit of what changed. Returns details for the
    /// workload's line (`maintenanceName`).
    func maintenance(checkpoint: Bool) throws(FSError) -> String {
        switch self {
        case .one(let fileSystem):
            if checkpoint {
                try fileSystem.journal!.checkpoint(fileSystem.namespace)
            } else {
                try fileSystem.store.syncAndReclaim()
            }
            return ""
        case .two(let fileSystem):
            guard let commit = try fileSystem.namespace.commitIfChanged() else { return " (nothing changed)" }
            return " \(commit.generation)"
        }
    }

    func maintenanceName(checkpoint: Bool) -> String {
        switch self {
        case .one: return checkpoint ? "checkpoint" : "maintenance sync"
        case .two: return "commit"
        }
    }

    /// The whole tree, with the bytes of the `open` files that have no name.
    func snapshot(open: [InodeNumber] = []) throws(FSError) -> TreeSnapshot {
        switch self {
        case .one(let fileSystem):
            return try TreeSnapshot(fileSystem.namespace, open: open)
        case .two(let fileSystem):
            // The read path is one memcpy per extent already (format 1's gathers byte by
            // byte, hence its table read), through a handle of the snapshot's own: opening
            // writes nothing, and the file has a name or is open elsewhere, so closing the
            // handle writes nothing either.
            let fs = fileSystem.namespace
            return try TreeSnapshot(fs, open: open) { (number, size) throws(FSError) -> [UInt8]? in
                var count = size
                if count == nil {
                    let attributes = try fs.getattr(inode: number)
                    guard attributes.kind == .regular else { return nil }
                    count = attributes.size
                }
                let handle = try fs.open(inode: number, flags: O_RDONLY)
                defer { fs.release(inode: number, handle: handle) }
                return try fs.read(inode: number, handle: handle, offset: 0, count: Int(count!))
            }
        }
    }

    /// A file's extents, for failure reports: format 2's cached file's when it is held,
    /// else its committed extents with the delta's file ranges.
    func extents(of inode: UInt64) -> String {
        func line(_ list: [(offset: UInt64, extent: Extent)]) -> String {
            list.map { "\($0.offset)+\($0.extent.size):\($0.extent)" }.joined(separator: " ")
        }
        switch self {
        case .one(let fileSystem):
            return fileSystem.namespace.regularFileData(InodeNumber(inode)).map { line($0.extentList) } ?? "(gone)"
        case .two(let fileSystem):
            let fs = fileSystem.namespace
            return fs.lock.withWriteLock { () -> String in
                if let cached = fs.cachedFiles[inode] { return "cached: " + line(cached.data.extentList) }
                guard let taken = try? fs.readers.take() else { return "(gone)" }
                defer { fs.readers.give(taken) }
                guard let item = try? taken.reader.inode(inode),
                      let pieces = try? taken.reader.view.filePieces(inode, size: item.size) else { return "(gone)" }
                return "committed: " + line(pieces.map { ($0.offset, $0.extent) })
            }
        }
    }

    /// Closes the recovered image cleanly (an unmount), then returns what `offloadfs
    /// fsck` would report about it, or nil when it is clean.
    func closeAndCheck(_ storage: CrashSimulatingStorage) throws(FSError) -> String? {
        switch self {
        case .one(let fileSystem):
            try fileSystem.close()
            do {
                guard case .image(let superblock, _) = try ImageIdentity.read(storage) else {
                    return "fsck: no superblock after close"
                }
                let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length,
                                                  read: { storage.readBytes(at: $0, count: $1) })
                let analysis = ImageAnalysis(replay, fileBytes: storage.length)
                return analysis.isClean ? nil : "fsck after recovery: \(analysis.problems.prefix(3).joined(separator: "; "))"
            } catch {
                return "fsck after recovery: \(error)"
            }
        case .two(let fileSystem):
            try fileSystem.close(meter: nil)
            do {
                let report = try VolumeCheck.run(storage)
                return report.isClean ? nil : "fsck after recovery: \(report.problems.prefix(3).joined(separator: "; "))"
            } catch {
                return "fsck after recovery: \(error)"
            }
        }
    }
}
