import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// What is at the mount point before we mount there.
///
/// The kernel lets a mount stack on another: a second offloadfs over a live one hides it,
/// and one over a dead one (its daemon killed) leaves the dead one to reappear, as
/// "Transport endpoint is not connected", after the unmount. So a mount point that is
/// already a mount is refused with what it is, and a dead offloadfs mount with how to
/// clear it (or cleared, with --clear-dead-mount: only ever a dead offloadfs mount).
///
/// A directory with entries is mounted over, with a warning that they are hidden
/// meanwhile: libfuse 3 dropped fuse 2's `nonempty` option and always allows it, sshfs 3
/// and mount(8) for ext4 mount there without a word, and scripts rely on it; refusing
/// would break them, saying nothing hides files by surprise.
enum MountPointCheck {
    /// Refuses (or clears) a mount at `argument`; returns the warnings to print.
    static func run(_ argument: MountPointArgument, clearDeadMount: Bool) throws(MountError) -> [String] {
        var argument = argument
        // Stacked dead mounts (several kill -9s with the old offloadfs) are cleared one by one.
        for _ in 0..<16 {
            guard let entry = argument.entry else { break }
            let path = argument.path
            let dead = isDisconnected(path)
            switch (entry.type == "fuse.offloadfs", dead) {
            case (true, false):
                throw MountError("mount point \(path) is already an offloadfs mount (image \(entry.source)); "
                                 + "unmount it first (offloadfs unmount \(path)) or choose another directory")
            case (true, true) where clearDeadMount:
                clear(path)
                argument = MountPointArgument(path)
            case (true, true):
                throw MountError("mount point \(path) is a dead offloadfs mount (image \(entry.source); its daemon "
                                 + "is gone, e.g. killed): clear it with `offloadfs unmount \(path)`, or mount "
                                 + "with --clear-dead-mount")
            case (false, true) where entry.type.hasPrefix("fuse"):
                throw MountError("mount point \(path) is a dead FUSE mount (\(entry.type) from \(entry.source)): "
                                 + "clear it with `fusermount3 -u \(path)`")
            case (false, _):
                throw MountError("mount point \(path) is already a mount point (\(entry.type) from \(entry.source)); "
                                 + "mounting there would hide it: unmount it or choose another directory")
            }
        }
        if argument.entry != nil {
            throw MountError("mount point \(argument.path) is still a mount after clearing 16 dead mounts")
        }
        let entries = entryCount(argument.path)
        guard entries > 0 else { return [] }
        return ["mount point \(argument.path) is not empty (\(entries) \(entries == 1 ? "entry" : "entries")); "
                + "they are hidden until it is unmounted"]
    }

    /// Checked again right before the kernel mount: opening a large image takes seconds
    /// after `run`, and a mount made meanwhile at the same point (another `offloadfs
    /// mount`, say, started by a second unit) would have ours stacked on top of it.
    static func refuseNewMount(at path: String) throws(MountError) {
        guard let entry = MountPointArgument(path).entry else { return }
        throw MountError("mount point \(path) became a mount (\(entry.type) from \(entry.source)) while the image was "
                         + "being opened; nothing was mounted over it: unmount it first or choose another directory")
    }

    /// Refuses an image that lies under the mount point (the mount point itself, or a
    /// directory below it; symbolic links followed): once mounted, the mount hides it,
    /// and whatever then opens it by its path (the daemon's own watch for its deletion,
    /// `status`, `info`, `fsck`) goes through the mount it serves. The first such open
    /// waited in the kernel for the daemon that made it, which waited for it: the mount
    /// never answered, and `ls` of it hung too.
    static func refuseImage(_ imagePath: String, under mountPoint: String) throws(MountError) {
        let slash = imagePath.lastIndex(of: "/") ?? imagePath.startIndex
        let directory = slash == imagePath.startIndex ? "/" : String(imagePath[..<slash])
        guard let realDirectory = MountPointArgument.realPath(directory),
              let realMountPoint = MountPointArgument.realPath(mountPoint) else { return }
        let prefix = realMountPoint == "/" ? "/" : realMountPoint + "/"
        guard realDirectory == realMountPoint || (realDirectory + "/").hasPrefix(prefix) else { return }
        throw MountError("image \(imagePath) lies under the mount point \(mountPoint): the mount would hide it, and "
                         + "every open of it by its path would go through the mount it serves; keep the image "
                         + "outside the mount point")
    }

    /// A FUSE mount whose daemon is gone answers every call with ENOTCONN; statfs (under
    /// statvfs) is never answered from a cache, so it tells a dead mount from a live one.
    static func isDisconnected(_ path: String) -> Bool {
        var info = statvfs()
        return statvfs(path, &info) != 0 && errno == ENOTCONN
    }

    /// Detaches a dead mount (lazily: a shell still inside it must not make this fail,
    /// and nothing can use it anyway). Errors surface as the mount attempt that follows.
    private static func clear(_ path: String) {
        if geteuid() == 0 {
            _ = umount2(path, Int32(MNT_DETACH))
        } else {
            _ = Subprocess.runCapturingError("fusermount3", ["-u", "-z", path])
        }
    }

    /// Entries other than "." and ".." (0 when the directory cannot be read: then the
    /// mount attempt reports the problem).
    static func entryCount(_ path: String) -> Int {
        guard let directory = opendir(path) else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return count
    }
}
