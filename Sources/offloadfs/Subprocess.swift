#if canImport(Glibc)
import Glibc
#endif

/// Starting other programs without fork(): a Swift process may have threads, and fork()
/// in a threaded process copies locks held by threads that no longer exist in the child.
/// posix_spawn creates the child and execs in one step.
enum Subprocess {
    /// Runs `program` (searched on PATH) with `arguments`, waits, and returns its exit
    /// status (128 + signal if it was killed, 127 if it could not be started).
    static func run(_ program: String, _ arguments: [String]) -> Int32 {
        guard let pid = spawn(program, arguments, searchPath: true) else { return 127 }
        return wait(for: pid)
    }

    /// Starts `program` with `arguments`; argv[0] is `displayName` (default: `program`).
    /// Returns nil, with errno set, if it could not start.
    static func spawn(_ program: String, _ arguments: [String], searchPath: Bool, displayName: String? = nil,
                      fileActions: UnsafePointer<posix_spawn_file_actions_t>? = nil,
                      attributes: UnsafePointer<posix_spawnattr_t>? = nil) -> pid_t? {
        var cArguments: [UnsafeMutablePointer<CChar>?] = ([displayName ?? program] + arguments).map { strdup($0) }
        cArguments.append(nil)
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let status = searchPath
            ? posix_spawnp(&pid, program, fileActions, attributes, cArguments, environ)
            : posix_spawn(&pid, program, fileActions, attributes, cArguments, environ)
        guard status == 0 else {
            errno = status  // posix_spawn returns its error instead of setting errno
            return nil
        }
        return pid
    }

    /// Waits for `pid` and returns its exit status, or 128 + the signal that killed it.
    static func wait(for pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return 127 }
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}
