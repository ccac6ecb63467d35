/// Step 8 of a commit, the punch of the pending frees retirable at it, which runs after the
/// commit returns (`VolumePunches`; docs/ARCHITECTURE.md, step 4e). Under the commit lock
/// throughout (the one-commit-at-a-time order is what keeps a punch and the retirement of
/// what it punched apart); the space lock where the block space changes.
extension TreeVolume {
    /// Starts punching the pending frees of the commits before commit `number` (neither it
    /// nor the previous one references them) that no reader holds back: the pending frees
    /// of commit p are blocks roots before p use, so a reader of commit r keeps those of
    /// the commits after r. Freed nodes the block space keeps for reuse are left out
    /// (`ReusableNodes`), and kept nodes it let go of after their generation's punch are
    /// punched now. The next commit waits for the punch before it may retire them.
    /// Returns why the frees could not be read (they stay pending; a later commit tries
    /// again). Commit lock and space lock held.
    func startPunch(after number: UInt64) -> FSError? {
        let through = max(punchedThrough, min(number - 1, epochs.oldest ?? .max))
        let letGo = space.reusableNodes.startPunch()
        guard through > punchedThrough || !letGo.isEmpty else { return nil }
        do throws(FSError) {
            var ranges = BlockRanges(RangeSet(try space.blockTree.pendingFrees(from: punchedThrough + 1, through: through).map(\.blocks)))
            ranges.subtract(space.reusableNodes.unpunched)
            // Sorted and joined once: one insert at a time shifts the array each time.
            ranges.formUnion(BlockRanges(RangeSet(letGo)))
            punches.start(ranges.ranges, through: through, in: storage, counter: punchCounter)
            return nil
        } catch {
            space.reusableNodes.finishPunch(succeeded: false)
            return error
        }
    }

    /// Takes the outcome of a finished punch: when it succeeded, the next commit may retire
    /// what it punched (`BlockSpace.commitIsDurable`); a failed punch leaves its frees
    /// pending and unretired, and the next commit punches them again. Commit lock and
    /// space lock held.
    func accept(_ finished: VolumePunches.Finished?) {
        guard let finished else { return }
        space.reusableNodes.finishPunch(succeeded: finished.failure == nil)
        if finished.failure == nil {
            punchedThrough = finished.through
            space.commitIsDurable(generation: finished.through)
        }
        punches.accepted = finished
    }

    /// Lets go of every freed node the block space keeps for reuse, so that the next
    /// commits punch and retire them into the free space (`reclaimFreedSpace`, when a
    /// file found none; the namespace's commits at rest). Waits for the punch in flight
    /// first: a kept node's generation counts as punched only by a punch that left it
    /// out, which must have been accepted. The caller is outside any commit.
    /// Returns how many it let go of.
    @discardableResult
    public func letGoOfReusableNodes() -> Int {
        commitLock.withLock {
            let finished = punches.finish()
            return spaceLock.withLock {
                accept(finished)
                return space.reusableNodes.evict(keeping: 0, punchedThrough: punchedThrough)
            }
        }
    }

    /// Waits for the punch the last commit started and accepts it (nil: none was running).
    /// Commits do this themselves; an unmount that wants the image punched now, a
    /// benchmark or a test may too.
    @discardableResult
    public func waitForPunches() -> (blocks: Int, failure: FSError?)? {
        commitLock.withLock {
            let finished = punches.finish()
            spaceLock.withLock { accept(finished) }
            _ = punches.takeAccepted()
            return finished.map { ($0.blocks, $0.failure) }
        }
    }
}
