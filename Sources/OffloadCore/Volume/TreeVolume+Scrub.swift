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
/// free runs, punches the runs that may hold bytes, and the block space hands none of
/// them out before a commit after the punch is durable. What a mount frees itself is
/// punched before it is free again, so a group once scrubbed stays so.
extension TreeVolume {
    /// Free runs the scrub found holding bytes and punched so far (tests, reports).
    public var scrubbedRunCount: UInt64 { scrub.punchedRuns }

    /// Turns the scrub on (`BlockSpace.scrubFreeRuns`), after the opening's claims: what
    /// replay found in use is taken by then, so only free blocks are scrubbed. Syncs
    /// first: the page cache may hold dirty pages a killed mount left over unwritten
    /// extents (its slot may still say cleanly unmounted, when it was killed before its
    /// first commit), which `mayHoldData` takes for zeros on disk (it asks the extents);
    /// written back, they are seen. A sync with nothing to write costs little.
    func scrubFreeSpaceAsGroupsLoad() throws(FSError) {
        try syncImage()
        // What the block space may call as long as it lives (a file's store may outlive
        // the volume in tests), not the volume.
        let storage = self.storage, punches = punchCounter, scrub = self.scrub, latch = syncLatch
        scrub.setOpening(true)
        spaceLock.withLock {
            space.scrubFreeRuns = { (runs) throws(FSError) -> [Range<UInt64>] in
                guard !scrub.cannotPunch else { return [] }
                var punched: [Range<UInt64>] = []
                defer {
                    if !punched.isEmpty { punches.finished() }
                    scrub.punched(punched.count)
                }
                for blocks in runs {
                    let bytes = (blocks.lowerBound << BackingStore.blockShift)..<(blocks.upperBound << BackingStore.blockShift)
                    guard storage.mayHoldData(bytes) else { continue }
                    do throws(FSError) {
                        try storage.punch(bytes)
                    } catch .notSupported {
                        // Zeros written instead would count as data at every mount and
                        // fill a sparse image: the file system under this image cannot
                        // have its free space scrubbed (docs/ARCHITECTURE.md, "The free space
                        // scrubbed where allocations go", limits).
                        scrub.noteCannotPunch()
                        return punched
                    }
                    punched.append(blocks)
                }
                // The opening's commit has no retry: a nearly full image whose free space
                // a crash filled would find no room for its nodes while the punched runs
                // wait. Nothing answers requests yet, so its loads sync at once (through
                // the latch, as every sync of the image) and hold nothing back.
                if scrub.isOpening, !punched.isEmpty {
                    try latch.sync { () throws(FSError) in try storage.sync() }
                    return []
                }
                return punched
            }
        }
    }
}

/// What the scrub of the free space did (`TreeVolume.scrubFreeSpaceAsGroupsLoad`).
final class FreeSpaceScrub: Sendable {
    private let runs = Atomic<UInt64>(0)
    private let unsupported = Atomic<Bool>(false)
    private let opening = Atomic<Bool>(false)

    /// Free runs found holding bytes and punched.
    var punchedRuns: UInt64 { runs.load(ordering: .relaxed) }
    /// The image's file system cannot punch: nothing is scrubbed any more.
    var cannotPunch: Bool { unsupported.load(ordering: .relaxed) }
    /// True until the opening's commit is made (`TreeVolume.open`).
    var isOpening: Bool { opening.load(ordering: .relaxed) }

    func setOpening(_ value: Bool) { opening.store(value, ordering: .relaxed) }

    func punched(_ count: Int) { runs.wrappingAdd(UInt64(count), ordering: .relaxed) }
    func noteCannotPunch() { unsupported.store(true, ordering: .relaxed) }
}
