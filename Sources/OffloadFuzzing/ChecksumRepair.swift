import OffloadCore

/// Recomputes the CRC-32C of every superblock copy and of every frame along the chains
/// the superblocks name, so that a mutated image gets past the checksum checks and its
/// contents reach the decoders. Without it nearly every mutation a fuzzer makes would be
/// refused by a CRC and nothing behind it would be tested.
///
/// Only checksums change: magic, image id, stream, sequence numbers, lengths and kinds
/// stay as the fuzzer left them (they are what the reader must check). The walk follows
/// the rules loosely (any magic-bearing header whose payload fits in its segment gets its
/// checksum fixed, in order, until the first that does not) and is bounded by the
/// image's size: it must never trap or loop on a hostile image itself. Format 2's commit
/// slots, tree nodes and journal chains are fixed by `applyFormatTwo`.
public enum ChecksumRepair {
    static let block = UInt64(BackingStore.blockSize)
    /// The main part of a superblock copy, its checksum, and the previous-commit
    /// extension after it with its own checksum (docs/FORMAT.md).
    static let superblockBytes = 128
    static let superblockChecksumOffset = 24
    static let extendedBytes = 192
    static let extensionChecksumOffset = 128

    public static func apply(to image: any ImageStorage) {
        var heads: [LogSegment] = []
        for copy: UInt64 in 0..<2 {
            var bytes = image.readBytes(at: copy * block, count: extendedBytes)
            guard bytes.count == extendedBytes, Array(bytes[0..<16]) == Superblock.magic,
                  u32(bytes, 16) != 0,  // version 0 has no checksums
                  u32(bytes, 16) != CommitSlot.version else { continue }
            for offset in [superblockChecksumOffset, extensionChecksumOffset] {
                bytes.replaceSubrange(offset..<offset + 4, with: [0, 0, 0, 0])
            }
            write(Checksum.crc32c(Array(bytes[0..<superblockBytes])), to: image, at: copy * block + UInt64(superblockChecksumOffset))
            // An extension that is all zeros is absent; one with anything in it gets its
            // checksum too, so that the previous commit is read (and salvaged from).
            if bytes[superblockBytes...].contains(where: { $0 != 0 }) {
                write(Checksum.crc32c(bytes), to: image, at: copy * block + UInt64(extensionChecksumOffset))
            }
            if case .valid(let superblock) = Superblock.decode(image.readBytes(at: copy * block, count: extendedBytes)) {
                heads += [superblock.checkpoint, superblock.journal]
                if let previous = superblock.previous { heads += [previous.checkpoint, previous.journal] }
            }
        }
        for head in heads { fixChain(from: head, in: image) }
        applyFormatTwo(to: image)
    }

    static func fixChain(from head: LogSegment, in image: any ImageStorage) {
        let fileBytes = image.length
        var segment = head
        var visited = Set<UInt64>()
        while segment.length > 0, segment.start % block == 0, segment.start >= 2 * block,
              segment.start <= fileBytes, segment.length <= fileBytes - segment.start,
              segment.length <= UInt64(FuzzInput.maximumBytes), visited.insert(segment.start).inserted {
            let bytes = image.readBytes(at: segment.start, count: Int(segment.length))
            var position = 0
            var next: LogSegment?
            while next == nil, position + FrameHeader.size <= bytes.count, u32(bytes, position) == FrameHeader.magic {
                let length = Int(u32(bytes, position + 32)), kind = u32(bytes, position + 36)
                guard kind <= 1, length <= bytes.count - position - FrameHeader.size else { break }
                let frameEnd = position + FrameHeader.size + length
                let crc = Checksum.crc32c(Array(bytes[(position + 8)..<frameEnd]))
                write(crc, to: image, at: segment.start + UInt64(position) + 4)
                if kind == FrameHeader.Kind.link.rawValue && length >= 16 {
                    let payload = position + FrameHeader.size
                    next = LogSegment(start: u64(bytes, payload), length: u64(bytes, payload + 8))
                }
                position = frameEnd
            }
            guard let next else { return }
            segment = next
        }
    }

    static func u32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
    }

    static func u64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
    }

    private static func write(_ value: UInt32, to image: any ImageStorage, at offset: UInt64) {
        let bytes = (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
        // Inside the file by construction: a failure here is the harness's bug.
        try! bytes.withBytes { (buffer) throws(FSError) in try image.write(buffer, at: offset) }
    }
}
