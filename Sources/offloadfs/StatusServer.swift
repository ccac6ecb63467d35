#if canImport(Glibc)
import Glibc
#endif
import FuseBridge
import Logging

/// The daemon's status socket: a unix stream socket (`RuntimeDirectory`) that answers
/// one request, the line `status`, with the mount's `MountStatus` as one JSON line.
///
/// Why a unix socket: no network port, and the kernel tells us who connects
/// (SO_PEERCRED), so only root and the daemon's own user (the mount's owner) are
/// answered; anyone else gets `{"error": ...}`. The socket file is also mode 0600, in a
/// directory only its user (or root) can write. It serves from the daemon's start until
/// its last checkpoint is written, so `offloadfs unmount` can follow that checkpoint's
/// progress. One thread accepts and answers; each answer is built on demand (taking the
/// namespace lock briefly), so nothing is computed for a status nobody asks for.
final class StatusServer: Sendable {
    let path: String
    private let directory: String
    private let listener: Int32
    private let thread: DaemonThread
    /// The socket file's device and inode as bound: `stop` removes the file at `path` only
    /// while it is still this one.
    private let boundFile: (device: UInt64, inode: UInt64)

    init(directory: String, device: String, logger: Logger,
         reply: @escaping @Sendable () -> [UInt8]) throws(MountError) {
        self.directory = directory
        // The device's name, unless a live daemon still answers there: the one of the
        // mount this device number was given to before, writing its final commit for an
        // `offloadfs unmount` that follows it. Its socket is left to it, and this daemon
        // takes a name of its own (`RuntimeDirectory.socketName(device:pid:)`).
        let plain = directory + "/" + RuntimeDirectory.socketName(device: device)
        path = Self.isAnswered(plain) ? directory + "/" + RuntimeDirectory.socketName(device: device, pid: getpid()) : plain
        // Names of this kind left by daemons that died (nobody answers there).
        for name in RuntimeDirectory.pidNames(of: device, in: directory) where !Self.isAnswered(directory + "/" + name) {
            unlink(directory + "/" + name)
        }
        guard let address = UnixSocketAddress(path) else { throw MountError("status socket path too long: \(path)") }
        let listener = UnixSocket.make(SOCK_STREAM)
        guard listener >= 0 else { throw MountError("cannot create the status socket: \(String(cString: strerror(errno)))") }
        // A socket left by a daemon that died (its device number is free again).
        unlink(path)
        let bound = address.withSockaddr { bind(listener, $0, $1) }
        guard bound == 0, chmod(path, 0o600) == 0, listen(listener, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(listener)
            throw MountError("cannot serve status at \(path): \(reason)")
        }
        self.listener = listener
        var file = stat()
        boundFile = lstat(path, &file) == 0 ? (UInt64(file.st_dev), UInt64(file.st_ino)) : (0, 0)
        let owner = geteuid()
        let started = DaemonThread.start {
            Self.serve(listener: listener, owner: owner, logger: logger, reply: reply)
        }
        guard let started else {
            close(listener)
            unlink(path)
            throw MountError("cannot start the status thread: \(String(cString: strerror(errno)))")
        }
        thread = started
    }

    /// True when a listener accepts a connection at `path` (a socket left by a daemon that
    /// died refuses it). A stopped daemon's full backlog is as good as an answer.
    private static func isAnswered(_ path: String) -> Bool {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK, let address = UnixSocketAddress(path) else {
            return false
        }
        guard let fd = UnixSocket.connect(to: address, type: SOCK_STREAM, timeoutSeconds: 1) else { return errno == EAGAIN }
        close(fd)
        return true
    }

    /// Stops answering and removes the socket, and a user's runtime directory once it is
    /// empty (rmdir fails while another mount's socket is in it; /run/offloadfs stays).
    func stop() {
        // shutdown wakes the thread's accept (it then returns EINVAL).
        shutdown(listener, Int32(SHUT_RDWR))
        thread.join()
        close(listener)
        // The kernel gives a mount's device number to the next FUSE mount once this one is
        // unmounted, and that mount's daemon binds the same path (removing ours first)
        // while this one still writes its final commit: its socket is not ours to remove.
        var current = stat()
        if lstat(path, &current) == 0, UInt64(current.st_dev) == boundFile.device, UInt64(current.st_ino) == boundFile.inode {
            unlink(path)
        }
        if directory != RuntimeDirectory.systemDirectory { rmdir(directory) }
    }

    private static func serve(listener: Int32, owner: uid_t, logger: Logger, reply: @Sendable () -> [UInt8]) {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // shut down (or the socket is broken: nothing more to serve)
            }
            // accept4(SOCK_CLOEXEC) is hidden behind _GNU_SOURCE; a client fd leaking into
            // a program the daemon starts meanwhile (fusermount3) would only be held open.
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            answer(client, owner: owner, logger: logger, reply: reply)
            close(client)
        }
    }

    private static func answer(_ client: Int32, owner: uid_t, logger: Logger, reply: () -> [UInt8]) {
        UnixSocket.setTimeouts(client, seconds: 2)
        guard let peer = UnixSocket.peer(of: client), peer.uid == 0 || peer.uid == owner else {
            logger.debug("status request refused", metadata: ["peer_uid": "\(UnixSocket.peer(of: client)?.uid ?? 0)"])
            _ = UnixSocket.write(client, StatusJSON.encode(StatusJSON.Failure(
                error: "permission denied: only root and uid \(owner) may read this mount's status")) + [0x0A])
            return
        }
        guard let request = UnixSocket.read(client, limit: 256, line: true) else { return }
        let command = String(decoding: request, as: UTF8.self).trimmingTrailingNewlines()
        guard command == "status" else {
            _ = UnixSocket.write(client, StatusJSON.encode(StatusJSON.Failure(error: "unknown request '\(command)'")) + [0x0A])
            return
        }
        _ = UnixSocket.write(client, reply() + [0x0A])
    }
}
