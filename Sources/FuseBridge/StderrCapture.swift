#if canImport(Glibc)
import Glibc
#endif

/// Runs code with this process's stderr (fd 2) pointed at an unlinked temporary file, and
/// returns what was written there.
///
/// Why: an unprivileged mount goes through the setuid helper fusermount3, which libfuse
/// starts with our stderr and which says why it refused only there ("option allow_other
/// only allowed if 'user_allow_other' is set in /etc/fuse.conf", "user has no write
/// access to mountpoint"). The background daemon's stderr is /dev/null, and libfuse itself
/// only learns that no descriptor came back. Capturing the helper's words lets the mount
/// error carry them, in one line, in the background and the foreground alike.
///
/// Only for short calls made before other threads log (the mount itself): anything any
/// thread writes to stderr meanwhile lands in the capture. offloadfs writes stderr with
/// write(2) only (no stdio buffer), so nothing is left to flush around the switch.
public enum StderrCapture {
    static func capturing<R>(_ body: () -> R) -> (result: R, text: String) {
        guard let file = tmpfile() else { return (body(), "") }
        defer { fclose(file) }
        let captureDescriptor = fileno(file)
        _ = fcntl(captureDescriptor, F_SETFD, FD_CLOEXEC)
        let saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)
        guard saved >= 0 else { return (body(), "") }
        // dup2 clears close-on-exec on fd 2: the helper inherits the capture as its stderr.
        dup2(captureDescriptor, STDERR_FILENO)
        let result = body()
        dup2(saved, STDERR_FILENO)
        close(saved)
        return (result, readAll(captureDescriptor))
    }

    /// Writes `line` and a newline to the real stderr (one write; errors are ignored, as
    /// there is nowhere left to report them).
    static func emit(_ line: Substring) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// Everything in the file behind `descriptor`, from its start, as text.
    public static func readAll(_ descriptor: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = pread(descriptor, &chunk, chunk.count, off_t(bytes.count))
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            bytes += chunk.prefix(count)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
