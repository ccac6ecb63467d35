import ArgumentParser
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// Read-only access to an unmounted image for `fsck` and `info`: opened O_RDONLY, read
/// with pread only, and refused while a daemon holds it (its exclusive flock).
struct ImageInspection {
    let path: String
    let fd: Int32
    let superblock: Superblock
    let otherCopyAgrees: Bool
    /// Block 0 holds format 2's first commit slot, block 1 format 1's superblock.
    let upgradeWasCutShort: Bool
    let fileBytes: UInt64
    let diskBytes: UInt64

    /// Exit status when the image cannot be checked at all.
    static let cannotCheck: Int32 = 2

    init(path: String) throws(ImageInspectionError) {
        // O_NONBLOCK: a FIFO's open for reading waits for a writer (fsck and info of one
        // hung); the check below refuses it. Reads of a regular file ignore the flag.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { throw ImageInspectionError("cannot open \(path): \(String(cString: strerror(errno)))") }
        var keep = false
        defer { if !keep { _ = Glibc.close(fd) } }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw ImageInspectionError("\(path) is not a regular file")
        }
        // The daemon holds LOCK_EX for as long as it serves the image.
        guard flock(fd, LOCK_SH | LOCK_NB) == 0 else {
            throw ImageInspectionError("image \(path) is in use by a running offloadfs (mounted read-write)"
                                       + ImageLockHolders.describe(ofImage: path) + "; unmount it first")
        }
        let identity: ImageIdentity
        do {
            identity = try ImageIdentity.read(fd: fd)
        } catch {
            throw ImageInspectionError("cannot read \(path): \(error)")
        }
        switch identity {
        case .empty:
            throw ImageInspectionError("\(path) is empty: not an offloadfs image yet (mount creates one)")
        case .foreign:
            throw ImageInspectionError("\(path) is not an offloadfs image (no offloadfs superblock)")
        case .versionZero:
            throw ImageInspectionError("\(path) is a format version 0 image, which keeps no files; mounting it starts it afresh")
        case .newerVersion(let version):
            throw ImageInspectionError("image \(path) was written by a newer offloadfs (\(Superblock.versionName(version))); "
                                       + "this one reads formats 1 and 2")
        case .damaged(let why):
            throw ImageInspectionError("image \(path): \(why); no superblock to start from (`offloadfs mount --fresh` starts it empty)")
        case .image(let superblock, let agrees):
            self.superblock = superblock
            self.otherCopyAgrees = agrees
            self.upgradeWasCutShort = !agrees && ((try? ImageIdentity.upgradeWasCutShort(fd: fd)) ?? false)
        }
        self.path = path
        self.fd = fd
        self.fileBytes = UInt64(info.st_size)
        self.diskBytes = UInt64(info.st_blocks) * 512
        keep = true
    }

    /// The inspection, or the reason it is impossible on stderr and exit status 2.
    static func openOrExit(path: String) throws -> ImageInspection {
        do {
            return try ImageInspection(path: path)
        } catch {
            printError(error.message)
            throw ExitCode(cannotCheck)
        }
    }

    func close() { _ = Glibc.close(fd) }

    /// Replays the image's metadata (read-only), showing progress on a terminal when
    /// it takes more than a second.
    func replay() throws(FSError) -> ImageReplay {
        let progress = TerminalProgress(label: "reading metadata")
        defer { progress.finish() }
        let fd = self.fd
        return try ImageReplay.load(superblock: superblock, fileBytes: fileBytes,
                                    read: { BackingStore.readBytes(fd: fd, at: $0, count: $1) },
                                    progress: { progress.update($0, of: $1) })
    }
}

extension ImageInspection {
    /// What the next read-write mount does to this format 1 image.
    var upgradeNote: String {
        upgradeWasCutShort
            ? "an upgrade to format 2 was cut short (block 0 holds its first commit, block 1 still format 1's superblock, "
                + "which the image is); the next read-write mount upgrades it again (`offloadfs mount --format 1` keeps it format 1)"
            : "to format 2 at its next read-write mount (`offloadfs mount --format 1` keeps it format 1)"
    }

    /// True when the current checkpoint lost frames and the previous commit reads back
    /// whole and reaches the present: `fsck --repair` then restores everything.
    func previousCommitRestoresEverything() -> Bool {
        let fd = self.fd
        let read: (UInt64, Int) -> [UInt8] = { BackingStore.readBytes(fd: fd, at: $0, count: $1) }
        guard let current = try? ImageReplay.load(superblock: superblock, fileBytes: fileBytes, read: read, salvage: true),
              let previous = ImageReplay.loadPrevious(of: superblock, fileBytes: fileBytes, read: read) else { return false }
        return ImageSalvage.canMerge(previous, into: current) && previous.provenance?.lostCheckpointFrames == 0
    }
}

struct ImageInspectionError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// "label: 12 / 80 MiB" (or any text) on stderr, rewritten in place, only on a terminal
/// and only once the work has taken a second.
final class TerminalProgress {
    private let label: String
    private let start = TerminalProgress.now()
    private var shown = false
    private var lastUpdate = 0.0
    private let enabled = isatty(STDERR_FILENO) == 1

    init(label: String) { self.label = label }

    func update(_ done: UInt64, of total: UInt64) {
        show("\(done >> 20) / \(max(total, done) >> 20) MiB")
    }

    /// Shows "label: text" in place of the previous line.
    func show(_ text: String) {
        guard enabled else { return }
        let now = Self.now()
        guard now - start > 1, now - lastUpdate > 0.1 else { return }
        lastUpdate = now
        shown = true
        let line = "\r\u{1B}[K\(label): \(text)"
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }

    func finish() {
        if shown { _ = "\r\u{1B}[K".withCString { write(STDERR_FILENO, $0, strlen($0)) } }
    }

    private static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}
