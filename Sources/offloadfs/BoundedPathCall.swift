import Dispatch
import OffloadCore
#if canImport(Glibc)
import Glibc
#endif

/// stat and statvfs that give up: a path that leads through a hung mount (a stopped
/// daemon, an unreachable NFS or sshfs server) waits for ever, and `offloadfs info` must
/// not hang on another mount than the one it was asked about. The call runs on a thread
/// of its own; after `seconds` without an answer it is left waiting there (the process
/// exits soon, which ends it: FUSE and NFS waits end on the exit's SIGKILL) and nil is
/// the answer.
enum BoundedPathCall {
    static let defaultSeconds = 2.0

    /// stat(2) of `path`; nil on an error or without an answer in time.
    static func fileStatus(_ path: String, seconds: Double = defaultSeconds) -> stat? {
        call(seconds) { statOf(path) }
    }

    /// statvfs(3) of `path`, or its errno; nil without an answer in time.
    static func fileSystemStatusOrError(_ path: String, seconds: Double = defaultSeconds) -> Result<statvfs, StatusErrno>? {
        call(seconds) { () -> Result<statvfs, StatusErrno>? in
            var status = statvfs()
            return statvfs(path, &status) == 0 ? .success(status) : .failure(StatusErrno(value: errno))
        }
    }

    struct StatusErrno: Error { var value: Int32 }

    private static func call<T>(_ seconds: Double, _ body: @escaping @Sendable () -> T?) -> T? {
        let answer = PthreadMutex<Answer<T>>(Answer())
        let done = DispatchSemaphore(value: 0)
        let thread = DaemonThread.start {
            let value = body()
            answer.withLock { $0.value = value }
            done.signal()
        }
        // No thread to be had: the call itself, unbounded.
        guard let thread else { return body() }
        thread.detach()
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return answer.withLock { $0.value }
    }

    /// The C structs are plain values; handed over once, under the mutex.
    private struct Answer<T>: @unchecked Sendable {
        var value: T?
    }
}

private func statOf(_ path: String) -> stat? {
    var status = stat()
    return stat(path, &status) == 0 ? status : nil
}
