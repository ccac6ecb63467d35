#if canImport(Glibc)
import Glibc
#endif

// Freeing blocks and making the image durable: releases (quarantine, unshared marks),
// syncs (with the fsyncgate latch and the epochs clones wait on), and the reclaim that
// moves freed blocks towards reuse once their frees, then their punches, are durable.
// docs/ARCHITECTURE.md, "Quarantine" and "Power cuts", says why each step is there.

extension BackingStore {
    /// Drops a reference from every block that `range` touches. Blocks nobody references
    /// any more are punched out of the file and become free, or, after `deferReuse()`,
    /// wait in quarantine until `syncAndReclaim()`.
    public func release(_ range: Range<UInt64>) {
        release([range], unsharing: [])
    }

    /// Releases `ranges`, then, in the same hold of the allocator lock (so that no one
    /// finds them exclusive in between), marks the blocks of `dropped` that are still
    /// referenced as unshared: `dropped` are image bytes a file let go of in a change that
    /// is journaled but maybe not durable, and a power cut may bring that file's claim
    /// back, so whoever still shares them must not overwrite them in place until a sync
    /// (see `BlockAllocator.unshared`). Blocks that became free need no mark: they wait in
    /// quarantine. Without a journal nothing is marked.
    public func release(_ ranges: [Range<UInt64>], unsharing dropped: [Range<UInt64>]) {
        allocator.withLock { a in
            var freedBlocks = RangeSet<UInt64>()
            for range in ranges where !range.isEmpty {
                for freed in a.references.release(Self.blocks(touchedBy: range)) {
                    if !dropped.isEmpty { freedBlocks.insert(contentsOf: freed) }
                    if a.deferReuse {
                        a.quarantine(freed)
                    } else {
                        // Punch while holding the lock: once the range is in the free map another
                        // thread may allocate and write it, and a late punch would erase that.
                        punchOrZero(freed, &a)
                        a.free.insert(freed)
                    }
                }
            }
            guard a.deferReuse else { return }
            for range in dropped where !range.isEmpty {
                var survivors = RangeSet(Self.blocks(touchedBy: range))
                survivors.subtract(freedBlocks)
                for blocks in survivors.ranges { a.markUnshared(blocks) }
            }
        }
    }

    /// From now on, freed blocks are not reused until `syncAndReclaim()`: the journal
    /// that records the free must be on disk first, or a crash could bring back a file
    /// whose blocks already hold another file's bytes.
    public func deferReuse() {
        allocator.withLock { $0.deferReuse = true }
    }

    /// Holds (or lets go of) every reclaim: the journal holds it from the moment a frame
    /// could not be written until a checkpoint that began afterwards is durable, since
    /// until then the image on disk may still give freed blocks to their old files.
    public func holdReclaim(_ held: Bool) {
        allocator.withLock { $0.reclaimHeld = held }
    }

    /// Makes everything written to the image so far durable (fdatasync), then moves freed
    /// blocks one step towards reuse: blocks freed before the sync are punched (their
    /// frees are durable now), blocks punched by the previous reclaim become free (their
    /// punch is durable now), and blocks marked unshared before the sync may be
    /// overwritten in place again. The caller must have recorded every free in the
    /// journal before the blocks were released, which `OffloadedFile` guarantees by
    /// releasing storage only after its change observer ran.
    ///
    /// One reclaim at a time (`reclaiming`): a thread that runs out of space while another
    /// reclaims waits for it, then finds the blocks free.
    public func syncAndReclaim() throws(FSError) {
        // Read-only: nothing to make durable, and freed blocks are never reused.
        guard !isReadOnly else { return }
        try reclaiming.withLock { () throws(FSError) in
            // Blocks quarantined from here on may belong to records written after the sync.
            // While the journal is missing records, nothing is reclaimed at all: a block
            // whose free was never journaled must not be reused.
            let (toPunch, toFree) = allocator.withLock { a in a.reclaimHeld ? ([], []) : a.beginReclaim() }
            do throws(FSError) {
                try sync()
            } catch {
                allocator.withLock { $0.finishReclaim(toPunch: toPunch, toFree: toFree, succeeded: false) }
                throw error
            }
            // Nobody references the blocks to punch and they are in no free map, so no one
            // can write them while they are punched without the allocator lock.
            var supported = allocator.withLock { $0.punchSupported }
            let unpunched = toPunch.filter { !punchFree($0, supported: &supported) }
            allocator.withLock { a in
                if !supported { a.punchSupported = false }
                a.finishReclaim(toPunch: toPunch, toFree: toFree, succeeded: true, unpunched: unpunched)
            }
        }
    }

    fileprivate func punchOrZero(_ blocks: Range<UInt64>, _ a: inout BlockAllocator) {
        var supported = a.punchSupported
        _ = punchFree(blocks, supported: &supported)  // no journal: no power cut to fear
        a.punchSupported = supported
    }

    /// Punches `blocks` out of the file, or zeroes them where punching is not supported,
    /// so that they read as zeros when handed out again.
    /// Returns false when the blocks could be neither punched nor zeroed (a failing
    /// disk): they must not be handed out, since a power cut could show a new owner their
    /// bytes (its frame durable before its data); the caller keeps them waiting.
    func punchFree(_ blocks: Range<UInt64>, supported: inout Bool) -> Bool {
        let range = (blocks.lowerBound << Self.blockShift)..<(blocks.upperBound << Self.blockShift)
        if supported {
            do throws(FSError) {
                try storage.punch(range)
                return true
            } catch .notSupported {
                supported = false
            } catch {
                // Fall through to zeroing: the blocks must read as zeros when reused.
            }
        }
        return Self.zeroBlock.withUnsafeBytes { zeros in
            var offset = range.lowerBound
            while offset < range.upperBound {
                guard (try? storage.write(zeros, at: offset)) != nil else { return false }
                offset += UInt64(Self.blockSize)
            }
            return true
        }
    }

    fileprivate static let zeroBlock = [UInt8](repeating: 0, count: blockSize)
}
