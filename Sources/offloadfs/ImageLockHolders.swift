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

    /// The holders of flocks on the file `device`/`inode` (as stat gives them), in the
    /// table's order; empty when there are none or /proc/locks cannot be read.
    static func holders(device: UInt64, inode: UInt64, table: String? = nil) -> [Holder] {
        guard let table = table ?? readTable() else { return [] }
        let wanted = "\(hex2(major(device))):\(hex2(minor(device))):\(inode)"
        var result: [Holder] = []
        for line in table.split(separator: "\n") {
            // "1: FLOCK  ADVISORY  WRITE 28440 fe:00:16408819 0 EOF"; a waiter's line has
            // "->" after the number and holds nothing.
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "FLOCK", fields[5] == wanted, let pid = Int32(fields[4]) else { continue }
            result.append(Holder(pid: pid, exclusive: fields[3] == "WRITE"))
        }
        return result
    }

    /// The holders of flocks on the file at `path` (stat follows a symlink, as the mount
    /// did); empty when it cannot be stat'ed.
    static func holders(ofImage path: String) -> [Holder] {
        var status = stat()
        guard stat(path, &status) == 0 else { return [] }
        return holders(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
    }

    /// The file process `pid` holds a flock on (a daemon: its image) as its descriptor
    /// names it now: the path it has after a rename, and whether it has no name left
    /// (deleted). Nil when /proc/locks names no such lock or the descriptor is not found.
    static func lockedFile(of pid: Int32, table: String? = nil) -> (path: String, deleted: Bool)? {
        guard let table = table ?? readTable() else { return nil }
        var locked: [String] = []
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 6, fields[1] == "FLOCK", fields[4] == Substring("\(pid)") { locked.append(String(fields[5])) }
        }
        guard !locked.isEmpty, let descriptors = ProcessDescriptors.numbers(of: "\(pid)") else { return nil }
        for descriptor in descriptors {
            let link = "/proc/\(pid)/fd/\(descriptor)"
            var status = stat()
            // stat follows the link to the open file itself.
            guard stat(link, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            let device = UInt64(status.st_dev)
            guard locked.contains("\(hex2(major(device))):\(hex2(minor(device))):\(status.st_ino)") else { continue }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let count = readlink(link, &buffer, buffer.count - 1)
            guard count > 0 else { return nil }
            var path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let deleted = status.st_nlink == 0
            if deleted, path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
            return (path, deleted)
        }
        return nil
    }

    /// Linux's dev_t encoding (glibc's `gnu_dev_major`/`gnu_dev_minor`).
    static func major(_ device: UInt64) -> UInt64 { ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff)) }
    static func minor(_ device: UInt64) -> UInt64 { (device & 0xff) | ((device >> 12) & ~UInt64(0xff)) }

    private static func hex2(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return digits.count < 2 ? "0" + digits : digits
    }

    private static func readTable() -> String? {
        try? String(contentsOfFile: "/proc/locks", encoding: .utf8)
    }
}
