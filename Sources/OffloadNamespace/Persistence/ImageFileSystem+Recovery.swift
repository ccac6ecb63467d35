#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import OffloadCore

// Recovery of an existing image (mount, and `fsck --repair`): replay, checks, repair and
// salvage, the allocator rebuilt, the namespace restored.

extension ImageFileSystem {
    /// What recovering an existing image gave.
    struct Recovery {
        var namespace: Namespace
        /// The chains recovery read: which to keep as the previous commit, which to free.
        var chains: NamespaceJournal.Recovered
        var nextSequence: UInt64
        /// Set when the checkpoint on disk is the whole tree already and is kept.
        var keptCheckpoint: (Superblock, [LogSegment])?
    }

    static func recover(_ superblock: Superblock, store: BackingStore, memoryLimiter: MemoryLimiter, repair: Bool,
                        meter: ProgressMeter?, started: DispatchTime,
                        report: inout OpenReport) throws(FSError) -> Recovery {
        report.previousUnmountError = superblock.unmountError
        meter?.begin(Phase.readingMetadata, unit: .bytes)
        let replay = try ImageReplay.load(superblock: superblock, fileBytes: store.fileBytes,
                                          read: store.readBytes, salvage: repair,
                                          progress: { meter?.update(done: $0, total: $1) })
        report.replaySeconds = seconds(since: started)
        report.repairs = replay.salvaged
        let now = Namespace.systemClock().record
        let salvage = repair ? salvageFromPrevious(replay, superblock: superblock, store: store, report: &report)
                             : Salvage(previous: nil, restored: [], keep: superblock.current)
        meter?.begin(Phase.checking)
        var analysis = ImageAnalysis(replay, fileBytes: store.fileBytes, meter: meter)
        var repairLog = ImageReplay.RepairLog()
        if !analysis.isClean {
            guard repair else {
                let more = analysis.problems.count > 1 ? " (and \(analysis.problems.count - 1) more problems)" : ""
                throw .damagedImage("\(analysis.problems[0])\(more); `offloadfs fsck --repair IMAGE` repairs it")
            }
            repairLog = replay.repair(analysis, now: now, uid: UInt32(getuid()), gid: UInt32(getgid()))
            report.repairs += repairLog.lines
            analysis = ImageAnalysis(replay, fileBytes: store.fileBytes)
            guard analysis.isClean else {
                throw .damagedImage("repair left problems: \(analysis.problems.prefix(3).joined(separator: "; "))")
            }
        }
        if repair {
            report.affected = ImageSalvage.describe(replay, restored: salvage.restored, repair: repairLog,
                                                    previous: salvage.previous, now: now)
        }
        report.orphansFreed = replay.inodes.count - analysis.reachable.count
        report.journalFrames = replay.journalFrames
        // Only a capacity someone set can be too small: a default one (free space plus the
        // image) that falls short means the host's disk is full, which allocating says
        // (ENOSPC). Read-only: nothing is written, so no checkpoint needs room.
        if store.capacityIsSet && !store.isReadOnly { try checkCapacity(store, holds: analysis, replay: replay) }
        meter?.begin(Phase.rebuilding)
        try store.restoreAllocation(runs: analysis.runs)
        let namespace = try Namespace.restoring(replay, analysis: analysis, store: store, memoryLimiter: memoryLimiter,
                                                meter: meter)
        report.restoreSeconds = seconds(since: started) - report.replaySeconds
        report.inodes = analysis.reachable.count

        var recovery = Recovery(namespace: namespace, chains: .nothing, nextSequence: replay.nextJournalSequence)
        if superblock.cleanlyUnmounted && replay.journalFrames == 0 && report.repairs.isEmpty
            && report.orphansFreed == 0 && superblock.checkpointFrames > 0 {
            // The checkpoint is the whole tree already: keep it.
            recovery.keptCheckpoint = (superblock, replay.checkpointSegments)
            recovery.chains.retired = replay.journalSegments
        } else {
            // The commit the tree came from becomes the previous commit at the first
            // checkpoint; every other chain read is freed then.
            let keptSegments: [LogSegment]
            switch salvage.keep {
            case superblock.current?: keptSegments = replay.checkpointSegments + replay.journalSegments
            case nil: keptSegments = []
            default: keptSegments = salvage.previous?.metadataSegments ?? []
            }
            recovery.chains = NamespaceJournal.Recovered(
                commit: salvage.keep, segments: keptSegments,
                retired: replay.metadataSegments.filter { !keptSegments.contains($0) })
        }
        return recovery
    }

    /// Refuses (before anything is written) a capacity smaller than what the image holds,
    /// data and the metadata chains read, plus room for the checkpoint this open writes
    /// and the journal chain it starts.
    private static func checkCapacity(_ store: BackingStore, holds analysis: ImageAnalysis,
                                      replay: ImageReplay) throws(FSError) {
        let block = UInt64(BackingStore.blockSize)
        let live = analysis.runs.reduce(UInt64(0)) { $0 + UInt64($1.blocks.count) } * block
        let checkpoint = max(replay.checkpointBytes, UInt64(Namespace.checkpointFrameBytes * 2))
        let needed = live + (checkpoint + block - 1) / block * block + UInt64(MetadataLog.firstJournalSegmentBytes)
        guard store.capacityBytes >= needed else {
            throw .capacityTooSmall(capacityBytes: store.capacityBytes, neededBytes: needed, liveBytes: live)
        }
    }

    /// What `salvageFromPrevious` took, and which commit the repaired tree may keep as
    /// its previous one (one that reads back whole).
    struct Salvage {
        var previous: ImageReplay?
        var restored: Set<UInt64>
        var keep: Superblock.Commit?
    }

    /// When the checkpoint lost frames (`fsck --repair`), takes what they held from the
    /// previous commit, if it reaches the present (see `ImageSalvage`).
    private static func salvageFromPrevious(_ replay: ImageReplay, superblock: Superblock, store: BackingStore,
                                            report: inout OpenReport) -> Salvage {
        guard let lost = replay.provenance?.lostCheckpointFrames, lost > 0 else {
            return Salvage(previous: nil, restored: [], keep: superblock.current)
        }
        guard let previous = ImageReplay.loadPrevious(of: superblock, fileBytes: store.fileBytes, read: store.readBytes) else {
            report.repairs.append("no previous checkpoint to salvage from (the image names none)")
            return Salvage(previous: nil, restored: [], keep: nil)
        }
        guard ImageSalvage.canMerge(previous, into: replay) else {
            report.repairs.append("the previous checkpoint was not used: its journal does not lead to the present "
                                  + "(\(previous.salvaged.joined(separator: "; ")))")
            return Salvage(previous: previous, restored: [], keep: nil)
        }
        let restored = ImageSalvage.merge(previous, into: replay)
        let whole = previous.provenance?.lostCheckpointFrames == 0
        report.repairs.append("took \(restored.count) inodes from the previous checkpoint"
                              + (whole ? ", which reads back whole" : ", which is damaged too"))
        return Salvage(previous: previous, restored: restored, keep: whole ? superblock.previous : nil)
    }
}
