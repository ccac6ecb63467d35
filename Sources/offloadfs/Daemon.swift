#if canImport(Glibc)
import Glibc
#endif

/// Running the mount in the background without fork().
///
/// `offloadfs mount` without `--foreground` re-executes itself (/proc/self/exe) with
/// `--foreground --ready-fd 3` through posix_spawn, in a new session (setsid, so the
/// terminal's SIGHUP/SIGINT do not reach it), with stdin/stdout/stderr on /dev/null and
/// the write end of a pipe as fd 3; the child closes every other descriptor it inherited
/// (`closeInheritedDescriptors`). The child writes exactly one line to that pipe:
/// `ready` once the kernel mount exists, or `error MESSAGE` if it could not mount. The
/// parent prints the message (one line) and exits 1, or exits 0 on `ready`. If the child
/// dies without a line, the pipe reaches EOF and the parent reports its exit status.
enum Daemon {
    /// How long the parent waits for the child's line before giving up and stopping it.
    static let readinessTimeoutSeconds: Int32 = 60
    /// The fd number the child finds the readiness pipe on.
    static let readinessDescriptor: Int32 = 3

    enum Outcome: Equatable {
        case ready
        case failed(String)
    }

    /// Starts the daemon with `arguments` (after the program name) and waits for it.
    static func start(arguments: [String]) -> Outcome {
        var ends: [Int32] = [-1, -1]
        // pipe2 is hidden behind _GNU_SOURCE; no other thread spawns meanwhile, so
        // setting FD_CLOEXEC right after pipe() leaves no window for a leak.
        guard pipe(&ends) == 0 else {
            return .failed("cannot create the readiness pipe: \(String(cString: strerror(errno)))")
        }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let (readEnd, writeEnd) = (ends[0], ends[1])
        defer { close(readEnd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // dup2 onto a different number gives the child a copy without O_CLOEXEC; make
        // sure the pipe's own number is not already 3 (dup2(3, 3) would keep the flag).
        var childEnd = writeEnd
        if childEnd == readinessDescriptor {
            childEnd = fcntl(writeEnd, F_DUPFD_CLOEXEC, 10)
            close(writeEnd)
        }
        defer { if childEnd >= 0 { close(childEnd) } }
        posix_spawn_file_actions_adddup2(&actions, childEnd, readinessDescriptor)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | spawnSetSID))

        let child = Subprocess.spawn("/proc/self/exe", arguments, searchPath: false, displayName: executablePath(),
                                     fileActions: &actions, attributes: &attributes)
        guard let child else {
            return .failed("cannot start the daemon: \(String(cString: strerror(errno)))")
        }
        // Our copy of the write end must be closed, or EOF never comes if the child dies.
        close(childEnd)
        childEnd = -1
        switch readLine(from: readEnd) {
        case .line(let line) where line == "ready":
            return .ready
        case .line(let line) where line.hasPrefix("error "):
            _ = Subprocess.wait(for: child)
            return .failed(String(line.dropFirst("error ".count)))
        case .line(let line):
            kill(child, SIGTERM)
            _ = Subprocess.wait(for: child)
            return .failed("the daemon sent an unexpected readiness line: \(line)")
        case .timedOut:
            kill(child, SIGTERM)
            _ = Subprocess.wait(for: child)
            return .failed("the daemon did not report readiness within \(readinessTimeoutSeconds) s")
        case .endOfFile:
            let status = Subprocess.wait(for: child)
            return .failed("the daemon exited with status \(status) before the mount was ready")
        }
    }

    /// Closes every descriptor above stderr except `keep`. Run first thing in the
    /// background child: an inherited fd that someone waits on for EOF (a shell's command
    /// substitution, a test harness's exit-watch socket) would otherwise stay open for the
    /// daemon's whole life. (posix_spawn_file_actions_addclosefrom_np would do this in the
    /// parent, but glibc declares it only under _GNU_SOURCE, which Swift's Glibc lacks.)
    static func closeInheritedDescriptors(keeping keep: Int32) {
        var open: [Int32] = []
        if let directory = opendir("/proc/self/fd") {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if let descriptor = Int32(name), descriptor > 2, descriptor != keep { open.append(descriptor) }
            }
            closedir(directory)
        }
        // The directory stream's own descriptor is in the list; closing it again is a no-op.
        for descriptor in open { close(descriptor) }
    }

    /// Our own executable's path, so `ps` shows the daemon as `/path/to/offloadfs mount ...`.
    private static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return "offloadfs" }
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// POSIX_SPAWN_SETSID (glibc 2.26+): the child starts a new session, detached from
    /// the terminal, with no window where it could still get the terminal's signals.
    private static let spawnSetSID: Int32 = 0x80

    private enum ReadResult { case line(String), endOfFile, timedOut }

    /// Reads one line (up to a newline or EOF) from `descriptor`, giving up after the
    /// readiness timeout.
    private static func readLine(from descriptor: Int32) -> ReadResult {
        var bytes: [UInt8] = []
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let end = deadline.tv_sec + Int(readinessTimeoutSeconds)
        while true {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let remainingMilliseconds = Int32(max(0, end - now.tv_sec) * 1000)
            if remainingMilliseconds == 0 { return .timedOut }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, remainingMilliseconds)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 { return .timedOut }
            var chunk = [UInt8](repeating: 0, count: 512)
            let count = read(descriptor, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                return bytes.isEmpty ? .endOfFile : .line(String(decoding: bytes, as: UTF8.self))
            }
            bytes += chunk.prefix(count)
            if let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                return .line(String(decoding: bytes[..<newline], as: UTF8.self))
            }
        }
    }
}

/// The child's side of the readiness protocol, and the place where service managers are
/// told the mount is live.
struct Readiness {
    /// The pipe from the parent (`--ready-fd`), nil in a plain `--foreground` run.
    private let descriptor: Int32?

    init(descriptor: Int32?) { self.descriptor = descriptor }

    /// True when a parent is waiting for our line and will report errors itself.
    var hasParent: Bool { descriptor != nil }

    /// The mount is live: tell whoever waits for it.
    func ready() {
        send("ready")
        // systemd (Type=notify) will be told here: write "READY=1" to the datagram socket
        // named by $NOTIFY_SOCKET, as rclone does; libfuse sends no readiness itself.
    }

    /// Mounting failed; `message` is the one line the parent prints.
    func failed(_ message: String) {
        send("error " + message.replacingNewlines())
    }

    private func send(_ line: String) {
        guard let descriptor else { return }
        writeLine(line, to: descriptor)
        close(descriptor)
    }
}

extension String {
    func replacingNewlines() -> String {
        String(map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
