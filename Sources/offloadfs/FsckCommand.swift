import ArgumentParser
import OffloadCore
import OffloadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs fsck IMAGE [--repair]`.
struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Check an unmounted image; with --repair, fix what the check finds.",
        discussion: """
            Checks the superblocks and every metadata frame's checksum, that every file \
            extent lies inside the image and off the metadata, that each directory is \
            reached once from the root, that entries name existing inodes, and that link \
            counts match the entries. Without --repair the image is only read. \
            On a format 2 image, --repair goes back to the previous commit with the journal \
            since it replayed when the last commit's tree nodes do not read and the previous \
            one checks clean; otherwise it rebuilds both trees from every item that still \
            reads (a damaged block loses only what it held), repairs names and link counts, \
            moves files left without a name to /lost+found and recounts block references, \
            all in free blocks: a crash during repair leaves the image as it was. \
            Exit status: 0 clean, 1 problems found (or repaired, with --repair), \
            2 the image could not be checked (missing, foreign, in use, no superblock), \
            64 a mistake in the command line (no image, or two), as for every offloadfs \
            command.
            """
    )

    @Argument(help: "The image file.")
    var image: String

    @Flag(name: .long, help: "Fix the problems found: restore damaged metadata from the previous checkpoint, drop what cannot be reached safely, put unreachable files in /lost+found; print every affected file by path.")
    var repair = false

    func run() throws {
        let image = try ImagePath.resolveOrExit(self.image, status: ImageInspection.cannotCheck)
        if FormatTwoFsck.isFormatTwo(image) { return try FormatTwoFsck.run(image: image, repair: repair) }
        let inspection = try ImageInspection.openOrExit(path: image)
        if repair {
            let capacity = max(inspection.superblock.capacityBytes, UInt64(BackingStore.blockSize))
            inspection.close()
            // The image's own capacity: kept as it is (set, or a default of its last mount).
            try runRepair(image: image, capacity: .kept(default: capacity))
            return
        }
        defer { inspection.close() }
        var problems: [String] = []
        var notes: [String] = []
        if inspection.upgradeWasCutShort {
            notes.append("upgrade: \(inspection.upgradeNote)")
        } else if !inspection.otherCopyAgrees {
            // A crash between writing the two copies leaves them different too; mount
            // uses the newest valid one and its next checkpoint rewrites both.
            notes.append("the two superblock copies differ (one was torn by a crash or is damaged); the next mount rewrites both")
        }
        let replay: ImageReplay
        do {
            replay = try inspection.replay()
        } catch {
            printError("\(image): \(error)")
            let remedy = inspection.previousCommitRestoresEverything()
                ? "restores everything from the previous checkpoint" : "salvages what it can"
            writeLine("\(image): damaged; `offloadfs fsck --repair \(image)` \(remedy)", to: STDOUT_FILENO)
            throw ExitCode(1)
        }
        let analysis = ImageAnalysis(replay, fileBytes: inspection.fileBytes)
        problems += analysis.problems
        notes += analysis.notes
        for note in notes { writeLine("note: \(note)", to: STDOUT_FILENO) }
        for problem in problems { writeLine("problem: \(problem)", to: STDOUT_FILENO) }
        writeLine("\(image): generation \(inspection.superblock.generation), \(analysis.files) files, "
                  + "\(analysis.directories) directories, \(analysis.symlinks) symlinks, \(analysis.others) other; "
                  + (problems.isEmpty ? "clean" : FormatTwoFsck.problems(problems.count)), to: STDOUT_FILENO)
        if !problems.isEmpty { throw ExitCode(1) }
    }

    private func runRepair(image: String, capacity: CapacityRequest) throws {
        do {
            let fileSystem = try ImageFileSystem.open(
                path: image, capacity: capacity,
                memoryLimiter: MemoryLimiter(limitBytes: 64 << 20), repair: true)
            try fileSystem.close()
            for line in fileSystem.report.repairs { writeLine("repaired: \(line)", to: STDOUT_FILENO) }
            // Every file the repair restored, emptied, cut short, moved or unnamed, by path.
            for line in fileSystem.report.affected { writeLine(line, to: STDOUT_FILENO) }
            if fileSystem.report.orphansFreed > 0 {
                writeLine("freed \(fileSystem.report.orphansFreed) inodes that had no name", to: STDOUT_FILENO)
            }
            writeLine("\(image): \(fileSystem.report.inodes) inodes; "
                      + (fileSystem.report.repairs.isEmpty ? "clean" : "repaired"), to: STDOUT_FILENO)
            if !fileSystem.report.repairs.isEmpty { throw ExitCode(1) }
        } catch let error as FSError {
            printError("\(image): cannot repair: \(error)")
            throw ExitCode(ImageInspection.cannotCheck)
        }
    }
}
