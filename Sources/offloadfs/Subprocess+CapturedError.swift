import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

extension Subprocess {
    /// Runs `program` (searched on PATH) with its stderr in an unlinked temporary file
    /// instead of ours, and returns its exit status and what it wrote there, so the
    /// caller can fold a helper's message (fusermount3's) into its own one line.
    static func runCapturingError(_ program: String, _ arguments: [String]) -> (status: Int32, error: String) {
        guard let capture = tmpfile() else { return (run(program, arguments), "") }
        defer { fclose(capture) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fileno(capture), STDERR_FILENO)
        guard let pid = spawn(program, arguments, searchPath: true, fileActions: &actions) else {
            return (127, "cannot run \(program): \(String(cString: strerror(errno)))")
        }
        let status = wait(for: pid)
        return (status, StderrCapture.readAll(fileno(capture)))
    }
}
