import Dispatch
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Notices the image file being deleted while it is mounted, and says so loudly.
///
/// The daemon keeps the deleted file open, so everything keeps working, until the
/// unmount closes the last descriptor and the kernel frees the file with every byte the
/// filesystem held. Nothing fails on the way, so without a check the loss is silent. The
/// watch holds its own read-only descriptor on the image (the same inode the store maps)
/// and looks at its link count every `interval` (the maintenance interval) and once more
/// at unmount: 0 means no name leads to the file any more. It is logged once when first
/// seen, with how to save the image while the daemon still holds it (copying it through
/// /proc/PID/fd while nothing writes gives an image that mounts like one after a crash),
/// and again at unmount, when the daemon exits non-zero.
///
/// `@unchecked Sendable`: `timer` is only touched by `start` and `stop`, both called on
/// the daemon's main thread; the timer's handler reads only immutable and atomic state.
final class ImageRemovalWatch: @unchecked Sendable {
    private let path: String
    private let mountPoint: String
    private let descriptor: Int32
    private let logger: Logger
    private var timer: DispatchSourceTimer?
    /// Whether the deletion has been logged (once is enough until the unmount).
    private let reported = Atomic<Bool>(false)

    init?(imagePath: String, mountPoint: String, logger: Logger) {
        let descriptor = open(imagePath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else {
            logger.warning("cannot watch the image for deletion", metadata: [
                "image": "\(imagePath)", "error": "\(String(cString: strerror(errno)))",
            ])
            return nil
        }
        self.path = imagePath
        self.mountPoint = mountPoint
        self.descriptor = descriptor
        self.logger = logger
    }

    deinit {
        stop()
        close(descriptor)
    }

    /// Checks every `interval` seconds from now until `stop()`.
    func start(interval: Double) {
        precondition(timer == nil, "the image watch is started once")
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "offloadfs.image-watch"))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in self?.check() }
        timer.resume()
        self.timer = timer
    }

    func stop() {
        timer?.cancel()
        timer = nil
    }

    /// True when no name leads to the image any more.
    var isDeleted: Bool {
        var status = stat()
        return fstat(descriptor, &status) == 0 && status.st_nlink == 0
    }

    /// The problem `offloadfs status` shows while the image is deleted (nil while it is not).
    var deletionProblem: String? {
        guard isDeleted else { return nil }
        return "its image \(path) was deleted while mounted: its files are lost at the unmount unless it is saved "
            + "first (cp --sparse=always /proc/\(getpid())/fd/\(descriptor) \(path).saved)"
    }

    /// Logs the deletion the first time it is seen.
    func check() {
        guard isDeleted, !reported.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let message = "the image file \(path) was deleted while mounted: everything in \(mountPoint) is lost when "
            + "it is unmounted. To keep it, stop writing to \(mountPoint) and, before unmounting, copy the image the "
            + "daemon still holds: cp --sparse=always /proc/\(getpid())/fd/\(descriptor) \(path) (mounting the copy "
            + "recovers it as after a crash)"
        logger.error("\(message)")
    }

    /// At unmount, after the last checkpoint: true (and logged) when the image was
    /// deleted, so that the daemon exits in failure.
    func reportAtUnmount() -> Bool {
        stop()
        guard isDeleted else { return false }
        let message = "the image file \(path) was deleted while mounted: the last checkpoint went to the deleted "
            + "image, and unless a copy was saved as logged before, its files are gone with it"
        logger.error("\(message)")
        return true
    }
}
