/// How the daemon's last act went, as `offloadfs unmount` learns it once the daemon has let
/// go of the image.
///
/// The channel is the image itself: the daemon is not our child (a background mount's
/// parent exited long ago), so its exit status is out of reach, but before it exits it
/// either writes its final checkpoint with the superblocks marked cleanly unmounted, or
/// records in them why it could not (`Superblock.unmountError`, see docs/FORMAT.md); on
/// format 2 its last commit slot is marked clean, or not (format 2 records no errno). So
/// after the daemon's lock on the image is gone, one read of the superblock says which.
/// A read-only mount writes nothing, so there is nothing to read.
enum UnmountOutcome: Equatable {
    case clean
    /// The daemon was already gone before the unmount (killed): nothing to report but that.
    case daemonHadDied
    /// One line saying why, for "MOUNTPOINT is unmounted, but ...".
    case failed(String)

    /// `reported`: why the daemon said its final commit failed (format 2's status
    /// socket), for an image that records no reason.
    static func read(image: String, readOnly: Bool, daemonWasRunning: Bool, reported: String? = nil) -> UnmountOutcome {
        guard !readOnly else { return .clean }
        guard daemonWasRunning else { return .daemonHadDied }
        guard let record = ImageAdvice.unmountRecord(of: image) else {
            return .failed("\(image) can no longer be read as an offloadfs image")
        }
        if record.error != 0 {
            return .failed(ImageAdvice.unmountFailure(errno: Int32(clamping: record.error), image: image))
        }
        if !record.clean {
            if let reported { return .failed(reported) }
            return .failed("the daemon ended without writing the final checkpoint (or, on format 2, commit) of \(image) "
                           + "(nor why: was it killed?); the journal still holds every change, and the next mount replays it")
        }
        return .clean
    }
}
