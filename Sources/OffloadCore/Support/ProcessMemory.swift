#if canImport(Glibc)
import Glibc
#endif

/// This process's memory as the kernel counts it.
public enum ProcessMemory {
    /// Anonymous resident bytes (what /proc/self/status calls RssAnon): resident less
    /// shared pages in /proc/self/statm, the shared being file-backed and shmem pages (the
    /// image's mapped pages among them). Nil when /proc cannot be read. A read of a short
    /// /proc file, a few microseconds.
    public static func anonymousResidentBytes() -> UInt64? {
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        // "size resident shared text lib data dt", in pages.
        let fields = buffer[..<count].split(separator: UInt8(ascii: " ")).prefix(3).map { field in
            field.reduce(UInt64(0)) { value, digit in
                (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) ? value * 10 + UInt64(digit - UInt8(ascii: "0")) : value
            }
        }
        guard fields.count == 3, fields[1] >= fields[2] else { return nil }
        return (fields[1] - fields[2]) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }
}
