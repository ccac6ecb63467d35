/// Blocks for the bytes a commit places (`TreeVolume.place`), taken from the free space a
/// chunk at a time and handed out piece by piece (docs/ARCHITECTURE.md, "Placed bytes
/// written in runs").
///
/// `BlockSpace.allocateData` gives each allocation disk space first (`prepareBlocks`,
/// fallocate): one system call for each small file a commit places, 14% of the samples
/// of the commit of a `tar -x` of /usr/include (8,000 files). Here a chunk of up to
/// `chunkBlocks` gets disk space in one call, each piece's blocks are recorded as
/// allocated when handed out, and what is left of the last chunk goes back to the free
/// space when the commit has placed everything (`finish`), keeping its disk space: at
/// most 255 blocks, which the next allocations take first (a punch there would also
/// cost the files' disk space reserved a step ahead, `VolumeFileBlocks`).
/// Once a chunk cannot be had (the free space or the disk under the image is short), the
/// rest of the commit's pieces go through `allocateData`, which may take from the
/// metadata reserve as before.
/// Under the space lock, as the rest of the commit's block calls.
struct PlacementBlocks {
    static let chunkBlocks: UInt64 = 256

    /// Taken and prepared, not yet handed out.
    private var chunk: Range<UInt64> = 0..<0
    /// The blocks the RAM pieces' admission took and gave disk space
    /// (`VolumeFileBlocks.promiseBacking`), handed out first: the disk under the image
    /// may have none left for new ones by now.
    private var backing: [Range<UInt64>]

    init(backing: [Range<UInt64>] = []) {
        self.backing = backing
    }
    /// A chunk could not be had: piece by piece from now on.
    private var short = false

    /// At least one and at most `wanted` blocks, allocated for data (one reference each,
    /// recorded in the open generation's changes), with disk space (their bytes are the
    /// free space's; the placed bytes cover what the extents name).
    mutating func take(upTo wanted: UInt64, from space: BlockSpace) throws(FSError) -> Range<UInt64> {
        precondition(wanted > 0)
        if let first = backing.first {
            let handed = first.lowerBound..<min(first.upperBound, first.lowerBound + wanted)
            if handed.upperBound == first.upperBound {
                backing.removeFirst()
            } else {
                backing[0] = handed.upperBound..<first.upperBound
            }
            space.recordData(handed)
            return handed
        }
        if chunk.isEmpty {
            if short { return try space.allocateData(upTo: wanted) }
            do throws(FSError) {
                let taken = try space.takeData(upTo: max(wanted, Self.chunkBlocks))
                do throws(FSError) {
                    try space.prepareBlocks?(taken)
                } catch {
                    // A failed fallocate may have given part of the range disk space.
                    space.unprepare(taken)
                    space.giveBack(taken)
                    throw error
                }
                chunk = taken
            } catch .noSpace {
                short = true
                return try space.allocateData(upTo: wanted)
            }
        }
        let handed = chunk.lowerBound..<min(chunk.upperBound, chunk.lowerBound + wanted)
        chunk = handed.upperBound..<chunk.upperBound
        space.recordData(handed)
        return handed
    }

    /// Gives back what is left of the chunk (with its disk space, which the next
    /// allocations there use).
    /// Returns the promises' blocks not handed out, for `VolumeFileBlocks.holdUnusedBacking`.
    mutating func finish(_ space: BlockSpace) -> [Range<UInt64>] {
        let unused = backing
        backing = []
        guard !chunk.isEmpty else { return unused }
        space.giveBack(chunk)
        chunk = 0..<0
        return unused
    }
}
