#if canImport(Glibc)
import Glibc
#endif

/// Daemons whose mount is no longer in the mount table but which still answer on their
/// status socket: a mount detached with `unmount --lazy` (or `umount -l`), whose daemon
/// serves the processes still inside it until the last leaves, and a daemon writing its
/// final commit after the unmount. `offloadfs status` lists them too.
enum DetachedDaemons {
    /// Statuses from sockets in this user's runtime directories whose device is not one of
    /// `listed` (those `status` reads through the mount table), each with a `MountInfo`
    /// made from its answer. Sockets nobody answers (left by a daemon that died) are
    /// skipped.
    static func find(excluding listed: Set<String>) -> [(mount: MountInfo, status: MountStatus)] {
        let uid = getuid()
        var found: [(mount: MountInfo, status: MountStatus)] = []
        var seen = listed
        for directory in RuntimeDirectory.candidates(uid: uid) {
            guard let names = DirectoryNames.list(directory) else { continue }
            for name in names.sorted() where name.hasSuffix(".sock") {
                // "DEVICE.sock", or "DEVICE.PID.sock" (`RuntimeDirectory.socketName(device:pid:)`).
                let device = String(name.dropLast(".sock".count).prefix { $0 != "." })
                guard !seen.contains(device) else { continue }
                seen.insert(device)
                var mount = MountInfo(device: device, mountPoint: "", type: "fuse.offloadfs", source: "",
                                      mountOptions: [], superOptions: ["user_id=\(uid)"])
                guard case .success(var status) = StatusClient.query(mount, timeoutSeconds: 2) else { continue }
                mount.mountPoint = status.mountpoint
                mount.source = status.image.path
                if status.state == DaemonStatus.State.serving.name { status.state += " (detached)" }
                found.append((mount, status))
            }
        }
        return found
    }
}
