import CFuse
import Logging
import Synchronization

/// Routes libfuse's own messages (fuse_log) into swift-log and remembers the last error,
/// so a failed mount can be reported as one line with libfuse's reason in it instead of
/// libfuse writing its own lines to stderr.
enum LibfuseLog {
    private struct State {
        var logger: Logger?
        var lastError: String?
        /// While set (session creation and mounting), errors are only remembered and
        /// logged at debug level: the caller reports them as a `MountError` line.
        var capturing = false
        /// libfuse sometimes builds one line from several fuse_log calls (e.g. "unknown
        /// option(s): `" + option + "'\n"); fragments wait here for their newline.
        var pending = ""
    }

    private static let state = Mutex(State())

    /// Installs the log function; later calls only replace the logger.
    static func install(logger: Logger) {
        state.withLock { $0.logger = logger }
        fuse_set_log_func { level, format, arguments in
            guard let format, let arguments else { return }
            var buffer = [CChar](repeating: 0, count: 1024)
            _ = offloadfs_vformat(&buffer, buffer.count, format, arguments)
            LibfuseLog.record(String(nulTerminated: buffer), isError: level.rawValue <= FUSE_LOG_ERR.rawValue)
        }
    }

    /// Runs `body` with libfuse errors captured instead of logged; returns the body's
    /// result and the last error libfuse reported meanwhile.
    static func capturingErrors<R>(_ body: () -> R) -> (R, lastError: String?) {
        state.withLock { $0.capturing = true; $0.lastError = nil }
        let result = body()
        let lastError = state.withLock { state -> String? in
            state.capturing = false
            if !state.pending.isEmpty {
                state.lastError = state.pending.trimmingTrailingNewlines()
                state.pending = ""
            }
            defer { state.lastError = nil }
            return state.lastError
        }
        return (result, lastError)
    }

    private static func record(_ fragment: String, isError: Bool) {
        let (line, logger, capturing) = state.withLock { state -> (String?, Logger?, Bool) in
            state.pending += fragment
            guard state.pending.hasSuffix("\n") else { return (nil, nil, false) }
            let line = state.pending.trimmingTrailingNewlines()
            state.pending = ""
            if isError { state.lastError = line }
            return (line, state.logger, state.capturing)
        }
        guard let message = line else { return }
        if isError && !capturing {
            logger?.error("libfuse: \(message)")
        } else {
            logger?.debug("libfuse: \(message)")
        }
    }
}

extension String {
    /// The string in a C buffer that holds a NUL somewhere (the rest is ignored).
    public init(nulTerminated buffer: [CChar]) {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self.init(decoding: bytes, as: UTF8.self)
    }

    public func trimmingTrailingNewlines() -> String {
        var result = Substring(self)
        while let last = result.last, last == "\n" || last == "\r" { result = result.dropLast() }
        return String(result)
    }
}
