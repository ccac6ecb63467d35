#if canImport(Glibc)
import Glibc
#endif

/// Asks a mount's daemon for its `MountStatus` over its status socket (`StatusServer`).
enum StatusClient {
    /// Removes the status sockets of `mount`'s device that no process listens on (a
    /// daemon that died leaves its socket; a dead mount's unmount clears it, as the next
    /// daemon of the device would).
    static func removeDeadSockets(of mount: MountInfo) {
        for path in RuntimeDirectory.socketCandidates(device: mount.device, owner: mount.ownerUID ?? 0) {
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK, let address = UnixSocketAddress(path) else { continue }
            if let fd = UnixSocket.connect(to: address, type: SOCK_STREAM, timeoutSeconds: 1) {
                close(fd)
            } else if errno == ECONNREFUSED {
                unlink(path)
            }
        }
    }

    struct Failure: Error, Equatable {
        var message: String
    }

    /// The status of `mount`, from its candidate sockets: the first that answers, one
    /// that is not stopping before one that is (a device's sockets may be two daemons',
    /// the mount's and the one of the mount the device number was given to before, still
    /// writing its final commit), or with `accepting`, the first it accepts (the unmount's
    /// wait: its daemon's pid, or image). The daemon must
    /// run as root or as the mount's owner: a socket anyone else bound (in a directory
    /// they could write) is not believed.
    static func query(_ mount: MountInfo, timeoutSeconds: Int = 5,
                      accepting: ((MountStatus) -> Bool)? = nil) -> Result<MountStatus, Failure> {
        let owner = mount.ownerUID ?? 0
        var reasons: [String] = []
        var stopping: MountStatus?
        for path in RuntimeDirectory.socketCandidates(device: mount.device, owner: owner) {
            var info = stat()
            guard lstat(path, &info) == 0 else {
                // The owner's runtime directory is closed to others.
                if errno == EACCES { reasons.append("permission denied (\(path))") }
                continue
            }
            // A socket only its owner or root can have bound (a directory another user
            // made first, /tmp/offloadfs-UID, may hold theirs).
            guard info.st_mode & S_IFMT == S_IFSOCK, info.st_uid == owner || info.st_uid == 0,
                  let address = UnixSocketAddress(path) else { continue }
            guard let fd = UnixSocket.connect(to: address, type: SOCK_STREAM, timeoutSeconds: timeoutSeconds) else {
                // ECONNREFUSED: a socket left by a daemon that died; EACCES: not ours to
                // read; EAGAIN: a daemon that accepts nothing (stopped) and whose backlog is full.
                switch errno {
                case EACCES: reasons.append("permission denied (\(path))")
                case ECONNREFUSED:
                    // (Said as `unmount` says a dead mount, not as the socket's error.)
                    reasons.append("its daemon is gone (killed, or it crashed): nothing listens on \(path); "
                                   + "offloadfs unmount \(mount.mountPoint) clears the mount")
                case EAGAIN:
                    reasons.append("no answer: the daemon accepts no connection (stopped? see its state in ps, and "
                                   + "kill -CONT its pid)")
                default: reasons.append("\(path): \(String(cString: strerror(errno)))")
                }
                continue
            }
            defer { close(fd) }
            guard let peer = UnixSocket.peer(of: fd), peer.uid == 0 || peer.uid == owner else {
                reasons.append("\(path) is served by a process of another user; ignored")
                continue
            }
            guard UnixSocket.write(fd, Array("status\n".utf8)), let answer = UnixSocket.read(fd, limit: 4 << 20) else {
                reasons.append("\(path): no answer: \(String(cString: strerror(errno)))")
                continue
            }
            if let status = StatusJSON.decode(MountStatus.self, from: answer) {
                if let accepting {
                    if accepting(status) { return .success(status) }
                    reasons.append("\(path) is served by another daemon (pid \(status.pid))")
                    continue
                }
                if status.state == DaemonStatus.State.stopping.name {
                    // A stopping daemon of another mount point is the one the device
                    // number belonged to before: its kernel mount is gone, and it is not
                    // this mount's (a dead mount's `status` printed it, found by a CI run
                    // beside a crash soak's unmounts).
                    if status.mountpoint == mount.mountPoint {
                        stopping = stopping ?? status
                    } else {
                        reasons.append("\(path) is served by the daemon of another mount (\(status.mountpoint), pid \(status.pid)), "
                                       + "which is stopping")
                    }
                    continue
                }
                return .success(status)
            }
            if let failure = StatusJSON.decode(StatusJSON.Failure.self, from: answer) {
                return .failure(Failure(message: failure.error))
            }
            reasons.append("\(path): an answer that is not a status")
        }
        if let stopping { return .success(stopping) }
        if reasons.isEmpty {
            return .failure(Failure(message: "no status socket (the daemon may still be starting, or be an older offloadfs)"))
        }
        return .failure(Failure(message: reasons.joined(separator: "; ")))
    }
}
