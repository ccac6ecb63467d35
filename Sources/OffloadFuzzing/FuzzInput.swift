import OffloadCore
import OffloadSimulation

/// The fuzzer's input format: a sparse image, so that a small input describes a whole
/// image (superblocks, 1 MiB metadata segments, file data) and a real image's seed is a
/// few kilobytes.
///
///     byte 0     flags
///                  bit 0: fix the checksums (see `ChecksumRepair`) after assembling, so
///                         that mutations reach the record decoders, replay, analysis and
///                         repair instead of dying at a CRC check
///                  bit 1: the file ends right after the last chunk's bytes (a short,
///                         unaligned file) instead of at the end of the last block named
///     then chunks, until the input ends:
///       u16  block number (little-endian), modulo `maximumBlocks`
///       u16  byte count
///       ...  the bytes (fewer if the input ends first), written at block * 4096
///
/// The image is zeros except for the chunks, applied in order (later ones win), and
/// covers every block a chunk names or writes into: a chunk of 0 bytes only makes the
/// file that long.
public enum FuzzInput {
    public static let blockSize = BackingStore.blockSize
    /// Images of at most 8 MiB (2048 blocks): big enough for two 1 MiB metadata segments
    /// and file data, small enough that every execution stays fast.
    public static let maximumBlocks = 2048
    public static let maximumBytes = maximumBlocks * blockSize

    public static let fixChecksums: UInt8 = 1
    public static let unalignedEnd: UInt8 = 2

    /// The image an input describes, in memory.
    public static func image(from input: UnsafeRawBufferPointer) -> MemoryImageStorage {
        let image = MemoryImageStorage(maximumBytes: maximumBytes)
        guard let flags = input.first else { return image }
        var length = 0
        var lastEnd = 0
        var position = 1
        while position + 4 <= input.count {
            let block = Int(input[position]) | Int(input[position + 1]) << 8
            let count = Int(input[position + 2]) | Int(input[position + 3]) << 8
            position += 4
            let start = (block % maximumBlocks) * blockSize
            let available = min(count, input.count - position, maximumBytes - start)
            let bytes = UnsafeRawBufferPointer(rebasing: input[position..<position + available])
            // Inside the mapping by construction: a failure here is the harness's bug.
            try! image.write(bytes, at: UInt64(start))
            position += available
            lastEnd = start + available
            length = max(length, lastEnd, start + blockSize)
        }
        try! image.setLength(UInt64(flags & unalignedEnd != 0 ? lastEnd : length))
        if flags & fixChecksums != 0 { ChecksumRepair.apply(to: image) }
        return image
    }

    public static func image(from input: [UInt8]) -> MemoryImageStorage {
        input.withUnsafeBytes { image(from: $0) }
    }

    /// An input describing `image` (at most `maximumBytes`): a chunk per non-zero block
    /// with its trailing zeros left out, and an empty chunk at the last block so that the
    /// file keeps its length (rounded up to a block). `flags` as above.
    public static func encode(_ image: [UInt8], flags: UInt8 = fixChecksums) -> [UInt8] {
        precondition(image.count <= maximumBytes, "a fuzz input describes at most \(maximumBytes) bytes")
        var input: [UInt8] = [flags]
        func chunk(block: Int, bytes: ArraySlice<UInt8>) {
            input += [UInt8(block & 0xFF), UInt8(block >> 8), UInt8(bytes.count & 0xFF), UInt8(bytes.count >> 8)]
            input += bytes
        }
        let blocks = (image.count + blockSize - 1) / blockSize
        image.withUnsafeBytes { all in
            for block in 0..<blocks {
                let start = block * blockSize
                var end = min(start + blockSize, image.count)
                guard !MemoryImageStorage.isZero(UnsafeRawBufferPointer(rebasing: all[start..<end])) else { continue }
                while all[end - 1] == 0 { end -= 1 }
                chunk(block: block, bytes: image[start..<end])
            }
        }
        if blocks > 0 { chunk(block: blocks - 1, bytes: []) }
        return input
    }
}
