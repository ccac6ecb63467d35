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

extension ExtentReferenceChanges {
    /// `retained` and `released` with what they have in common taken out of both, block by
    /// block and reference by reference: a block retained r times and released l times is
    /// left retained r - l times, or released l - r times. Applying the result (retains
    /// first) leaves every count where the originals leave it, and since the commit
    /// applies every retain before any release, no count reached zero on the way either:
    /// the block tree cannot tell the two apart. What it saves is the work: an extent cut
    /// and joined again within one generation moved every block's reference down and up
    /// again, one tree change each (a file's random overwrites made commits take seconds).
    public static func cancelling(retained: [Range<UInt64>], released: [Range<UInt64>])
        -> (retained: [Range<UInt64>], released: [Range<UInt64>]) {
        guard !retained.isEmpty, !released.isEmpty else {
            return (retained.filter { !$0.isEmpty }, released.filter { !$0.isEmpty })
        }
        // Each boundary with the change of the net count (retains minus releases) there.
        var steps: [(boundary: UInt64, step: Int)] = []
        steps.reserveCapacity(2 * (retained.count + released.count))
        for blocks in retained where !blocks.isEmpty {
            steps.append((blocks.lowerBound, 1))
            steps.append((blocks.upperBound, -1))
        }
        for blocks in released where !blocks.isEmpty {
            steps.append((blocks.lowerBound, -1))
            steps.append((blocks.upperBound, 1))
        }
        steps.sort { $0.boundary < $1.boundary }
        var netRetained: [Range<UInt64>] = [], netReleased: [Range<UInt64>] = []
        var net = 0
        var start: UInt64 = 0
        for (boundary, step) in steps {
            if net != 0, start < boundary {
                let blocks = start..<boundary
                if net > 0 {
                    netRetained += repeatElement(blocks, count: net)
                } else {
                    netReleased += repeatElement(blocks, count: -net)
                }
            }
            net += step
            start = boundary
        }
        assert(net == 0, "every range ends")
        return (coalesced(netRetained), coalesced(netReleased))
    }

    /// Neighbouring ranges of one multiplicity joined (the sweep cuts at every boundary of
    /// either side). `ranges` is in the sweep's order: ascending, a range repeated once
    /// per reference.
    private static func coalesced(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
        // Group the sweep's output into layers: the k-th copy of each range goes to layer k,
        // and within a layer neighbours join.
        var layers: [[Range<UInt64>]] = []
        var index = 0
        while index < ranges.count {
            var end = index
            while end < ranges.count, ranges[end] == ranges[index] { end += 1 }
            for layer in 0..<(end - index) {
                if layer == layers.count { layers.append([]) }
                if let last = layers[layer].last, last.upperBound == ranges[index].lowerBound {
                    layers[layer][layers[layer].count - 1] = last.lowerBound..<ranges[index].upperBound
                } else {
                    layers[layer].append(ranges[index])
                }
            }
            index = end
        }
        return layers.flatMap { $0 }
    }
}
