#if canImport(Glibc)
import Glibc
#endif

/// Format 2's two commit slots on an image, blocks 0 and 1 (`CommitSlot`): reading the
/// current commit at open, writing the next one at a commit.
public enum CommitSlots {
    /// The current commit and the previous one (nil when that slot does not hold the
    /// commit just before), from both slots. A slot that is torn or damaged is passed
    /// over for the other; `.damagedImage` naming both slots' problems when neither holds
    /// a commit.
    public static func read(_ storage: any ImageStorage) throws(FSError) -> (current: CommitSlot, previous: CommitSlot?) {
        try read { (buffer, offset) throws(FSError) in try storage.read(into: buffer, at: offset) }
    }

    /// `read` through a file descriptor, with pread (`offloadfs info` of a mounted image,
    /// whose daemon holds the image's lock).
    public static func read(fd: Int32) throws(FSError) -> (current: CommitSlot, previous: CommitSlot?) {
        try read { (buffer, offset) throws(FSError) in
            let n = pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
            guard n >= 0 else { throw .system(errno: errno, call: "read commit slots") }
            return n
        }
    }

    private static func read(_ readBytes: (UnsafeMutableRawBufferPointer, UInt64) throws(FSError) -> Int)
        throws(FSError) -> (current: CommitSlot, previous: CommitSlot?) {
        var decoded: [CommitSlot.Decoded] = []
        for block in 0..<UInt64(2) {
            var bytes = [UInt8](repeating: 0, count: BackingStore.blockSize)
            let count = try bytes.withUnsafeMutableBytes { raw in
                Result { () throws(FSError) -> Int in try readBytes(raw, block << BackingStore.blockShift) }
            }.get()
            decoded.append(count == bytes.count ? CommitSlot.decode(bytes, at: block) : .damaged("slot \(block) lies past the end of the image"))
        }
        // A format 1 superblock in either block: the image is format 1, maybe with an
        // upgrade that wrote its first slot and not its second (the format 1 copy is then
        // the image's truth: docs/ARCHITECTURE.md, "The version 1 upgrade").
        for (block, slot) in decoded.enumerated() {
            if case .formatOne = slot {
                throw .invalidArgument("block \(block) holds a format 1 superblock: the image is format 1 (an upgrade to format 2 did not finish)")
            }
        }
        guard let chosen = CommitSlot.choose(decoded[0], decoded[1]) else {
            throw .damagedImage("no commit slot holds a commit: slot 0: \(describe(decoded[0])); slot 1: \(describe(decoded[1]))")
        }
        return chosen
    }

    /// Writes `slot` into the block its generation goes to (never the current commit's),
    /// then syncs: the commit is durable when this returns. Everything the slot names must
    /// already be durable (the caller synced the nodes first).
    public static func write(_ slot: CommitSlot, to storage: any ImageStorage) throws(FSError) {
        let bytes = slot.encoded()
        try bytes.withUnsafeBytes { raw in
            Result { () throws(FSError) in
                try storage.write(raw, at: CommitSlot.block(forGeneration: slot.generation) << BackingStore.blockShift)
            }
        }.get()
        try storage.sync()
    }

    /// The slots that hold no commit while the other does, and why: a slot write a crash
    /// cut short, or damage. The image opens from the other, and its next commit writes
    /// that slot again; until then the image has no previous commit to fall back to (fsck
    /// says so as a note: the hunt of the thirty-fifth session found it silent). A slot
    /// never written (all zeros) is left out.
    public static func unreadable(_ storage: any ImageStorage) -> [(block: UInt64, why: String)] {
        var found: [(block: UInt64, why: String)] = []
        for block in 0..<UInt64(2) {
            var bytes = [UInt8](repeating: 0, count: BackingStore.blockSize)
            let count = (try? bytes.withUnsafeMutableBytes { raw in
                Result { () throws(FSError) -> Int in try storage.read(into: raw, at: block << BackingStore.blockShift) }
            }.get()) ?? 0
            guard count == bytes.count, bytes.contains(where: { $0 != 0 }) else { continue }
            switch CommitSlot.decode(bytes, at: block) {
            case .commit, .formatOne: continue
            case let other: found.append((block, describe(other)))
            }
        }
        return found
    }

    static func describe(_ decoded: CommitSlot.Decoded) -> String {
        switch decoded {
        case .commit(let slot): return "commit \(slot.generation)"
        case .formatOne: return "a format 1 superblock"
        case .refused(let copy): return "refused (\(copy))"
        case .damaged(let why): return why
        }
    }
}
