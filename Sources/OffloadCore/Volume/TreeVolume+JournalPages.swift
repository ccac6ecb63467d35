import Synchronization

extension TreeVolume {
    /// Makes the journal's next pages writable (`ImageStorage.prepareForWrite`) for the
    /// frame of an operation about to start: callers that will append under a lock other
    /// requests wait for call this before taking it, so that the page fault of the append,
    /// and what the host file system makes it wait for (a punch of the image, its journal
    /// commit), is not spent holding that lock. Two pages: a frame is at most a few KiB,
    /// and may cross into the next page. Pages prepared since the last sync finished are
    /// not prepared again (a sync's writeback write-protects the pages it cleans; the
    /// kernel's own writeback may too, and then the append faults as it did before).
    /// The pages are read under the journal lock and prepared after it: a call held up
    /// across two commits could prepare blocks the chain has let go of since, which
    /// changes no byte (a punched block may get disk space back until it is used again).
    /// Whether they were prepared already is read first without the lock
    /// (`arePreparedJournalPagesAhead`), which is how nearly every call ends.
    public func prepareJournalAppend() {
        guard !isReadOnly else { return }
        // Read before the pages are prepared: a sync that ends after it may have cleaned them.
        let syncs = syncLatch.finishedSyncs
        if arePreparedJournalPagesAhead(syncs: syncs) { return }
        let pages = journalLock.withLock { () -> UpcomingBytes? in
            // Whole blocks (a journal segment is whole blocks), as bytes.
            let pages = (journal?.upcomingBytes(Self.preparedJournalBytes) ?? UpcomingBytes()).wholeBlocks()
            if pages.isEmpty { return nil }
            if let last = preparedJournal, last.syncs == syncs, last.pages.covers(pages) { return nil }
            return pages
        }
        guard let pages else { return }
        if let range = pages.current { storage.prepareForWrite(range) }
        if let range = pages.spare { storage.prepareForWrite(range) }
        // Recorded once done: an operation that comes meanwhile prepares them too rather
        // than faulting under the lock while this call still waits (for a punch).
        journalLock.withLock {
            preparedJournal = (pages, syncs)
            // A seqlock: the version is odd while the three change, so a reader that finds
            // the same even version before and after read three stored together.
            preparedJournalVersion.add(1, ordering: .sequentiallyConsistent)
            preparedJournalSyncs.store(syncs, ordering: .sequentiallyConsistent)
            preparedJournalStart.store(pages.current?.lowerBound ?? 0, ordering: .sequentiallyConsistent)
            preparedJournalEnd.store(pages.current?.upperBound ?? 0, ordering: .sequentiallyConsistent)
            preparedJournalVersion.add(1, ordering: .sequentiallyConsistent)
        }
    }

    /// True when the pages prepared last (`preparedJournal`, with `syncs` finished syncs)
    /// hold the next `preparedJournalBytes` from the current chain's write position as of
    /// its last append: those bytes then lie in the current segment (the prepared range
    /// ends at the segment's end at the latest), which takes the next frame of up to
    /// `largestPooledFrame`. Without the journal lock; a wrong answer costs only a fault
    /// under it.
    private func arePreparedJournalPagesAhead(syncs: UInt64) -> Bool {
        let version = preparedJournalVersion.load(ordering: .sequentiallyConsistent)
        guard version & 1 == 0, preparedJournalSyncs.load(ordering: .sequentiallyConsistent) == syncs else { return false }
        let start = preparedJournalStart.load(ordering: .sequentiallyConsistent)
        let end = preparedJournalEnd.load(ordering: .sequentiallyConsistent)
        guard preparedJournalVersion.load(ordering: .sequentiallyConsistent) == version else { return false }
        let at = journalWriteOffset.load(ordering: .relaxed)
        return start <= at && at + UInt64(Self.preparedJournalBytes) <= end
    }

    /// How far ahead of the write position `prepareJournalAppend` prepares.
    static let preparedJournalBytes = 2 * BackingStore.blockSize
}
