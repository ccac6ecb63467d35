import OffloadCore
import OffloadNamespace
import OffloadSimulation

/// What must hold for a format 2 image (commit slots in blocks 0 and 1), whatever its
/// bytes, checked by the fuzzer and the byte-flip tests as `HostileImageCheck.check`
/// dispatches it:
///
/// 1. fsck's check (`VolumeCheck`) gives a report, or refuses with a clear error when
///    there is no commit to check.
/// 2. Mounting it (`VolumeFileSystem.open`: the slots, the trees' roots, journal replay,
///    the orphans) either succeeds or refuses with a clear error; an image the check
///    finds clean must mount. A mounted image is walked (`ClientProbe.walk`: every
///    directory listed, every name looked up, files read, targets and xattrs read),
///    changed (`ClientProbe.changes`) and unmounted; on a damaged image any of those may
///    answer an error, on a clean one none may, and the unmounted image must check clean
///    and mount again (`mountAndUse` says how a replayed journal tail is held).
/// 3. Repairing it (`VolumeRepair`, what `fsck --repair` runs) either refuses with a
///    clear error, or leaves an image that checks clean, mounts, works, unmounts and
///    checks clean again. An image that mounts as it is must also repair.
extension HostileImageCheck {
    static func checkFormatTwo(_ original: MemoryImageStorage) throws(Violation) -> Outcome {
        var outcome = Outcome(refusal: nil, repairRefusal: nil, repairs: 0)
        let isClean: Bool
        do {
            // As fsck checks it: the tree a journal tail's replay leaves, when there is one.
            // Clean only when that tree was checked: a replay whose commit found no room
            // at the slot's capacity is not (`.notChecked`), and the harness mounts with
            // a capacity of its own, which may give that replay the room.
            let report = try VolumeCheck.runReplaying(copy(original))
            isClean = report.isClean && (report.framesToReplay == 0 || report.replay == .checked)
        } catch {
            try requireClear(error, "fsck's check")
            isClean = false
        }
        do {
            try mountAndUse(copy(original), checkedClean: isClean, after: "the mount")
        } catch let error as Violation {
            throw error
        } catch let error as FSError {
            try requireClear(error, "the mount")
            guard !isClean else { throw Violation(description: "the image checks clean, but the mount refuses it: \(error)") }
            outcome.refusal = error
        } catch {
            throw Violation(description: "the mount threw \(error)")
        }
        let repaired = copy(original)
        do {
            let report = try VolumeRepair.run(repaired)
            if report.repaired { outcome.repairs = report.repairs.count + report.affected.count }
            let after = report.after ?? report.check
            guard after.isClean else {
                throw Violation(description: "after repair the image still has \(after.problemCount) problems: \(after.problems.prefix(3))")
            }
            // (A journal tail left as it was, whose replay's commit did not fit the slot's
            // capacity, was not checked: the looser rule.)
            // (`run`, which some of repair's paths end with, leaves `replay` as it is with a
            // tail: only a checked replayed tree, or none, is strict.)
            try mountAndUse(repaired, checkedClean: after.framesToReplay == 0 || after.replay == .checked, after: "repair")
        } catch let error as Violation {
            throw error
        } catch let error as FSError {
            try requireClear(error, "repair")
            guard outcome.refusal != nil else {
                throw Violation(description: "the image mounts as it is, but repair refuses it: \(error)")
            }
            outcome.repairRefusal = error
        } catch {
            throw Violation(description: "repair threw \(error)")
        }
        return outcome
    }

    /// Mounts `storage`, walks and changes it, unmounts. Throws the mount's refusal as it
    /// is. On an image that `checkedClean` (`VolumeCheck.runReplaying`: with a journal
    /// tail, the tree its replay leaves), anything after the mount failing is a
    /// `Violation`, and the unmounted image must check clean and mount again. The one
    /// exception is a replay whose commit found no room (the image opens read-only): the
    /// check could not see that tree. Then, and on an image that did not check clean,
    /// the unmounted image must repair into one that checks clean, and if it checks clean
    /// as it is, no request may have failed on it either.
    static func mountAndUse(_ storage: MemoryImageStorage, checkedClean: Bool, after what: String) throws {
        let fileSystem = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: capacityBytes),
                                                   memoryLimiter: MemoryLimiter(limitBytes: memoryLimitBytes))
        let strict = checkedClean && (fileSystem.volume.replayedFrames == 0 || fileSystem.volume.failure == nil)
        var failed: (any Error)?
        // Before the changes, which take blocks themselves.
        let full = isFull(fileSystem)
        do {
            try ClientProbe.walk(fileSystem.operations)
            // An image with no room left for a commit is served read-only (the open's
            // warning says so): it is only read.
            if fileSystem.volume.failure == nil {
                do {
                    try ClientProbe.changes(fileSystem.operations, after: what)
                } catch let failure as ClientProbe.Failure where failure.error == .noSpace && full {
                    // A full image answers ENOSPC to changes (its extents may take every
                    // block: a hostile image's, or the repair of one).
                }
            }
        } catch let error as Violation {
            throw error
        } catch {
            // A damaged image may answer any request with an error; the unmount below
            // must still not trap.
            guard !strict else { throw Violation(description: "after \(what), on an image that checks clean: \(error)") }
            failed = error
        }
        let closed: Bool
        do {
            try fileSystem.close(meter: nil)
            closed = true
        } catch .noSpace where full {
            // The unmount's commit found no room either: nothing is lost (the journal
            // holds every answered change), and the image must still check clean below.
            closed = true
        } catch {
            guard !strict else { throw Violation(description: "after \(what), the unmount failed: \(error)") }
            closed = false
        }
        guard strict else {
            // What the replayed frames made of the tree: repair must bring it to a clean image.
            guard closed, let isClean = try? VolumeCheck.run(storage).isClean else { return }
            if isClean, checkedClean, let failed {
                throw Violation(description: "after \(what), on an image whose replayed tree checks clean: \(failed)")
            }
            guard !isClean else { return }
            let report: VolumeRepair.Report
            do {
                report = try VolumeRepair.run(storage)
            } catch {
                try requireClear(error, "repair after \(what) and an unmount")
                return
            }
            guard report.after?.isClean == true else {
                throw Violation(description: "after \(what), an unmount and a repair, the image has problems: \(report.after?.problems.prefix(3) ?? [])")
            }
            return
        }
        do {
            let after = try VolumeCheck.run(storage)
            guard after.isClean else {
                throw Violation(description: "after \(what) and an unmount, the image has \(after.problemCount) problems: \(after.problems.prefix(3))")
            }
            try VolumeFileSystem.open(storage: storage, capacity: .kept(default: capacityBytes),
                                      memoryLimiter: MemoryLimiter(limitBytes: memoryLimitBytes)).close(meter: nil)
        } catch let error as FSError {
            throw Violation(description: "after \(what) and an unmount, the image does not mount again: \(error)")
        }
    }

    /// True when the mounted image has less free space than the probe's changes take.
    private static func isFull(_ fileSystem: VolumeFileSystem) -> Bool {
        fileSystem.namespace.statfs().freeBlocks < 64
    }
}
