import OffloadCore

/// The commits a mount runs besides the volume's own (journal budget, dirty cap): the
/// maintenance tick's and the unmount's. The maintenance closes the open generation under
/// the namespace lock, between two operations (so every file change's block calls and
/// its frame are in one generation: the touched marks' duty, "Files on format 2"), and
/// commits it outside the lock: requests go on meanwhile, in the next generation, reading
/// the closed one through the delta until the new root is published (docs/ARCHITECTURE.md,
/// "Step 7, first part").
extension VolumeNamespace {
    /// What the mount reports of the namespace (`offloadfs status`).
    public struct Usage: Sendable, Equatable {
        /// Inodes in the image, orphans included.
        public var inodes: UInt64
        /// Inodes the kernel references (its lookup counts): those the daemon keeps.
        public var referencedInodes: UInt64
        /// Open file and directory handles.
        public var openHandles: Int
    }

    /// Takes no namespace lock: the count is an atomic, the handles and the kernel's
    /// references have locks of their own.
    public var usage: Usage {
        Usage(inodes: inodeCount, referencedInodes: UInt64(kernelReferences.referencedCount),
              openHandles: fileCache.handleCount + handles.directoryCount)
    }

    /// Commits what changed since the last commit when `policy` says so (by default, at
    /// every call that finds any change: tests and tools that commit on demand); returns
    /// the commit's report. Idle (nothing changed), it
    /// still commits `settlingCommits` times after the last commit with changes, and while
    /// a drop goes on over several commits: what operations released becomes free space
    /// only some commits later (the reuse rule), so without them `df` would not follow an
    /// `rm` until something else changed. The first of them lets go of the freed nodes
    /// the volume keeps for reuse, which the settling then punches and frees as well.
    public func commitIfChanged(policy: VolumeCommitPolicy = .everyTick(journalBytes: 1)) throws(FSError) -> VolumeCommitReport? {
        // The free space for the low-space rule, read before the namespace lock: it takes
        // the space lock and counts free blocks, 100-290 us that every request waited for
        // when read under it (docs/ARCHITECTURE.md, "The loaded stat tail").
        let available = (try? volume.fileBlocks())?.availableBytes ?? 0
        // Forgotten inodes are dropped within a tick, in the generation this may close.
        dropForgottenNow()
        var atRest = false
        let closed = try lock.withWriteLock { () throws(FSError) -> Bool in
            // An operation's own commit is under way (`commitIfOverBudget` closed a
            // generation and commits outside the lock): closing now would wait for its
            // space lock (the chain switch takes a segment) with this lock held alone.
            // The closed generation is committed below, by whichever caller comes first.
            guard !volume.delta.hasClosedGeneration else { return true }
            let journalBytes = volume.journalBytesSinceCommit
            if journalBytes > 0 {
                let secondsSinceCommit = Double(MonotonicClock.nanoseconds() &- lastMaintenanceCommit) / 1e9
                let lowOnSpace = VolumeCommitPolicy.isLowOnSpace(availableBytes: available,
                                                                 capacityBytes: volume.current.capacityBytes)
                guard policy.commitsChanges(journalBytes: journalBytes, budget: volume.budget, lowOnSpace: lowOnSpace,
                                            secondsSinceLastAppend: volume.secondsSinceLastAppend,
                                            secondsSinceCommit: secondsSinceCommit) else { return false }
                settling = Self.settlingCommits
            } else if try droppingOrphanLeft() {
                // This commit takes a drop a step further (`FileSystemTree.dropBudget`
                // extents a commit), which frees blocks too: the settling commits follow
                // its last step (they followed only commits of new changes, so an `rm` of
                // a file of many extents showed in `df` only once something else changed),
                // and at rest the steps run one after another as the settling commits do
                // (`owesSettlingCommits`), not one a tick.
                settling = Self.settlingCommits
            } else if settling > 0 {
                atRest = settling == Self.settlingCommits
                settling -= 1
            } else {
                return false
            }
            try volume.closeOpenGeneration()
            lastMaintenanceCommit = MonotonicClock.nanoseconds()
            return true
        }
        guard closed else { return nil }
        // At rest, the freed nodes kept for the next commits' nodes go to the punch too,
        // so that the settling commits give their space back (docs/ARCHITECTURE.md,
        // "Freed nodes reused without a punch").
        if atRest { volume.letGoOfReusableNodes() }
        // Outside the namespace lock. An operation's own commit (its journal budget) may
        // have committed the closed generation first: then there is nothing left to do.
        let report = try volume.commitClosed()
        // Without the lock: the idle pooled readers hold back the punch of what this
        // commit freed (the pool has its own lock), and an eviction takes only a closed
        // file, under the file cache's lock (as a last close evicts, beside every change).
        dropIdleReaders()
        evictCommittedFiles()
        return report
    }

    /// Whether a drop carried over to later commits is still under way (an orphan item
    /// in the dropping state).
    private func droppingOrphanLeft() throws(FSError) -> Bool {
        let taken = try readers.take()
        defer { readers.give(taken) }
        return try taken.reader.orphans().contains(where: { $0.item.state == .dropping })
    }

    /// Whether settling commits are still owed (`settlingCommits`): the maintenance runs
    /// them one after another when the mount is at rest.
    public var owesSettlingCommits: Bool { lock.withReadLock { settling > 0 } }

    /// Commits after the last one with changes that make its released blocks free space.
    /// Blocks released in generation g: commit g makes them pending frees; the punch
    /// started after commit g + 1 is accepted by commit g + 2, which retires them (held
    /// until it is durable); the punch after commit g + 3, accepted by commit g + 4, hands
    /// them out. So four more.
    static let settlingCommits = 4

    /// The unmount: commits everything, the last slot marked cleanly unmounted
    /// (`TreeVolume.close`). A read-only volume has nothing to write.
    public func close() throws(FSError) {
        guard !volume.isReadOnly else { return }
        dropForgottenNow()
        try lock.withWriteLock { () throws(FSError) in
            if let journalFailure { throw journalFailure }
            dropIdleReaders()
            try volume.close()
        }
    }
}
