/// The capacity a mount asks for (`--size`), and whether the image keeps it.
///
/// A capacity set once is kept in the image (the superblock's capacity, with its "set"
/// flag) and used by later mounts that do not set one. An image whose capacity was never
/// set follows a default the caller computes for each mount (the free space of the
/// filesystem holding the image plus the image's size), so it grows and shrinks with
/// that filesystem.
public enum CapacityRequest: Sendable, Equatable {
    /// Exactly this many bytes, kept in the image.
    case set(UInt64)
    /// The capacity the image keeps, if one was set; else `default`, not kept.
    case kept(default: UInt64)

    /// The bytes asked for before the image is read (`set`'s, or the default).
    var bytes: UInt64 {
        switch self {
        case .set(let bytes), .kept(default: let bytes): return bytes
        }
    }

    /// The capacity to use with an image whose superblock is `superblock` (nil for a new
    /// or emptied one), and whether it is kept.
    public func resolved(keptIn superblock: Superblock?) -> (bytes: UInt64, isSet: Bool) {
        resolved(kept: superblock.map { ($0.capacityBytes, $0.capacityIsSet) })
    }

    /// The same for a format 2 image whose current commit slot is `slot`.
    public func resolved(keptIn slot: CommitSlot) -> (bytes: UInt64, isSet: Bool) {
        resolved(kept: (slot.capacityBytes, slot.capacityIsSet))
    }

    private func resolved(kept: (bytes: UInt64, isSet: Bool)?) -> (bytes: UInt64, isSet: Bool) {
        switch self {
        case .set(let bytes):
            return (bytes, true)
        case .kept(let fallback):
            if let kept, kept.isSet { return (kept.bytes, true) }
            return (fallback, false)
        }
    }
}
