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

    /// CRC-32C of `bytes[0..<length]` with the 4-byte fields at `zeroed` taken as zero: the
    /// rule of a structure that holds its own checksums (superblocks, commit slots).
    static func crc32c(_ bytes: [UInt8], prefix length: Int, zeroing zeroed: [Int]) -> UInt32 {
        var copy = Array(bytes[0..<length])
        for offset in zeroed { copy.replaceSubrange(offset..<offset + 4, with: [0, 0, 0, 0]) }
        return crc32c(copy)
    }
}
