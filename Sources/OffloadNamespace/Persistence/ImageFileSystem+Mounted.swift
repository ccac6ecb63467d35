import OffloadCore

/// Format 1's image as the daemon mounts it (`MountedImage`).
extension ImageFileSystem: MountedImage {
    public var format: ImageFormat { .one }
    public var capacityBytes: UInt64 { store.capacityBytes }
    public var capacityIsSet: Bool { store.capacityIsSet }

    public func usage() -> MountedImageUsage {
        let statistics = store.statistics
        let namespaceUsage = namespace.usage
        return MountedImageUsage(
            path: store.path, capacityBytes: statistics.capacityBytes, availableBytes: store.availableBytes,
            freeBytes: store.availableBytes,
            imageBytes: statistics.imageBytes, diskBytes: statistics.diskBytes, liveBytes: statistics.liveBytes,
            reclaimableBytes: statistics.quarantinedBytes, inodes: UInt64(namespaceUsage.inodes),
            openHandles: UInt64(namespaceUsage.openHandles),
            // A read-only mount has no journal: nothing is written.
            journalBytes: journal?.journalBytesSinceCheckpoint ?? 0, checkpointBytes: journal?.checkpointBytes ?? 0,
            generation: journal?.generation)
    }

    /// A frame that could not be written fails every change until the next checkpoint,
    /// which captures the whole tree, repairs it.
    public var problem: String? {
        guard let failure = journal?.failure else { return nil }
        return "changes are refused until the next checkpoint: a journal frame could not be written (\(failure))"
    }

    public func startMaintenance(interval: Double, journalBytes: UInt64?,
                                 onWrite: (@Sendable (MaintenanceWrite) -> Void)?,
                                 onError: @escaping @Sendable (FSError) -> Void) {
        startMaintenance(interval: interval, checkpointAfter: journalBytes, onCheckpoint: { timing in
            onWrite?(MaintenanceWrite(kind: "checkpoint", seconds: timing.seconds, details: [
                ("journal_bytes", "\(timing.journalBytes)"), ("checkpoint_bytes", "\(timing.checkpointBytes)"),
            ]))
        }, onError: onError)
    }

    public func recordUnmountFailure(errno: UInt32) throws(FSError) -> Bool {
        guard let journal else { return false }
        try journal.recordUnmountFailure(errno: Int32(clamping: errno))
        return true
    }
}
