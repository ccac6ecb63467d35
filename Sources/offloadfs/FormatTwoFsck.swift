import ArgumentParser
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs fsck [--repair]` of a format 2 image: the check (`VolumeCheck`), and with
/// `--repair` the repair (`VolumeRepair`), which prints what it did the way format 1's
/// repair does: `repaired:` lines for what names no file, one line per file by path.
enum FormatTwoFsck {
    /// "1 problem", "3 problems" (with `more`: "1 more problem").
    static func problems(_ count: Int, more: Bool = false) -> String {
        "\(count) \(more ? "more " : "")problem\(count == 1 ? "" : "s")"
    }

    /// True when the image at `path` holds format 2's commit slots (and no format 1
    /// superblock copy: an image with one is format 1, maybe half upgraded).
    static func isFormatTwo(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)  // a FIFO's open would wait for a writer
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return (try? ImageIdentity.read(fd: fd)) == .newerVersion(CommitSlot.version)
    }

    static func run(image: String, repair: Bool) throws {
        var progress: (phase: String, bar: TerminalProgress)?
        let show: VolumeCheck.Progress = { phase, done, total in
            if progress?.phase != phase {
                progress?.bar.finish()
                progress = (phase, TerminalProgress(label: phase))
            }
            progress?.bar.show(total > 0 ? "\(done * 100 / total)%" : "\(done)")
        }
        let report: VolumeCheck.Report
        var repaired: VolumeRepair.Report?
        var unreadableSlots: [(block: UInt64, why: String)] = []
        do {
            // Shared lock to check, exclusive to repair: refused while a daemon has the image.
            let storage = try FileImageStorage(path: image, readOnly: !repair)
            if repair {
                repaired = try VolumeRepair.run(storage, progress: show)
                report = repaired!.after ?? repaired!.check
            } else {
                report = try VolumeCheck.runReplaying(storage, progress: show)
                unreadableSlots = CommitSlots.unreadable(storage)
            }
            progress?.bar.finish()
        } catch .busy {
            progress?.bar.finish()
            printError("image \(image) is in use by a running offloadfs (\(repair ? "mounted" : "mounted read-write"))"
                       + ImageLockHolders.describe(ofImage: image) + "; unmount it first")
            throw ExitCode(ImageInspection.cannotCheck)
        } catch {
            progress?.bar.finish()
            printError("\(image): \(repair ? "cannot repair: " : "")\(error)")
            throw ExitCode(ImageInspection.cannotCheck)
        }
        if let repaired, repaired.repaired {
            for problem in repaired.check.problems.prefix(20) { writeLine("found: \(problem)", to: STDOUT_FILENO) }
            if repaired.check.problemCount > 20 {
                writeLine("found: ... and \(Self.problems(repaired.check.problemCount - 20, more: true))", to: STDOUT_FILENO)
            }
            for line in repaired.repairs { writeLine("repaired: \(line)", to: STDOUT_FILENO) }
            // Every file the repair restored, emptied, cut short, moved or unnamed, by path.
            for line in repaired.affected { writeLine(line, to: STDOUT_FILENO) }
        }
        if report.framesToReplay > 0 {
            // As after a kill or a crash.
            let held = "note: the journal holds \(report.framesToReplay) operations answered after commit \(report.generation), "
                + "which the next mount replays"
            switch report.replay {
            case .checked:
                writeLine(held + "; checked as that replay leaves the tree (replayed in memory: the image is not written)",
                          to: STDOUT_FILENO)
            case .notChecked(let why):
                writeLine(held + "; not checked after the replay (\(why)): the counts below are commit \(report.generation)'s",
                          to: STDOUT_FILENO)
            case .failed, .nothingToReplay:
                writeLine(held + "; the counts below are commit \(report.generation)'s", to: STDOUT_FILENO)
            }
        }
        for (block, why) in unreadableSlots {
            writeLine("note: commit slot \(block) holds no commit (\(why)): a commit whose slot write a crash cut short, "
                      + "or damage; the image opens from commit \(report.generation), and its next commit writes that slot "
                      + "again (until then there is no previous commit to fall back to)", to: STDOUT_FILENO)
        }
        for problem in report.problems { writeLine("problem: \(problem)", to: STDOUT_FILENO) }
        if report.problemCount > report.problems.count {
            writeLine("... and \(Self.problems(report.problemCount - report.problems.count, more: true))", to: STDOUT_FILENO)
        }
        let outcome = report.isClean ? (repaired?.repaired == true ? "repaired" : "clean") : Self.problems(report.problemCount)
        writeLine("\(image): format 2, \(report.inodes) inodes, \(report.directories) directories, \(report.names) names, "
                  + "\(report.extents) extents, \(report.filesystemNodes + report.blockTreeNodes) tree nodes; "
                  + outcome, to: STDOUT_FILENO)
        if !report.isClean || repaired?.repaired == true { throw ExitCode(1) }
    }
}
