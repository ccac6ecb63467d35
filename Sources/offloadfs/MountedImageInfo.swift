import FuseBridge
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs info` of an image that is mounted: where, and the live figures.
///
/// The full report (file counts, journal, reclaimable space) replays the metadata, which
/// needs the image at rest: a daemon changes it meanwhile. A mounted image's own figures
/// are right there instead: statfs of the mount point is answered by the daemon from its
/// allocator (what `df` shows), and the superblock and the file's size can be read
/// without the lock the daemon holds (two preads; the daemon writes a superblock copy in
/// one pwrite, and the newest valid copy is taken). `offloadfs status` (the daemon's own
/// channel) is the place for more.
enum MountedImageInfo {
    /// The offloadfs mount serving the image at `path` (resolved, as the mount's source
    /// is), if there is one in this mount namespace: the source spelt as `path` first, else
    /// compared by device and inode (another spelling). Those stats give up after
    /// `BoundedPathCall.defaultSeconds`: a mount whose image lies under a hung mount is
    /// not this one's, and must not hang the command.
    static func mount(ofImage path: String) -> MountTable.Entry? {
        var image = stat()
        guard stat(path, &image) == 0 else { return nil }
        let mounts = MountTable.entries().filter { $0.type == "fuse.offloadfs" }
        if let entry = mounts.last(where: { $0.source == path }) { return entry }
        return mounts.last { entry in
            guard let source = BoundedPathCall.fileStatus(entry.source) else { return false }
            return source.st_dev == image.st_dev && source.st_ino == image.st_ino
        }
    }

    /// The `key: value` lines for the image `typed` (resolved to `path`) mounted at `entry`.
    static func lines(typed: String, path: String, mountPoint: String) -> [(String, String)] {
        var lines: [(String, String)] = [("image", typed), ("mounted at", mountPoint)]
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)  // a FIFO's open would wait for a writer
        var file = stat()
        // Whether the capacity is kept (`--size`) or the mount's default, as the last
        // superblock or commit slot says.
        var capacityIsSet: Bool?
        if fd >= 0 {
            defer { close(fd) }
            if case .image(let superblock, _)? = try? ImageIdentity.read(fd: fd) {
                lines += [("format version", "\(Superblock.version)"),
                          ("image id", String(superblock.imageID, radix: 16)),
                          ("generation", "\(superblock.generation)")]
                capacityIsSet = superblock.capacityIsSet
            } else if (try? ImageIdentity.read(fd: fd)) == .newerVersion(CommitSlot.version) {
                // Format 2: the commit slots, read with pread (the daemon holds the lock).
                lines.append(("format version", "2"))
                if let current = try? CommitSlots.read(fd: fd).current {
                    lines += [("image id", String(current.imageID, radix: 16)), ("generation", "\(current.generation)")]
                    capacityIsSet = current.capacityIsSet
                }
            }
            _ = fstat(fd, &file)
        }
        // Answered by the daemon: bounded, for a daemon that is stopped or hung.
        let answer = BoundedPathCall.fileSystemStatusOrError(mountPoint)
        let live = try? answer?.get()
        if let live {
            let unit = UInt64(live.f_frsize)
            lines.append(("capacity bytes", "\(UInt64(live.f_blocks) * unit)"))
            if let capacityIsSet { lines.append(("capacity set by", InfoCommand.capacitySource(isSet: capacityIsSet))) }
            lines += [("used bytes", "\(UInt64(live.f_blocks - live.f_bfree) * unit)"),
                      ("free bytes", "\(UInt64(live.f_bavail) * unit)"),
                      ("inodes", "\(UInt64(live.f_files - live.f_ffree))")]
        }
        if fd >= 0 {
            lines += [("image file bytes", "\(file.st_size)"), ("disk bytes", "\(UInt64(file.st_blocks) * 512)")]
        }
        let figures: String
        switch answer {
        case .success?: figures = "live, from the mounted filesystem; unmount it for the full report"
        case .failure(let error)? where error.value == ENOTCONN:
            // A dead mount answers at once: it was said not to answer within 2 s.
            figures = "none: the mount's daemon is gone (killed, or it crashed); `offloadfs unmount \(mountPoint)` clears it"
        case .failure(let error)?: figures = "none: statfs of the mount failed (\(String(cString: strerror(error.value))))"
        case nil:
            figures = "none: the mount did not answer statfs within \(Int(BoundedPathCall.defaultSeconds)) s (is its daemon stopped or hung? `offloadfs status` shows it)"
        }
        lines.append(("figures", figures))
        return lines
    }
}
