import ArgumentParser
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs fsck` of a format 2 image (`VolumeCheck`). Format 2 is in development:
/// `offloadfs mount --format 2` and `offloadfs-genimage --format 2` make images of it.
/// The check only reads; repair of format 2 is not written yet.
enum FormatTwoFsck {
    /// True when the image at `path` holds format 2's commit slots (and no format 1
    /// superblock copy: an image with one is format 1, maybe half upgraded).
    static func isFormatTwo(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return (try? ImageIdentity.read(fd: fd)) == .newerVersion(CommitSlot.version)
    }

    static func run(image: String, repair: Bool) throws {
        guard !repair else {
            printError("\(image): a format 2 image; `fsck --repair` does not repair format 2 yet (the check without --repair does)")
            throw ExitCode(ImageInspection.cannotCheck)
        }
        let report: VolumeCheck.Report
        do {
            // Shared lock: refused while a daemon has the image.
            let storage = try FileImageStorage(path: image, readOnly: true)
            var progress: (phase: String, bar: TerminalProgress)?
            report = try VolumeCheck.run(storage) { phase, done, total in
                if progress?.phase != phase {
                    progress?.bar.finish()
                    progress = (phase, TerminalProgress(label: phase))
                }
                progress?.bar.show(total > 0 ? "\(done * 100 / total)%" : "\(done)")
            }
            progress?.bar.finish()
        } catch .busy {
            printError("image \(image) is in use by a running offloadfs (mounted read-write); unmount it first")
            throw ExitCode(ImageInspection.cannotCheck)
        } catch {
            printError("\(image): \(error)")
            throw ExitCode(ImageInspection.cannotCheck)
        }
        for problem in report.problems { writeLine("problem: \(problem)", to: STDOUT_FILENO) }
        if report.problemCount > report.problems.count {
            writeLine("... and \(report.problemCount - report.problems.count) more problems", to: STDOUT_FILENO)
        }
        writeLine("\(image): format 2, \(report.inodes) inodes, \(report.directories) directories, \(report.names) names, "
                  + "\(report.extents) extents, \(report.filesystemNodes + report.blockTreeNodes) tree nodes; "
                  + (report.isClean ? "clean" : "\(report.problemCount) problems"), to: STDOUT_FILENO)
        if !report.isClean { throw ExitCode(1) }
    }
}
