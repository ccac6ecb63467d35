import ArgumentParser
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs info IMAGE`: what an image holds, as `key: value` lines (for a mounted
/// image, where and its live figures: `MountedImageInfo`).
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show an image's format, sizes and counts.",
        discussion: """
            A format 2 image (the default) shows what its commit slot says, read in constant \
            time whatever the image holds: its generation, whether it was cleanly unmounted \
            and how its last unmount ended, its capacity, its file's size and disk use, its \
            inode count and its journal's head (`offloadfs fsck` walks its trees and counts \
            files, directories, names and extents). A format 1 image shows counts from a \
            replay of it: live data, bytes of blocks files reference; metadata, checkpoint \
            and journal; reclaimable, disk space the image file holds beyond those (freed \
            blocks not yet given back, given back at the next mount). For a mounted image: \
            where it is mounted, and the live capacity, used and free bytes and inodes of the \
            mount (as df shows them) instead of the counts, which need the image at rest.
            """
    )

    @Argument(help: "The image file.")
    var image: String

    func run() throws {
        let path = try ImagePath.resolveOrExit(image, status: ImageInspection.cannotCheck)
        if let mount = MountedImageInfo.mount(ofImage: path) {
            for (key, value) in MountedImageInfo.lines(typed: image, path: path, mountPoint: mount.mountPoint) {
                writeLine("\(key): \(value)", to: STDOUT_FILENO)
            }
            return
        }
        if FormatTwoFsck.isFormatTwo(path) { return try Self.formatTwo(path: path, typed: image) }
        let inspection = try ImageInspection.openOrExit(path: path)
        defer { inspection.close() }
        let replay: ImageReplay
        do {
            replay = try inspection.replay()
        } catch {
            printError("\(image): \(error)")
            throw ExitCode(1)
        }
        let analysis = ImageAnalysis(replay, fileBytes: inspection.fileBytes)
        let s = inspection.superblock
        let block = UInt64(BackingStore.blockSize)
        let used = analysis.dataBytes + analysis.metadataBytes + Superblock.blocks * block
        let lines: [(String, String)] = [
            ("image", image),
            ("format version", "\(Superblock.version)"),
            // Format 2 is the default: say what the next mount does to this image.
            ("upgrade", inspection.upgradeNote),
            ("image id", String(s.imageID, radix: 16)),
            ("generation", "\(s.generation)"),
            ("cleanly unmounted", s.cleanlyUnmounted ? "yes" : "no"),
            ("last unmount", Self.lastUnmount(s, image: image)),
            ("capacity bytes", "\(s.capacityBytes)"),
            ("capacity set by", Self.capacitySource(isSet: s.capacityIsSet)),
            ("image file bytes", "\(inspection.fileBytes)"),
            ("disk bytes", "\(inspection.diskBytes)"),
            ("live data bytes", "\(analysis.dataBytes)"),
            ("metadata bytes", "\(analysis.metadataBytes)"),
            ("free bytes", "\(s.capacityBytes > used ? s.capacityBytes - used : 0)"),
            ("reclaimable bytes", "\(inspection.diskBytes > used ? inspection.diskBytes - used : 0)"),
            ("shared blocks", "\(analysis.sharedBlocks)"),
            ("inodes", "\(analysis.reachable.count)"),
            ("files", "\(analysis.files)"),
            ("directories", "\(analysis.directories)"),
            ("symlinks", "\(analysis.symlinks)"),
            ("other inodes", "\(analysis.others)"),
            ("journal frames", "\(replay.journalFrames)"),
            ("journal bytes", "\(replay.journalBytes)"),
            ("checkpoint bytes", "\(replay.checkpointBytes)"),
            ("problems", "\(analysis.problems.count)"),
        ]
        for (key, value) in lines { writeLine("\(key): \(value)", to: STDOUT_FILENO) }
    }

    /// Where an image's capacity comes from, in both formats.
    static func capacitySource(isSet: Bool) -> String {
        isSet ? "--size (kept for later mounts)" : "default (free space of the filesystem holding the image, at each mount)"
    }

    static func lastUnmount(_ s: Superblock, image: String) -> String {
        if s.cleanlyUnmounted { return "clean" }
        if s.unmountError != 0 {
            return "failed: " + ImageAdvice.unmountFailure(errno: Int32(clamping: s.unmountError), image: image)
        }
        return "none: the daemon stopped without unmounting; the next mount replays the journal"
    }

    /// A format 2 image: what its current commit slot says.
    static func formatTwo(path: String, typed image: String) throws {
        let slot: CommitSlot
        let storage: FileImageStorage
        do {
            storage = try FileImageStorage(path: path, readOnly: true)
            slot = try CommitSlots.read(storage).current
        } catch .busy {
            // Held by a process the mount table does not show (a daemon detached lazily,
            // a repair): it printed "device or resource busy".
            printError("image \(image) is in use by a running offloadfs" + ImageLockHolders.describe(ofImage: path))
            throw ExitCode(1)
        } catch {
            printError("\(image): \(error)")
            throw ExitCode(1)
        }
        let lines: [(String, String)] = [
            ("image", image),
            ("format version", "2"),
            ("image id", String(slot.imageID, radix: 16)),
            ("generation", "\(slot.generation)"),
            ("cleanly unmounted", slot.cleanlyUnmounted ? "yes" : "no"),
            ("last unmount", slot.cleanlyUnmounted ? "clean"
                : slot.unmountError != 0 ? "failed: " + ImageAdvice.unmountFailure(errno: Int32(clamping: slot.unmountError), image: image)
                : "none: the daemon stopped without unmounting; the next mount replays the journal"),
            ("capacity bytes", "\(slot.capacityBytes)"),
            ("capacity set by", Self.capacitySource(isSet: slot.capacityIsSet)),
            ("image file bytes", "\(storage.length)"),
            ("disk bytes", "\(storage.diskBytes)"),
            // The commit's count (orphans included), as statfs reads it.
            ("inodes", "\(slot.inodeCount)"),
            ("journal head", "byte \(slot.journal.start), a segment of \(slot.journal.length) bytes"),
        ]
        for (key, value) in lines { writeLine("\(key): \(value)", to: STDOUT_FILENO) }
    }
}
