import ArgumentParser
import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs unmount MOUNTPOINT`: asks the kernel to unmount; the daemon then sees its
/// session end, finishes and exits by itself.
struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Unmount an offloadfs mount point (the daemon then exits)."
    )

    @Argument(help: "The mount point to unmount.")
    var mountPoint: String

    func run() throws {
        let path = Preflight.absolutePath(mountPoint)
        guard let entry = MountTable.entry(at: path) else {
            printError("\(path) is not mounted")
            throw ExitCode.failure
        }
        guard entry.type == "fuse.offloadfs" else {
            printError("\(path) is not an offloadfs mount (it is \(entry.type))")
            throw ExitCode.failure
        }
        if geteuid() == 0 {
            guard umount2(path, 0) == 0 else {
                printError("cannot unmount \(path): \(String(cString: strerror(errno)))")
                throw ExitCode.failure
            }
        } else {
            // An unprivileged user unmounts through the setuid helper, as libfuse does.
            let status = Subprocess.run("fusermount3", ["-u", path])
            guard status == 0 else {
                printError("cannot unmount \(path): fusermount3 -u exited with status \(status)")
                throw ExitCode.failure
            }
        }
        // Like umount(8) on a block filesystem: once this returns, the image is free to
        // be mounted again. The daemon holds an flock on it until it has exited.
        guard Self.waitUntilReleased(image: entry.source) else {
            printError("\(path) is unmounted, but the daemon still holds \(entry.source) after 30 s")
            throw ExitCode.failure
        }
    }

    /// Waits until nobody holds the image's lock (the daemon has exited); true at once if
    /// the image cannot be opened (then there is nothing to wait for).
    static func waitUntilReleased(image: String, timeoutMilliseconds: Int = 30_000) -> Bool {
        let fd = open(image, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        for _ in 0..<max(1, timeoutMilliseconds / 50) {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 {
                flock(fd, LOCK_UN)
                return true
            }
            usleep(50_000)
        }
        return false
    }
}

/// Mounts as /proc/self/mounts lists them.
enum MountTable {
    struct Entry: Equatable {
        var source: String
        var mountPoint: String
        var type: String
    }

    static func entries() -> [Entry] {
        guard let file = fopen("/proc/self/mounts", "r") else { return [] }
        defer { fclose(file) }
        var result: [Entry] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let fields = String(cString: line).split(separator: " ")
            guard fields.count >= 3 else { continue }
            result.append(Entry(source: unescape(fields[0]), mountPoint: unescape(fields[1]),
                                type: String(fields[2])))
        }
        return result
    }

    /// The last (topmost) mount at `path`.
    static func entry(at path: String) -> Entry? {
        entries().last { $0.mountPoint == path }
    }

    /// The kernel writes space, tab, newline and backslash in paths as \ooo octal.
    static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.first {
            if byte == UInt8(ascii: "\\"), utf8.count >= 4,
               let value = UInt8(String(decoding: utf8.dropFirst().prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(4)
            } else {
                bytes.append(byte)
                utf8 = utf8.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
