import Synchronization

/// The free space made to read as zeros where allocations go (docs/ARCHITECTURE.md, "The
/// free space scrubbed where allocations go").
///
/// A crashed mount may leave bytes in blocks the block tree holds free: a commit's nodes
/// and placed bytes written before its slot, a file's blocks whose frame was lost. A file
/// that takes such a block writes its bytes there, and its frame is durable only with the
/// next sync; but a power cut before that sync may keep the frame's page and not the
/// bytes' (writeback has no order), and the file would then show what the crashed mount
/// left: another file's bytes, or tree nodes with names in them. ext4's ordered mode
/// forbids exactly that. So every mount, the first time an allocation loads a group's
/// free runs, makes the runs that may hold bytes read as zeros (a punch) and syncs before
/// any of them is handed out. What a mount frees itself is punched before it is free
/// again, so a group once scrubbed stays so.
extension TreeVolume {
    /// Free runs the scrub found holding bytes and punched so far (tests, reports).
    public var scrubbedRunCount: UInt64 { scrubbedRuns.value }

    /// Turns the scrub on (`BlockSpace.scrubFreeRuns`), after the opening's claims: what
    /// replay found in use is taken by then, so only free blocks are scrubbed.
    /// `syncingFirst`: after a kill the page cache may hold the dead daemon's dirty pages
    /// over unwritten extents, which `mayHoldData` takes for zeros (it asks the extents);
    /// a sync first writes them back, so that it sees them.
    func scrubFreeSpaceAsGroupsLoad(syncingFirst: Bool) throws(FSError) {
        if syncingFirst { try storage.sync() }
        // What the block space may call as long as it lives (a file's store may outlive
        // the volume in tests), not the volume.
        let storage = self.storage, punches = punchCounter, scrubbed = scrubbedRuns
        spaceLock.withLock {
            space.scrubFreeRuns = { (runs) throws(FSError) -> Void in
                let found = runs.filter { (blocks) -> Bool in
                    storage.mayHoldData((blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift))
                }
                guard !found.isEmpty else { return }
                defer { punches.finished() }
                try Self.punch(found, in: storage)
                // Durable before any of them is handed out: no power cut may bring the bytes
                // back under a frame that maps the block.
                try storage.sync()
                scrubbed.add(UInt64(found.count))
            }
        }
    }
}

/// Free runs the scrub found holding bytes and punched (`TreeVolume.scrubbedRunCount`).
final class ScrubbedRunCount: Sendable {
    private let count = Atomic<UInt64>(0)

    var value: UInt64 { count.load(ordering: .relaxed) }

    func add(_ runs: UInt64) { count.wrappingAdd(runs, ordering: .relaxed) }
}
