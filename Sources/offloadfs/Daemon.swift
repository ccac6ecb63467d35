import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// Running the mount in the background without fork().
///
/// `offloadfs mount` without `--foreground` re-executes itself (/proc/self/exe) with
/// `--foreground --ready-fd 3` through posix_spawn, in a new session (setsid, so the
/// terminal's SIGHUP/SIGINT do not reach it), with stdin/stdout/stderr on /dev/null and
/// the write end of a pipe as fd 3; the child closes every other descriptor it inherited
/// (`closeInheritedDescriptors`). The child writes lines to that pipe: `progress DONE
/// TOTAL UNIT PHASE` whenever its start-up moved (`ProgressReporter`), `warning MESSAGE`
/// for what the person mounting must know (the parent prints it at the end), then exactly one
/// of `ready` (the mount answers requests) or `error MESSAGE`. The parent prints the
/// message (one line) and exits 1, or exits 0 on `ready`; on a terminal it shows the
/// progress meanwhile. It gives up (and stops the child) only when no line has come for
/// `StallBound.seconds`: a large image takes long to open, but it keeps reporting. If
/// the child dies without a line, the pipe reaches EOF and the parent reports its exit
/// status.
enum Daemon {
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
        let display = TerminalProgress(label: "mounting")
        // Printed once the progress line is gone, whatever the outcome.
        var warnings: [String] = []
        defer {
            display.finish()
            warnings.forEach(printWarning)
        }
        var last = "starting"
        while true {
            switch readLine(from: readEnd, stallSeconds: StallBound.seconds) {
            case .line(let line) where line == "ready":
                return .ready
            case .line(let line) where line.hasPrefix("warning "):
                warnings.append(String(line.dropFirst("warning ".count)))
            case .line(let line) where line.hasPrefix("error "):
                _ = Subprocess.wait(for: child)
                return .failed(String(line.dropFirst("error ".count)))
            case .line(let line):
                guard let reading = Readiness.parseProgress(line) else {
                    kill(child, SIGTERM)
                    _ = Subprocess.wait(for: child)
                    return .failed("the daemon sent an unexpected readiness line: \(line)")
                }
                last = reading.description
                display.show(last)
            case .stalled:
                kill(child, SIGTERM)
                _ = Subprocess.wait(for: child)
                return .failed("the daemon made no progress for \(Int(StallBound.seconds)) s (last: \(last)); stopped it")
            case .endOfFile:
                let status = Subprocess.wait(for: child)
                return .failed("the daemon exited with status \(status) before the mount was ready")
            }
        }
    }

    /// Closes every descriptor above stderr except `keep`. Run first thing in the
    /// background child: an inherited fd that someone waits on for EOF (a shell's command
    /// substitution, a test harness's exit-watch socket) would otherwise stay open for the
    /// daemon's whole life. (posix_spawn_file_actions_addclosefrom_np would do this in the
    /// parent, but glibc declares it only under _GNU_SOURCE, which Swift's Glibc lacks.)
    static func closeInheritedDescriptors(keeping keep: Int32) {
        // The directory stream's own descriptor is in the list; closing it again is a no-op.
        for descriptor in ProcessDescriptors.numbers(of: "self") ?? [] where descriptor > 2 && descriptor != keep {
            close(descriptor)
        }
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

    private enum ReadResult { case line(String), endOfFile, stalled }

    /// Bytes read past the last line returned (the child may send several lines at once).
    nonisolated(unsafe) private static var pending: [UInt8] = []

    /// Reads one line (up to a newline or EOF) from `descriptor`, giving up when nothing
    /// arrives for `stallSeconds`. Only the parent's one waiting thread calls it.
    private static func readLine(from descriptor: Int32, stallSeconds: Double) -> ReadResult {
        var deadline = monotonicSeconds() + stallSeconds
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                defer { pending.removeSubrange(...newline) }
                return .line(String(decoding: pending[..<newline], as: UTF8.self))
            }
            let remaining = deadline - monotonicSeconds()
            if remaining <= 0 { return .stalled }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(remaining * 1000, 60_000).rounded(.up)))
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 512)
            let count = read(descriptor, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 {
                defer { pending = [] }
                return pending.isEmpty ? .endOfFile : .line(String(decoding: pending, as: UTF8.self))
            }
            pending += chunk.prefix(count)
            // Any bytes are a sign of life; a whole line is what resets the bound.
            if pending.contains(UInt8(ascii: "\n")) { deadline = monotonicSeconds() + stallSeconds }
        }
    }

    private static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

/// The child's side of the readiness protocol, and the place where service managers are
/// told the mount is live.
final class Readiness: Sendable {
    /// The pipe from the parent (`--ready-fd`), nil in a plain `--foreground` run.
    private let descriptor: Int32?
    /// Set once `ready` or `failed` has closed the pipe.
    private let finished = PthreadMutex(false)

    init(descriptor: Int32?) { self.descriptor = descriptor }

    /// True when a parent is waiting for our line and will report errors itself.
    var hasParent: Bool { descriptor != nil }

    /// Start-up moved: `progress DONE TOTAL UNIT PHASE`.
    func progress(_ reading: ProgressMeter.Reading) {
        send("progress \(reading.done) \(reading.total) \(reading.unit.rawValue) \(reading.phase)", last: false)
    }

    /// Something the person mounting must know (the image is served read-only for want of
    /// room): the parent prints it as a warning, and the mount goes on.
    func warning(_ message: String) {
        send("warning " + message.replacingNewlines(), last: false)
    }

    /// The mount answers requests: tell whoever waits for it.
    func ready() {
        send("ready", last: true)
    }

    /// Mounting failed; `message` is the one line the parent prints.
    func failed(_ message: String) {
        send("error " + message.replacingNewlines(), last: true)
    }

    /// The reading a progress line carries, or nil if `line` is not one.
    static func parseProgress(_ line: String) -> ProgressMeter.Reading? {
        let fields = line.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: false)
        guard fields.count == 5, fields[0] == "progress", let done = UInt64(fields[1]), let total = UInt64(fields[2]),
              let unit = ProgressMeter.Unit(rawValue: String(fields[3])) else { return nil }
        return ProgressMeter.Reading(phase: String(fields[4]), done: done, total: total, unit: unit)
    }

    private func send(_ line: String, last: Bool) {
        guard let descriptor else { return }
        finished.withLock { done in
            guard !done else { return }
            writeLine(line.replacingNewlines(), to: descriptor)
            if last {
                close(descriptor)
                done = true
            }
        }
    }
}

extension String {
    func replacingNewlines() -> String {
        String(map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
