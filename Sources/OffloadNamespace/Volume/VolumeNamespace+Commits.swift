import OffloadCore

/// The commits a mount runs besides the volume's own (journal budget, dirty cap): the
/// maintenance tick's and the unmount's. Each runs under the namespace lock, so no request
/// runs during it (the volume's readers and its `current` slot are one thread's at a time
/// until step 7 gives the request path its own locks; docs/ARCHITECTURE.md, "Steps" 4d).
extension VolumeNamespace {
    /// What the mount reports of the namespace (`offloadfs status`).
    public struct Usage: Sendable, Equatable {
        /// Inodes in the image, orphans included.
        public var inodes: UInt64
        /// Open file and directory handles.
        public var openHandles: Int
    }

    /// Takes the namespace lock once, briefly.
    public var usage: Usage {
        lock.withLock { Usage(inodes: inodeCount, openHandles: fileHandles.count + directoryHandles.count) }
    }

    /// Commits what changed since the last commit when the journal holds at least
    /// `journalBytes` since it (nothing changed: nothing to do); returns the commit's report.
    public func commitIfChanged(journalBytes: UInt64 = 1) throws(FSError) -> VolumeCommitReport? {
        try lock.withLock { () throws(FSError) -> VolumeCommitReport? in
            guard volume.journalBytesSinceCommit >= max(journalBytes, 1) else { return nil }
            let report = try volume.commit()
            evictCommittedFiles()
            return report
        }
    }

    /// The unmount: commits everything, the last slot marked cleanly unmounted
    /// (`TreeVolume.close`). A read-only volume has nothing to write.
    public func close() throws(FSError) {
        guard !volume.isReadOnly else { return }
        try lock.withLock { () throws(FSError) in
            if let journalFailure { throw journalFailure }
            try volume.close()
        }
    }
}
