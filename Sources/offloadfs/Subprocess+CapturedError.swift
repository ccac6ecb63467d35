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
        return (status, readAll(fileno(capture)))
    }

    /// Everything in the file behind `descriptor`, from its start, as text.
    static func readAll(_ descriptor: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var offset: off_t = 0
        while true {
            let count = pread(descriptor, &chunk, chunk.count, offset)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            bytes += chunk.prefix(count)
            offset += off_t(count)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
