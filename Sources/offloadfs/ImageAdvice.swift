import FuseBridge
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// One-line explanations of an image's failures that say what happened and what to do,
/// rather than a bare errno: an unmount whose final checkpoint failed (recorded in the
/// image's superblock, `Superblock.unmountError`), and a mount that cannot recover.
enum ImageAdvice {
    /// The superblock `path` holds now, read with pread (nil if it is not a readable image).
    static func superblock(of path: String) -> Superblock? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)  // a FIFO's open would wait for a writer
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard case .image(let superblock, _)? = try? ImageIdentity.read(fd: fd) else { return nil }
        return superblock
    }

    /// How the image's last unmount ended: whether it was marked clean, and the errno it
    /// recorded (0: none), from format 1's superblock or format 2's current commit slot;
    /// nil when the image cannot be read.
    static func unmountRecord(of path: String) -> (clean: Bool, error: UInt32)? {
        if let superblock = superblock(of: path) { return (superblock.cleanlyUnmounted, superblock.unmountError) }
        guard let storage = try? FileImageStorage(path: path, readOnly: true),
              let slot = try? CommitSlots.read(storage).current else { return nil }
        return (slot.cleanlyUnmounted, slot.unmountError)
    }

    /// "no space left on device while writing the final checkpoint of IMAGE; ...": what
    /// the superblock's `unmountError` means and what to do about it.
    static func unmountFailure(errno code: Int32, image: String) -> String {
        "\(describe(errno: code)) while writing the final checkpoint of \(image); nothing is lost (its journal "
            + "holds every change and the next mount writes the checkpoint): \(remedy(errno: code, image: image))"
            + capacityHint(errno: code)
    }

    /// For a failure for space: the image's own capacity may be what is full, which only a
    /// larger --size helps (the upgrade hunt of the thirty-fifth session: the advice named
    /// the host disk alone, with 77 GiB free there).
    static func capacityHint(errno code: Int32) -> String {
        code == ENOSPC || code == EDQUOT ? "; if the image's own capacity is what is full, mount it again with a larger --size" : ""
    }

    /// A mount that failed with `code` while recovering `image` (recovery writes a new
    /// checkpoint, which takes disk space), and what the last unmount left, if it failed.
    static func recoveryFailure(errno code: Int32, image: String) -> String {
        var message = "\(describe(errno: code)) while recovering image \(image) (a mount writes a new checkpoint"
        if let superblock = superblock(of: image), superblock.unmountError != 0 {
            message += "; its last unmount could not write one either: "
                + describe(errno: Int32(clamping: superblock.unmountError)) + "; nothing is lost, the journal holds every change"
        }
        return message + "): " + remedy(errno: code, image: image) + capacityHint(errno: code)
    }

    /// A format 2 image's final commit (the unmount's) that failed with `code`. The journal
    /// holds every change, and the next mount replays it: but its replay commits too, so a
    /// full disk under the image must get room, and a capacity that is full must be
    /// raised (`--size`).
    static func finalCommitFailure(errno code: Int32, image: String) -> String {
        let advice = remedy(errno: code, image: image) + capacityHint(errno: code)
        return "\(describe(errno: code)) while writing the final commit of \(image); nothing is lost (its journal "
            + "holds every change and the next mount replays it): \(advice)"
    }

    /// A capacity (`--size`, or the one the image keeps) too small for what it holds:
    /// nothing was written; say how much it needs.
    static func capacityTooSmall(capacity: UInt64, needed: UInt64, live: UInt64, image: String,
                                 sizeGiven: Bool) -> String {
        let mebibyte = UInt64(1) << 20
        let suggestion = ByteSize(bytes: (needed + mebibyte - 1) / mebibyte * mebibyte)
        let what = sizeGiven ? "--size \(ByteSize(bytes: capacity))" : "the capacity \(image) keeps (\(ByteSize(bytes: capacity)))"
        // A new image holds nothing yet: "it holds 0 bytes ...; the image was not changed"
        // spoke of an image that was never made (the admin hunt of the thirty-fifth session).
        if live == 0 {
            return "\(what) is too small for a new image \(image): its metadata needs \(approximate(bytes: needed)); "
                + "use --size \(suggestion) or more (no image was made)"
        }
        return "\(what) is too small for image \(image): it holds \(approximate(bytes: live)) of files and metadata "
            + "and needs \(approximate(bytes: needed)) to mount; use --size \(suggestion) or more "
            + "(to shrink it further, delete files under a larger size first); the image was not changed"
    }

    /// A mount of an image it may not open as asked: say why, and offer `-o ro` when
    /// that would do (a read-write mount of an image that exists and may be read). An
    /// image that does not exist is to be made in a directory that refused it; a
    /// read-only mount was refused reading.
    static func cannotWrite(image: String, error: FSError, readOnlyMount: Bool = false) -> String {
        var status = stat()
        let found = stat(image, &status) == 0
        let statError = errno
        if !found && statError != ENOENT {
            let reason = String(cString: strerror(statError))
            return "cannot open image \(image): \(reason)"
                + (statError == EACCES ? " (a directory on its path may not be searched)" : "")
        }
        if !found {
            let directory = image.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            let place = directory.isEmpty ? "/" : directory
            return error == .permissionDenied
                ? "cannot create image \(image): you may not write in \(place) (permission denied); choose a directory you can write, or create the image as its owner"
                : "cannot create image \(image): the filesystem holding \(place) is mounted read-only"
        }
        if readOnlyMount || access(image, R_OK) != 0 {
            return "cannot open image \(image): you may not read it (permission denied, mode "
                + "\(String(status.st_mode & 0o7777, radix: 8)), owner uid \(status.st_uid))"
        }
        let why: String
        if error == .permissionDenied {
            why = "you may not write it (permission denied)"
        } else if stat(image, &status) == 0, status.st_mode & 0o222 == 0 {
            why = "it has no write permission (mode \(String(status.st_mode & 0o7777, radix: 8)))"
        } else {
            why = "the filesystem holding it is mounted read-only"
        }
        return "image \(image) is read-only: \(why); mount it with -o ro to read its files"
            + (error == .permissionDenied ? "" : ", or make it writable first")
    }

    /// What to do about `code` on the filesystem holding `image`.
    static func remedy(errno code: Int32, image: String) -> String {
        switch code {
        case ENOSPC, EDQUOT:
            guard let host = hostFilesystem(of: image) else { return "free space for it and mount it again" }
            return "free space on \(host.mountPoint) (\(approximate(bytes: host.freeBytes)) free) and mount it again"
        case EROFS:
            return "the filesystem holding it is read-only"
        default:
            return "check the disk holding it (dmesg), then mount it again"
        }
    }

    /// strerror's text, starting in lower case to sit inside a sentence.
    static func describe(errno code: Int32) -> String {
        let text = String(cString: strerror(code))
        return text.prefix(1).lowercased() + text.dropFirst()
    }

    /// The mount point of the filesystem that holds `path` (the highest directory above
    /// it on the same device) and that filesystem's free space for unprivileged users.
    static func hostFilesystem(of path: String) -> (mountPoint: String, freeBytes: UInt64)? {
        var status = stat()
        // Absolute first: the parent of "." is "." (`info x.img`, `info ./x.img` span for
        // ever on an image whose last unmount failed for space: the upgrade hunt of the
        // thirty-fifth session).
        var directory = Preflight.parentDirectory(of: Preflight.absolutePath(path))
        guard stat(directory, &status) == 0 else { return nil }
        let device = status.st_dev
        while directory != "/" {
            let parent = Preflight.parentDirectory(of: directory)
            // (A parent that does not go up ends the walk too.)
            guard parent != directory, stat(parent, &status) == 0, status.st_dev == device else { break }
            directory = parent
        }
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return nil }
        return (directory, UInt64(info.f_bavail) &* UInt64(info.f_frsize))
    }

    /// "0 bytes", "12 KiB", "1.5 MiB", "3.2 GiB".
    static func approximate(bytes: UInt64) -> String {
        guard bytes >= 1024 else { return "\(bytes) bytes" }
        var value = Double(bytes)
        for unit in ["KiB", "MiB", "GiB", "TiB"] {
            value /= 1024
            if value < 1024 || unit == "TiB" {
                return value < 10 && value != value.rounded(.down)
                    ? "\((value * 10).rounded(.down) / 10) \(unit)" : "\(Int(value)) \(unit)"
            }
        }
        return "\(bytes) bytes"
    }
}
