/// RAM pieces' promises: the blocks the commit of the RAM bytes admitted since the last
/// one will take, given disk space when they are admitted (docs/ARCHITECTURE.md,
/// "Promises the disk keeps").
extension VolumeFileBlocks {
    /// A RAM piece is written out by the commit of its generation: one data block for
    /// each piece longer than an inline extent (pieces merge, up to 4 KiB). So the RAM
    /// bytes admitted since the last commit, at most one block per 1 KiB of them, must fit
    /// in what data can still get; past that, small writes go to blocks at once, where
    /// ENOSPC is answered then. Without this, small writes made before a large file
    /// filled the image left the commit no room but the metadata reserve, which they
    /// overran: the volume failed (review, 2026-12-02). Inline-sized pieces count too:
    /// they may merge into longer ones.
    public func admitsMemoryPiece(byteCount: Int) -> Bool {
        lock.withLock {
            let bytes = admittedMemoryBytes + byteCount
            let promised = Self.blocks(forMemoryBytes: bytes)
            let owed = promised - min(promised, promiseBackingBlocks)
            let held = heldForCommits
            let needed = owed + held
            // The disk under the image may have room again since it was last read.
            if needed > space.usableFree, space.usableFree < space.freeEstimate { noteHostRoom() }
            guard needed <= space.usableFree else { return false }
            if owed > 0 {
                // A step ahead only where the room is ample: on a nearly full image the
                // blocks a step would hold back are data's.
                let room = space.usableFree - held
                let step = room >= 4 * Self.promiseStepBlocks ? max(owed, Self.promiseStepBlocks) : owed
                // A disk that refuses the step may still hold what is owed.
                guard backPromises(owed, step: step) || (step > owed && backPromises(owed, step: owed)) else {
                    return false
                }
            }
            let generation = delta.openNumber
            if let last = admittedMemory.indices.last, admittedMemory[last].generation == generation {
                admittedMemory[last].bytes += byteCount
            } else {
                admittedMemory.append((generation, byteCount))
            }
            return true
        }
    }

    /// Takes `step` blocks (at least `owed`) from the free space into `promiseBacking`,
    /// given disk space; false, with nothing taken, when the free space or the disk under
    /// the image has fewer than `owed` (the piece is then refused, and its write takes
    /// blocks at once, where ENOSPC is answered). Caller holds the lock.
    private func backPromises(_ owed: UInt64, step: UInt64) -> Bool {
        precondition(owed > 0 && step >= owed)
        var taken: [Range<UInt64>] = []
        var got: UInt64 = 0
        while got < step {
            guard let blocks = try? space.takeData(upTo: step - got) else { break }
            do throws(FSError) {
                defer { noteHostRoom() }
                try image.storage.reserveTaken(Self.bytes(of: blocks))
            } catch .notSupported {
                // No fallocate and no emulation (a backend of the tests): sparse.
            } catch {
                space.unprepare(blocks)  // a refused fallocate may have given part of them disk space
                space.giveBack(blocks)
                break
            }
            taken.append(blocks)
            got += UInt64(blocks.count)
        }
        guard got >= owed else {
            // Blocks the disk gave space to go back with it: the next allocations take them.
            for blocks in taken { space.giveBack(blocks) }
            return false
        }
        for blocks in taken { promiseBacking.insert(contentsOf: blocks) }
        promiseBackingBlocks += got
        return true
    }

    /// Hands the promises' blocks to the commit that places RAM pieces (caller holds the
    /// lock from here to its `commitPlacedMemoryPieces`); it hands back what it did not
    /// use (`holdUnusedBacking`).
    func takePromiseBacking() -> [Range<UInt64>] {
        let ranges = promiseBacking.ranges
        promiseBacking = BlockRanges()
        return ranges
    }

    /// What the commit did not hand out of the backing it took, settled with its
    /// promises at `commitPlacedMemoryPieces` (caller holds the lock).
    func holdUnusedBacking(_ ranges: [Range<UInt64>]) {
        // One commit at a time, settled before the next takes (a commit that throws in
        // between fails the volume).
        assert(unusedBacking.isEmpty, "a commit's unused backing was not settled")
        unusedBacking = ranges
    }

    /// Keeps, of the backing a commit did not use, what the pieces still promised need
    /// (admitted in later generations); gives back the rest: a step of it with its disk
    /// space, which the next allocations use first, and the rest punched, since the
    /// promise (a block a KiB) is larger than what pieces take and an image larger than
    /// its disk would otherwise keep that disk space (caller holds the lock).
    private func settleBacking() {
        var keep = promisedMemoryBlocks, keptSpace = Self.promiseStepBlocks
        for blocks in unusedBacking {
            let held = min(UInt64(blocks.count), keep)
            if held > 0 { promiseBacking.insert(contentsOf: blocks.lowerBound..<blocks.lowerBound + held) }
            keep -= held
            let rest = blocks.lowerBound + held..<blocks.upperBound
            let withSpace = rest.lowerBound..<rest.lowerBound + min(UInt64(rest.count), keptSpace)
            keptSpace -= UInt64(withSpace.count)
            if withSpace.upperBound < rest.upperBound { space.unprepare(withSpace.upperBound..<rest.upperBound) }
            if !rest.isEmpty { space.giveBack(rest) }
        }
        unusedBacking = []
        promiseBackingBlocks = promiseBacking.ranges.reduce(0) { $0 + UInt64($1.count) }
    }

    static func bytes(of blocks: Range<UInt64>) -> Range<UInt64> {
        (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
    }

    /// The blocks RAM pieces are promised that their backing does not hold yet: what the
    /// free space still owes them (caller holds the lock).
    var unbackedPromisedBlocks: UInt64 {
        let promised = promisedMemoryBlocks
        return promised - min(promised, promiseBackingBlocks)
    }

    /// The most data blocks `bytes` of RAM pieces take once written out.
    static func blocks(forMemoryBytes bytes: Int) -> UInt64 {
        bytes == 0 ? 0 : UInt64(bytes / ExtentItem.inlineLimit + 1)
    }

    /// Free blocks file data leaves to the commits of the changes not yet committed,
    /// beyond the metadata reserve (`TreeVolume.blocksHeldForCommits`): data that took
    /// them left those commits too little on a full image, and the first one failed the
    /// volume. A commit whose block space settled is not counted (its nodes are taken).
    /// Caller holds the lock.
    var heldForCommits: UInt64 {
        TreeVolume.blocksHeldForCommits(of: delta.commitLoad(after: space.committedGeneration), space: space)
    }

    /// Blocks the RAM pieces admitted since the last commit will take (caller holds the lock).
    var promisedMemoryBlocks: UInt64 { Self.blocks(forMemoryBytes: admittedMemoryBytes) }

    /// RAM bytes admitted and not yet written out (caller holds the lock).
    var admittedMemoryBytes: Int { admittedMemory.reduce(0) { $0 + $1.bytes } }

    /// After the commit of `generation` wrote out the RAM pieces of it and older ones
    /// (caller holds the space lock). Those admitted in later generations stay promised:
    /// resetting the count here let writes made while a commit ran outside the namespace
    /// lock be admitted past the free space.
    func commitPlacedMemoryPieces(through generation: UInt64) {
        admittedMemory.removeAll { $0.generation <= generation }
        settleBacking()
    }
}
