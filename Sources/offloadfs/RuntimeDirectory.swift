#if canImport(Glibc)
import Glibc
#endif
import FuseBridge

/// Where a daemon keeps its status socket, and where `offloadfs status` and `unmount`
/// look for it.
///
/// The socket is named after the mount's device number ("0:52.sock"): unique among the
/// mounts that exist, and readable from /proc/self/mountinfo without touching the mount
/// (a hung mount would hang a `stat`). The directory depends on who runs the daemon:
/// - root: `/run/offloadfs` (mode 0755; the sockets themselves are 0600);
/// - another user: `$XDG_RUNTIME_DIR/offloadfs` when the daemon has that variable, else
///   `/run/user/UID/offloadfs` (what systemd-logind creates as XDG_RUNTIME_DIR), else
///   `/tmp/offloadfs-UID` (for users without a login session, e.g. `su`, `setpriv`),
///   each mode 0700 and owned by the user.
/// A client tries the directories for the mount's owner (FUSE's `user_id=`) in that order.
enum RuntimeDirectory {
    static let systemDirectory = "/run/offloadfs"

    static func socketName(device: String) -> String { "\(device).sock" }

    /// The directories a daemon of user `uid` may use, in the order clients try them.
    /// `runtimeDirectory` is $XDG_RUNTIME_DIR as the asking process sees it; it is only
    /// a candidate when the asker is that same user.
    static func candidates(uid: uid_t, runtimeDirectory: String? = environment("XDG_RUNTIME_DIR")) -> [String] {
        if uid == 0 { return [systemDirectory] }
        var directories: [String] = []
        if getuid() == uid, let runtimeDirectory, runtimeDirectory.hasPrefix("/") {
            directories.append(runtimeDirectory + "/offloadfs")
        }
        directories.append("/run/user/\(uid)/offloadfs")
        directories.append("/tmp/offloadfs-\(uid)")
        return directories
    }

    /// The socket paths to try for a mount of device `device` owned by `uid`: its name in
    /// each directory, and the names `DEVICE.PID.sock` a daemon binds while the plain name
    /// is still another daemon's (`StatusServer`).
    static func socketCandidates(device: String, owner uid: uid_t) -> [String] {
        candidates(uid: uid).flatMap { directory in
            [directory + "/" + socketName(device: device)] + pidNames(of: device, in: directory).map { directory + "/" + $0 }
        }
    }

    /// The name a daemon of pid `pid` binds for `device` while `socketName(device:)` is
    /// still another daemon's: the kernel gives an unmounted FUSE mount's device number to
    /// the next mount at once, while the first daemon may still write its final commit
    /// and answer `offloadfs unmount`'s polls.
    static func socketName(device: String, pid: Int32) -> String { "\(device).\(pid).sock" }

    /// The `DEVICE.PID.sock` names in `directory`.
    static func pidNames(of device: String, in directory: String) -> [String] {
        let prefix = device + "."
        return (DirectoryNames.list(directory) ?? []).filter { name in
            guard name.hasPrefix(prefix), name.hasSuffix(".sock") else { return false }
            let middle = name.dropFirst(prefix.count).dropLast(".sock".count)
            return !middle.isEmpty && middle.allSatisfy(\.isNumber)
        }.sorted()
    }

    /// The directory this process (a daemon) uses, created if missing. Refuses one that
    /// is not a real directory owned by us and closed to others (someone could have
    /// planted it to catch our socket).
    static func prepare() throws(MountError) -> String {
        let uid = geteuid()
        if uid == 0 {
            try ensureDirectory(systemDirectory, mode: 0o755, owner: 0)
            return systemDirectory
        }
        // The parents of the first two candidates must already be the user's own.
        for directory in candidates(uid: uid).dropLast() {
            let parent = Preflight.parentDirectory(of: directory)
            if isOwnedDirectory(parent, owner: uid) {
                try ensureDirectory(directory, mode: 0o700, owner: uid)
                return directory
            }
        }
        let fallback = candidates(uid: uid).last!
        try ensureDirectory(fallback, mode: 0o700, owner: uid)
        return fallback
    }

    private static func isOwnedDirectory(_ path: String, owner: uid_t) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR && status.st_uid == owner
    }

    private static func ensureDirectory(_ path: String, mode: mode_t, owner: uid_t) throws(MountError) {
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw MountError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFDIR, status.st_uid == owner,
              status.st_mode & 0o022 == 0 else {
            throw MountError("\(path) is not a directory of uid \(owner) closed to other users; remove it")
        }
        if mode == 0o700 && status.st_mode & 0o077 != 0 { _ = chmod(path, mode) }
    }
}

/// The value of environment variable `name`, if set.
func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }
}
