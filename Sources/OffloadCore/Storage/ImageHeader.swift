#if canImport(Glibc)
import Glibc
#endif

/// Block 0 of every image: what marks a file as an offloadfs image. docs/FORMAT.md has
/// the byte layout.
///
/// Version 0 is a scratch image: its blocks hold file data only while it is mounted, and
/// each mount starts empty (the namespace is not written to the image yet). The header
/// exists so that offloadfs can tell its own images, which it may reset, from any other
/// file, which it must never write to.
enum ImageHeader {
    static let magic: [UInt8] = Array("OFFLOADFS-IMAGE\n".utf8)  // 16 bytes
    static let version: UInt32 = 0
    /// The header takes the whole first block; data blocks start after it.
    static let blocks: UInt64 = 1

    enum Kind: Equatable {
        case offloadfs(version: UInt32)
        case foreign
    }

    /// Reads what the first bytes of `fd` say the file is.
    static func identify(_ fd: Int32) throws(FSError) -> Kind {
        var bytes = [UInt8](repeating: 0, count: 24)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { throw .system(errno: errno, call: "read image header") }
        guard n == bytes.count, Array(bytes[0..<16]) == magic else { return .foreign }
        let version = bytes[16..<20].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let blockSize = bytes[20..<24].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard blockSize == UInt32(BackingStore.blockSize) else { return .foreign }
        return .offloadfs(version: version)
    }

    /// Writes a fresh header (and nothing else) to an empty file.
    static func write(_ fd: Int32) throws(FSError) {
        var block = [UInt8](repeating: 0, count: BackingStore.blockSize)
        block.replaceSubrange(0..<16, with: magic)
        withUnsafeBytes(of: version.littleEndian) { block.replaceSubrange(16..<20, with: $0) }
        withUnsafeBytes(of: UInt32(BackingStore.blockSize).littleEndian) { block.replaceSubrange(20..<24, with: $0) }
        let n = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard n == block.count else {
            throw n < 0 && (errno == ENOSPC || errno == EDQUOT) ? .noSpace : .system(errno: errno, call: "write image header")
        }
    }
}
