/// The value of (`ReservedObject.orphans`, orphan, ino): an inode with no name whose
/// storage is still to be freed, and how far freeing got. Deleting the extent items of a
/// file with millions of extents is done in bounded chunks across commits (btrfs's
/// orphan items do the same for truncates), so a crash resumes where the last commit left.
public struct OrphanItem: Equatable, Sendable {
    public enum State: UInt8, Sendable {
        /// Unlinked while open: freed when the last handle closes, or at the next mount.
        case unlinkedWhileOpen = 1
        /// Its items are being removed: those at file offsets from `resumeOffset` on remain.
        case dropping = 2
        /// Being shrunk to `targetSize`: extents from `resumeOffset` on remain to go.
        case truncating = 3
    }

    public static let encodedSize = 17
    public var state: State
    public var resumeOffset: UInt64
    public var targetSize: UInt64

    public init(state: State, resumeOffset: UInt64 = 0, targetSize: UInt64 = 0) {
        self.state = state
        self.resumeOffset = resumeOffset
        self.targetSize = targetSize
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: Self.encodedSize)
        w.u8(state.rawValue); w.u64(resumeOffset); w.u64(targetSize)
        return w.bytes
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> OrphanItem {
        var r = ByteReader(bytes)
        let raw = try r.u8()
        guard let state = State(rawValue: raw) else { throw ByteReader.Malformed(description: "orphan state \(raw)") }
        let resume = try r.u64(), target = try r.u64()
        try ItemCoding.requireEnd(r, "an orphan item")
        return OrphanItem(state: state, resumeOffset: resume, targetSize: target)
    }
}
