/// The block references a generation's extent items gained and lost, in the order the
/// changes happened: what the commit applies to the block tree.
///
/// An image extent holds one reference on every block its bytes touch (an extent that
/// starts or ends inside a block shares that block with its neighbour, and each holds a
/// reference). Cutting an extent in two therefore releases its blocks once and retains
/// each part's: a cut inside a block leaves that block one reference more, as the two
/// extents now both touch it. The commit applies every retain before any release, so no
/// count falls to zero on the way (a block whose extent was cut keeps references
/// throughout); a retain of a block the block tree holds free is the generation's
/// allocation of it.
public struct ExtentReferenceChanges: Equatable, Sendable {
    public var retained: [Range<UInt64>] = []
    public var released: [Range<UInt64>] = []

    public init() {}

    /// The blocks the image bytes `offset..<offset + length` touch.
    public static func blocks(offset: UInt64, length: UInt64) -> Range<UInt64> {
        let size = UInt64(BackingStore.blockSize)
        return offset / size..<(offset + length + size - 1) / size
    }

    mutating func retain(_ extent: ExtentItem) {
        if case .image(let offset, let length) = extent { retained.append(Self.blocks(offset: offset, length: length)) }
    }

    mutating func release(_ extent: ExtentItem) {
        if case .image(let offset, let length) = extent { released.append(Self.blocks(offset: offset, length: length)) }
    }

    mutating func append(_ other: ExtentReferenceChanges) {
        retained.append(contentsOf: other.retained)
        released.append(contentsOf: other.released)
    }
}
