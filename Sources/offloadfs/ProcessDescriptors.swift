#if canImport(Glibc)
import Glibc
#endif

/// The descriptors a process has open, as /proc/PROCESS/fd lists them.
enum ProcessDescriptors {
    /// The descriptor numbers open in `process` ("self" or a pid), nil when its fd
    /// directory cannot be read. For "self", the directory stream's own descriptor is
    /// among them.
    static func numbers(of process: String) -> [Int32]? {
        DirectoryNames.list("/proc/\(process)/fd")?.compactMap { Int32($0) }
    }
}

/// The names in a directory (readdir: `.` and `..` included), nil when it cannot be read.
enum DirectoryNames {
    static func list(_ path: String) -> [String]? {
        guard let directory = opendir(path) else { return nil }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            names.append(withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) })
        }
        return names
    }
}
