import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// The processes holding a flock on an image, as /proc/locks lists them: a daemon holds
/// one on the image it serves for as long as it runs (exclusive read-write, shared
/// read-only: `FileImageStorage`). Read from the kernel's table, so it needs neither the
/// daemon's answer (a stopped daemon gives none) nor the image's path to be reachable.
enum ImageLockHolders {
    struct Holder: Equatable {
        var pid: Int32
        var exclusive: Bool
    }

    /// The holders of flocks on the image at `path` (stat follows a symlink, as the mount
    /// did), in the table's order; empty when it cannot be stat'ed, none hold one, or
    /// /proc/locks cannot be read.
    ///
    /// Matched on the inode number, and confirmed by a descriptor of the holder's on the
    /// same file (device and inode, as stat gives them): /proc/locks names the super
    /// block's device, which stat does not on btrfs (a subvolume's own). A holder the
    /// reader's pid namespace cannot see is listed with pid 0, and left out.
    static func holders(ofImage path: String) -> [Holder] {
        var status = stat()
        guard stat(path, &status) == 0 else { return [] }
        let device = UInt64(status.st_dev), inode = UInt64(status.st_ino)
        return flocks().compactMap { lock in
            guard lock.pid > 0, lock.inode == inode, holdsFile(pid: lock.pid, device: device, inode: inode) else { return nil }
            return Holder(pid: lock.pid, exclusive: lock.exclusive)
        }
    }

    /// Who holds the image at `path`, for a refusal: " (held by pid N: COMMAND LINE)",
    /// each holder so, or "" when none is known. A lazily detached daemon, or a running
    /// `fsck`, held it while the refusal named neither (the admin hunt of the thirty-fifth
    /// session).
    static func describe(ofImage path: String) -> String {
        let found = holders(ofImage: path)
        guard !found.isEmpty else { return "" }
        return " (held by " + found.map { "pid \($0.pid): \(commandLine(of: $0.pid) ?? "?")" }.joined(separator: "; ") + ")"
    }

    /// Process `pid`'s command line, its arguments spaced, at most 160 characters.
    static func commandLine(of pid: Int32) -> String? {
        let fd = open("/proc/\(pid)/cmdline", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &bytes, bytes.count)
        guard count > 0 else { return nil }
        let words = bytes.prefix(count).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        let line = words.joined(separator: " ")
        return line.count > 160 ? String(line.prefix(157)) + "..." : line
    }

    /// Whether process `pid` has a descriptor on the file `device`/`inode` (stat of
    /// /proc/PID/fd/N follows the link to the open file itself).
    static func holdsFile(pid: Int32, device: UInt64, inode: UInt64) -> Bool {
        guard let descriptors = ProcessDescriptors.numbers(of: "\(pid)") else { return false }
        return descriptors.contains { descriptor in
            var status = stat()
            return stat("/proc/\(pid)/fd/\(descriptor)", &status) == 0
                && UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
        }
    }

    /// The file process `pid` holds a flock on (a daemon: its image) as its descriptor
    /// names it now: the path it has after a rename, and whether it has no name left
    /// (deleted). Nil when /proc/locks names no such lock or the descriptor is not found.
    static func lockedFile(of pid: Int32) -> (path: String, deleted: Bool, descriptor: Int)? {
        let locked = Set(flocks().filter { $0.pid == pid }.map(\.inode))
        guard !locked.isEmpty, let descriptors = ProcessDescriptors.numbers(of: "\(pid)") else { return nil }
        for descriptor in descriptors {
            let link = "/proc/\(pid)/fd/\(descriptor)"
            var status = stat()
            guard stat(link, &status) == 0, status.st_mode & S_IFMT == S_IFREG, locked.contains(UInt64(status.st_ino)) else {
                continue
            }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let count = readlink(link, &buffer, buffer.count - 1)
            guard count > 0 else { return nil }
            var path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let deleted = status.st_nlink == 0
            if deleted, path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
            return (path, deleted, Int(descriptor))
        }
        return nil
    }

    /// The flocks /proc/locks lists: "1: FLOCK  ADVISORY  WRITE 28440 fe:00:16408819 0
    /// EOF" (a waiter's line has "->" after the number and holds nothing). The inode is
    /// the last field of MAJOR:MINOR:INODE.
    private static func flocks() -> [(pid: Int32, exclusive: Bool, inode: UInt64)] {
        guard let table = readTable() else { return [] }
        return table.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "FLOCK", let pid = Int32(fields[4]),
                  let inode = fields[5].split(separator: ":").last.flatMap({ UInt64($0) }) else { return nil }
            return (pid, fields[3] == "WRITE", inode)
        }
    }

    private static func readTable() -> String? {
        try? String(contentsOfFile: "/proc/locks", encoding: .utf8)
    }
}
