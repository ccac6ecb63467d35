#if canImport(Glibc)
import Glibc
#endif

/// The descriptors a process has open, as /proc/PROCESS/fd lists them.
enum ProcessDescriptors {
    /// The descriptor numbers open in `process` ("self" or a pid), nil when its fd
    /// directory cannot be read. For "self", the directory stream's own descriptor is
    /// among them.
    static func numbers(of process: String) -> [Int32]? {
        guard let directory = opendir("/proc/\(process)/fd") else { return nil }
        defer { closedir(directory) }
        var numbers: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let number = Int32(name) { numbers.append(number) }
        }
        return numbers
    }
}
