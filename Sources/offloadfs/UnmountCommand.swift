import ArgumentParser
import FoundationEssentials
import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs unmount MOUNTPOINT` (alias `umount`): asks the kernel to unmount; the
/// daemon then sees its session end, finishes and exits by itself.
struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Unmount an offloadfs mount point (the daemon then exits).",
        discussion: """
            MOUNTPOINT may be spelt as umount(8) accepts it: relative, with a trailing \
            slash, or through a symlink. Returns once the daemon has written its last \
            checkpoint and let go of the image, so the image can be mounted again at once; \
            it waits as long as that checkpoint makes progress (the daemon's status socket \
            reports it) and gives up after 60 s without any. umount(8) does the same through \
            the umount.fuse.offloadfs helper that scripts/install installs. If that checkpoint \
            could not be written (e.g. the disk holding the image is full), the mount is gone \
            all the same, the command prints why and what to do and exits 1; the image's \
            journal still holds every change. A busy mount (a process has a file or its \
            working directory in it: see fuser -vm MOUNTPOINT) is left mounted unless --lazy \
            is given. A mount whose image was deleted while mounted is left mounted, with \
            the command that saves the image, unless --discard-deleted-image is given. Exit \
            status: 0 unmounted and released, 1 not unmounted, the final checkpoint failed, \
            or the daemon stalled.
            """,
        aliases: ["umount"]
    )

    @Argument(help: "The mount point to unmount.")
    var mountPoint: String

    @Flag(name: .long, help: ArgumentHelp(
        "Detach a busy mount now (umount -l); the daemon finishes and lets go of the image once the last process using the mount has left it."))
    var lazy = false

    @Flag(name: .long, help: ArgumentHelp(
        "Unmount even though the image was deleted while mounted: every file it holds is then lost (without it, such a mount is left mounted and the command says how to save the image first)."))
    var discardDeletedImage = false

    func run() throws {
        let argument = MountPointArgument(mountPoint)
        let path = argument.path
        guard let entry = argument.entry else {
            printError("\(path) is not mounted")
            throw ExitCode.failure
        }
        guard entry.type == "fuse.offloadfs" else {
            printError("\(path) is not an offloadfs mount (it is \(entry.type))")
            throw ExitCode.failure
        }
        // Found before the unmount: its status socket reports the final checkpoint.
        let mount = MountInfo.offloadfsMount(at: path)
        // A deleted image is lost with the unmount; the daemon logs it, and so do we.
        let imageDeleted = access(entry.source, F_OK) != 0 && errno == ENOENT
        let pathLocked = !Self.isUnlocked(image: entry.source)
        // So is one replaced at its path (another file renamed over it): the path then names
        // a file the daemon does not hold, and its lock says nothing about the daemon. Asked
        // only when that file is unlocked (a daemon that died, or a replaced image).
        let replacedBy = imageDeleted || pathLocked ? nil : Self.daemonHoldingAnotherFile(than: entry.source, mount: mount)
        // Who serves it: the image's only lock holder, else what its status socket says
        // (read-only mounts of one image each hold a shared lock).
        let holders = ImageLockHolders.holders(ofImage: entry.source)
        let daemon = replacedBy ?? (holders.count == 1 ? holders[0].pid : Self.daemonPID(of: mount))
        // An image renamed while mounted (`mv`) lives on under its new name, which the
        // daemon's descriptor on it names: that is where its last commit goes.
        var image = entry.source
        var movedTo: String?
        var heldDeleted: (pid: Int32, descriptor: Int)?
        if imageDeleted || replacedBy != nil, let daemon, let held = ImageLockHolders.lockedFile(of: daemon) {
            if !held.deleted, held.path != entry.source {
                movedTo = held.path
                image = held.path
            } else if held.deleted {
                heldDeleted = (daemon, held.descriptor)
            }
        }
        // The unmount would free the deleted file, and every file in it with it: the daemon
        // still holds it, so it can be saved first (as ext4's image on a loop device can
        // be read back through the loop device before it is detached).
        if imageDeleted, let (pid, descriptor) = heldDeleted, !discardDeletedImage {
            printError("\(path) is not unmounted: its image \(entry.source) was deleted while mounted, and unmounting "
                       + "would lose every file in it. The daemon (pid \(pid)) still holds it: stop writing to \(path), "
                       + "save it with cp --sparse=always /proc/\(pid)/fd/\(descriptor) \(entry.source).saved, then "
                       + "unmount with --discard-deleted-image (the saved copy mounts as after a crash)")
            throw ExitCode.failure
        }
        // A daemon that had died (kill -9) leaves a dead mount and the image unlocked.
        let daemonWasRunning = pathLocked || replacedBy != nil || movedTo != nil
        try Self.unmount(path, lazy: lazy)
        // A dead mount's daemon left its status socket.
        if !daemonWasRunning, let mount { StatusClient.removeDeadSockets(of: mount) }
        if let movedTo {
            printError("note: the image of \(path) was moved while mounted, from \(entry.source) to \(movedTo); "
                       + "the daemon wrote it there")
        } else if imageDeleted && discardDeletedImage && heldDeleted != nil {
            // As asked: not a failure.
            printError("note: \(path) is unmounted; its image \(entry.source), deleted while mounted, went with it")
            return
        } else if imageDeleted {
            printError("\(path) is unmounted, but its image \(entry.source) was deleted while mounted (nothing is at "
                       + "that path now): unless it was moved elsewhere, the files it held are gone")
            throw ExitCode.failure
        }
        if movedTo == nil, let pid = replacedBy {
            if !lazy { _ = ReleaseWait.wait(until: { !Self.isRunning(pid: pid) }, mount: mount, daemon: pid) }
            printError("\(path) is unmounted, but its image \(entry.source) was replaced while mounted (the file at "
                       + "that path is another one now): the daemon served the file it had open, which no name leads "
                       + "to any more; unless it was moved elsewhere, the files it held are gone")
            throw ExitCode.failure
        }
        // Lazily detached, the daemon lives on until the last user has gone: nothing to wait for.
        if lazy { return }
        // Like umount(8) on a block filesystem: once this returns, the image is free to
        // be mounted again. The daemon holds an flock on it until it has exited; the wait
        // follows its final checkpoint's progress (ReleaseWait).
        // A read-only mount's daemon holds a shared lock, which another read-only mount of
        // the image may hold too: its own exit is what to wait for.
        let released: () -> Bool
        if !entry.isReadOnly {
            released = { Self.isUnlocked(image: image) }
        } else if let daemon {
            released = { !Self.isRunning(pid: daemon) }
        } else if !holders.isEmpty {
            released = { ImageLockHolders.holders(ofImage: entry.source).count < holders.count }
        } else {
            // Neither its pid nor the lock's holders known: as for a read-write mount.
            released = { Self.isUnlocked(image: image) }
        }
        // Why a format 2 daemon's final commit failed (the image has no place for it): the
        // problem its status socket reported while it stopped.
        var finalFailure: String?
        let outcome = ReleaseWait.wait(until: released, mount: mount, daemon: daemon) { status in
            if let failure = status.finalFailure { finalFailure = failure }
        }
        if case .stalled(let last) = outcome {
            printError("\(path) is unmounted, but the daemon still holds \(image): "
                       + "no progress for \(Int(StallBound.seconds)) s (last: \(last))" + Self.stoppedNote(daemon))
            throw ExitCode.failure
        }
        switch UnmountOutcome.read(image: image, readOnly: entry.isReadOnly, daemonWasRunning: daemonWasRunning,
                                   reported: finalFailure) {
        case .clean:
            break
        case .daemonHadDied:
            printError("note: the daemon serving \(path) had stopped (killed?); the dead mount is cleared, "
                       + "and the next mount replays the image's journal")
        case .failed(let message):
            printError("\(path) is unmounted, but \(message)")
            throw ExitCode.failure
        }
    }

    /// The pid of the daemon serving `mount` (from its status socket) when it holds no
    /// descriptor on the file now at `image`: the path names another file than the one
    /// it serves. Nil when it holds it, or when that cannot be told (no status answer, or
    /// its /proc/PID/fd unreadable).
    static func daemonHoldingAnotherFile(than image: String, mount: MountInfo?) -> Int32? {
        guard let mount, case .success(let status) = StatusClient.query(mount, timeoutSeconds: 2) else { return nil }
        var file = stat()
        guard stat(image, &file) == 0, ProcessDescriptors.numbers(of: "\(status.pid)") != nil else { return nil }
        return ImageLockHolders.holdsFile(pid: status.pid, device: UInt64(file.st_dev), inode: UInt64(file.st_ino))
            ? nil : status.pid
    }

    /// The pid of the daemon serving `mount`, from its status socket; nil without an answer.
    static func daemonPID(of mount: MountInfo?) -> Int32? {
        guard let mount, case .success(let status) = StatusClient.query(mount, timeoutSeconds: 2) else { return nil }
        return status.pid
    }

    /// Whether process `pid` exists and has not exited (a zombie waiting for its parent
    /// has: its state is Z).
    static func isRunning(pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        return processState(pid) != "Z"
    }

    /// The state letter of process `pid` in /proc/PID/stat, after the name in parentheses
    /// (R, S, D, T stopped, t traced, Z zombie, ...); nil when it cannot be read.
    static func processState(_ pid: Int32) -> Character? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let nameEnd = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: nameEnd)...].trimmingPrefix(" ").first
    }

    /// "; the daemon (pid N) is stopped ..." when the daemon that did not let go is
    /// stopped by a signal or a debugger (it then finishes once continued); else "".
    static func stoppedNote(_ pid: Int32?) -> String {
        guard let pid, let state = processState(pid), state == "T" || state == "t" else { return "" }
        return "; the daemon (pid \(pid)) is stopped (SIGSTOP or a debugger): `kill -CONT \(pid)` lets it finish"
    }

    /// True when nobody holds a lock on the image (no daemon serves it).
    static func isUnlocked(image: String) -> Bool {
        let fd = open(image, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)  // a FIFO's open would wait for a writer
        guard fd >= 0 else { return true }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        flock(fd, LOCK_UN)
        return true
    }

    /// Unmounts `path`: umount2 as root, else the setuid helper as libfuse does. A busy
    /// mount is reported with the tools that find who holds it, and --lazy.
    static func unmount(_ path: String, lazy: Bool) throws {
        let busy: Bool
        let reason: String
        if geteuid() == 0 {
            if umount2(path, lazy ? Int32(MNT_DETACH) : 0) == 0 { return }
            busy = errno == EBUSY
            reason = String(cString: strerror(errno))
        } else {
            let (status, message) = Subprocess.runCapturingError("fusermount3", lazy ? ["-u", "-z", path] : ["-u", path])
            if status == 0 { return }
            busy = message.contains("Device or resource busy")
            let helperLine = message.split(separator: "\n").last.map(String.init)
            reason = helperLine ?? "fusermount3 -u exited with status \(status)"
        }
        if busy {
            printError("cannot unmount \(path): it is busy (a process has a file or its working directory in it); "
                       + "`fuser -vm \(path)` or `lsof \(path)` shows which, or `offloadfs unmount --lazy \(path)` "
                       + "detaches it now and the daemon finishes when the last one leaves")
        } else {
            printError("cannot unmount \(path): \(reason)")
        }
        throw ExitCode.failure
    }
}

/// Mounts as /proc/self/mounts lists them.
enum MountTable {
    struct Entry: Equatable {
        var source: String
        var mountPoint: String
        var type: String
        /// The mount's options as the kernel lists them ("rw,nosuid,...").
        var options: [Substring] = []

        var isReadOnly: Bool { options.contains("ro") }
    }

    static func entries() -> [Entry] {
        guard let file = fopen("/proc/self/mounts", "r") else { return [] }
        defer { fclose(file) }
        var result: [Entry] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(separator: " ")
            guard fields.count >= 3 else { continue }
            result.append(Entry(source: unescape(fields[0]), mountPoint: unescape(fields[1]),
                                type: String(fields[2]),
                                options: fields.count > 3 ? fields[3].split(separator: ",") : []))
        }
        return result
    }

    /// The last (topmost) mount at `path`.
    static func entry(at path: String) -> Entry? {
        entries().last { $0.mountPoint == path }
    }

    /// The kernel writes space, tab, newline and backslash in paths as \ooo octal.
    static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.first {
            if byte == UInt8(ascii: "\\"), utf8.count >= 4,
               let value = UInt8(String(decoding: utf8.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(4)
            } else {
                bytes.append(byte)
                utf8 = utf8.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
