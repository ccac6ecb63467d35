import CLinuxShims

/// CRC-32C (Castagnoli) over image metadata: superblocks and journal frames.
public enum Checksum {
    public static func crc32c(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return offloadfs_crc32c(crc, base, bytes.count)
    }

    public static func crc32c(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32c($0, continuing: crc) }
    }
}
