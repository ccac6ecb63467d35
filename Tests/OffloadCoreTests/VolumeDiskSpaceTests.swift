import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Files' blocks on format 2 get disk space a step ahead (`VolumeFileBlocks.giveDiskSpace`):
/// one `fallocate` for many small allocations, and never a block written through the
/// mapping without disk space (on a full disk that write would be SIGBUS, not ENOSPC),
/// although commits punch the blocks they free and later hand them out again.
final class VolumeDiskSpaceTests: XCTestCase {
    /// Which blocks of a simulated image have disk space: given by `reserve` and `write`
    /// (pwrite), taken by `punch`. Writes through the mapping are not seen, which is the
    /// point: a block a file holds must have had disk space before it was written so.
    final class DiskModel: @unchecked Sendable {
        struct State {
            var backed = Set<UInt64>()
            var reserves = 0
            /// Every reserve's blocks, in order.
            var reserved: [Range<UInt64>] = []
            /// Every block punched whole, ever.
            var punched = Set<UInt64>()
        }
        let state = PthreadMutex(State())

        init(_ disk: CrashSimulatingStorage) {
            disk.beforeChange { [state] change in
                state.withLock { s in
                    switch change {
                    case .reserve(let bytes):
                        s.reserves += 1
                        s.reserved.append(Self.blocks(bytes))
                        s.backed.formUnion(Self.blocks(bytes))
                    case .write(let bytes):
                        s.backed.formUnion(Self.blocks(bytes))
                    case .punch(let bytes):
                        // Only whole blocks lose their disk space.
                        let whole = ((bytes.lowerBound + 4095) >> 12)..<(bytes.upperBound >> 12)
                        if !whole.isEmpty { s.backed.subtract(whole) }
                        s.punched.formUnion(whole)
                    case .setLength, .sync:
                        break
                    }
                }
            }
        }

        static func blocks(_ bytes: Range<UInt64>) -> Range<UInt64> {
            bytes.isEmpty ? 0..<0 : (bytes.lowerBound >> 12)..<((bytes.upperBound - 1) >> 12) + 1
        }

        /// Blocks of `files`' image extents without disk space.
        func unbacked(_ files: [OffloadedFile]) -> [UInt64] {
            let backed = state.withLock { $0.backed }
            var missing: [UInt64] = []
            for file in files {
                for piece in file.extentList {
                    guard case .mmapOffload(let image, let length) = piece.extent else { continue }
                    missing += Self.blocks(image..<image + length).filter { !backed.contains($0) }
                }
            }
            return missing
        }
    }

    /// A small image, so that the space hands out freed blocks again soon, within the step
    /// given disk space ahead.
    func volume(capacity: UInt64 = 8 << 20) throws -> (CrashSimulatingStorage, DiskModel, TreeVolume) {
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity))
        let model = DiskModel(disk)
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 5, nameHashKey: SipHash24(key0: 3, key1: 4))
        try volume.perform((2..<2 + UInt64(VolumeFileBlocksTests.fileCount)).map {
            .attributes(inode: $0, NamespaceChangeScript.inode(type: 8, links: 1))
        })
        _ = volume.waitForPunches()   // none finishes later, in the middle of a test's count
        return (disk, model, volume)
    }

    func testSmallAllocationsShareOneFallocateUntilAPunchFinishes() throws {
        let (_, model, volume) = try volume()
        let store = try volume.fileBlocks()
        let before = model.state.withLock { $0.reserves }
        var taken: [Range<UInt64>] = []
        for _ in 0..<200 { taken.append(try store.allocate(byteCount: 4096, hint: nil)) }
        XCTAssertEqual(model.state.withLock { $0.reserves } - before, 1, "200 blocks in a row, one step of disk space")
        let backed = model.state.withLock { $0.backed }
        XCTAssertTrue(taken.allSatisfy { backed.isSuperset(of: DiskModel.blocks($0)) })
        let step = try XCTUnwrap(model.state.withLock { $0.reserved.last })
        XCTAssertEqual(step.count, Int(VolumeFileBlocks.backedStepBlocks))
        XCTAssertEqual(step.lowerBound, DiskModel.blocks(taken[0]).lowerBound, "the step starts at the first block handed out")
        volume.punchCounter.finished()  // a punch anywhere: the step is not trusted any more
        let next = try store.allocate(byteCount: 4096, hint: nil)
        XCTAssertEqual(model.state.withLock { $0.reserves } - before, 2, "a punch finished since the step began")
        XCTAssertEqual(model.state.withLock { $0.reserved.last }, DiskModel.blocks(next).lowerBound..<step.upperBound,
                       "inside the last step: its rest again, not a new step past it")
        for _ in 0..<100 { taken.append(try store.allocate(byteCount: 4096, hint: nil)) }
        XCTAssertEqual(model.state.withLock { $0.reserves } - before, 2, "the rest of the step serves what follows")
        for block in taken + [next] { store.release(block) }
    }

    /// Where disk space goes (`giveDiskSpace`'s rule, on made-up ranges): at the steps' end
    /// a new step; inside the last step, once a punch ended the trust in it, its rest;
    /// below the steps' end outside it (blocks churn freed and punched) the blocks alone,
    /// so the image keeps giving back what churn frees.
    func testStepsStartOnlyAtTheirEndAndTheLastOneIsRenewedWhole() throws {
        let (_, model, volume) = try volume()
        let store = try volume.fileBlocks()
        let end = volume.space.endBlock
        XCTAssertGreaterThan(end, 1600)
        store.lock.withLock {
            store.steppedThrough = 1500
            store.lastStep = 1000..<1500
            store.backedAhead = nil
        }
        func reserved(for blocks: Range<UInt64>) throws -> (last: Range<UInt64>?, count: Int) {
            try store.lock.withLock { () throws(FSError) in try store.giveDiskSpace(blocks) }
            return model.state.withLock { ($0.reserved.last, $0.reserves) }
        }
        XCTAssertEqual(try reserved(for: 600..<602).last, 600..<602, "below the steps' end, outside the last step")
        XCTAssertEqual(try reserved(for: 1200..<1201).last, 1200..<1500, "inside the last step: its rest")
        let count = try reserved(for: 1200..<1201).count
        XCTAssertEqual(try reserved(for: 1300..<1310).count, count, "covered by the rest reserved")
        volume.punchCounter.finished()
        XCTAssertEqual(try reserved(for: 1400..<1401).last, 1400..<1500, "a punch since: the rest again")
        XCTAssertEqual(try reserved(for: 1500..<1502).last, 1500..<min(end, 1500 + VolumeFileBlocks.backedStepBlocks),
                       "at the steps' end: a new step")
        XCTAssertEqual(store.lock.withLock { store.lastStep }, 1500..<min(end, 1500 + VolumeFileBlocks.backedStepBlocks))
    }

    /// The hazard itself: blocks inside the step given disk space ahead (nodes the
    /// commits copied and freed) are punched by a later commit, retired, and handed out
    /// again while that step is still the last one. They must get disk space again (the
    /// punch counted), not be trusted to the step.
    func testBlocksPunchedInsideTheStepGetDiskSpaceAgainWhenHandedOutAgain() throws {
        // 4 MiB: the step from the first data block reaches the end of the space.
        let (_, model, volume) = try volume(capacity: 4 << 20)
        let store = try volume.fileBlocks()
        let first = try store.allocate(byteCount: 4096, hint: nil)
        XCTAssertGreaterThanOrEqual((first.lowerBound >> 12) + VolumeFileBlocks.backedStepBlocks, volume.space.endBlock,
                                    "the test's premise: one step covers the space")
        var kept = [first]
        while store.lock.withLock({ store.space.freeEstimate }) > 200 {   // most of the space, inside the step
            kept.append(try store.allocate(byteCount: 4096, hint: nil))
        }
        let punchedBefore = model.state.withLock { $0.punched }
        for round in 0..<6 {   // each commit copies nodes; later ones punch and retire the old copies
            var item = NamespaceChangeScript.inode(type: 8, links: 1)
            item.size = UInt64(round)
            try volume.perform([.attributes(inode: 2 + UInt64(round % 4), item)])
            try volume.commit()
        }
        let punchedSince = model.state.withLock { $0.punched }.subtracting(punchedBefore)
        var again: [Range<UInt64>] = []
        while let taken = try? store.allocate(byteCount: 4096, hint: nil) { again.append(taken) }
        XCTAssertTrue(again.contains { !punchedSince.isDisjoint(with: DiskModel.blocks($0)) },
                      "the test's premise: blocks punched since the step began are handed out again")
        let backed = model.state.withLock { $0.backed }
        for range in again {
            XCTAssertTrue(backed.isSuperset(of: DiskModel.blocks(range)), "block \(range.lowerBound >> 12) handed out without disk space")
        }
        for range in kept + again { store.release(range) }
    }

    /// A disk without room for a step still gives the blocks asked for theirs (as format
    /// 1's growth step falls back to the exact size), and a disk without room for those
    /// refuses the allocation with ENOSPC, the blocks going back to the space.
    func testADiskWithoutRoomForAStepReservesTheBlocksAloneOrRefuses() throws {
        let memory = MemoryImageStorage(maximumBytes: 8 << 20)
        let disk = FaultInjectingStorage(memory)
        let volume = try TreeVolume.format(disk, capacityBytes: 8 << 20, imageID: 5, nameHashKey: SipHash24(key0: 3, key1: 4))
        _ = volume.waitForPunches()
        let store = try volume.fileBlocks()
        disk.inject(.init(.reserve, error: .noSpace))
        let blocks = try store.allocate(byteCount: 3 * 4096, hint: nil)
        XCTAssertEqual(disk.failures(of: .reserve), 1, "the step was tried first")
        XCTAssertEqual(store.lock.withLock { store.backedAhead?.blocks.count }, 3, "then the blocks alone")
        let more = try store.allocate(byteCount: 2 * 4096, hint: nil)
        XCTAssertEqual(store.lock.withLock { store.backedAhead?.blocks.count }, 2, "no step tried again before a punch")
        store.release(more)
        volume.punchCounter.finished()
        let after = try store.allocate(byteCount: 4096, hint: nil)
        XCTAssertEqual(store.lock.withLock { store.backedAhead?.blocks.count }, Int(VolumeFileBlocks.backedStepBlocks),
                       "a punch gave disk space back: steps again")
        store.release(after)
        let free = store.lock.withLock { store.space.freeEstimate }
        volume.punchCounter.finished()   // the step is not trusted: the next call reserves
        disk.inject(.init(.reserve, error: .noSpace, times: 2))
        XCTAssertThrowsError(try store.allocate(byteCount: 4 * 4096, hint: nil)) { XCTAssertEqual($0 as? FSError, .noSpace) }
        XCTAssertEqual(store.lock.withLock { store.space.freeEstimate }, free, "the refused blocks went back")
        XCTAssertNil(store.lock.withLock { store.backedAhead })
        store.release(blocks)
    }

    /// A commit's punch of pending frees counts once it ended, before the next commit,
    /// which waits for it, may retire (and so hand out again) what it punched.
    func testAPunchOfPendingFreesCountsBeforeItsWaitReturns() throws {
        let disk = CrashSimulatingStorage(maximumBytes: 1 << 20)
        try disk.reserve(0..<(1 << 20))
        let counter = PunchCounter()
        let punches = VolumePunches()
        punches.start([2..<4, 9..<10], through: 1, in: disk, counter: counter)
        let finished = punches.finish()
        XCTAssertNil(finished?.failure)
        XCTAssertEqual(counter.value, 1)
        punches.start([], through: 2, in: disk, counter: counter)
        _ = punches.finish()
        XCTAssertEqual(counter.value, 2, "every punch counts, an empty one too")
    }

    /// Runs `body`; true when it was refused with ENOSPC (the small image fills up).
    static func refusedForSpace(_ body: () throws(FSError) -> Void) throws(FSError) -> Bool {
        do throws(FSError) {
            try body()
            return false
        } catch .noSpace {
            return true
        }
    }

    /// Random writes, truncations and clones over four files with a commit every few
    /// operations (each punching the blocks the one before freed, which later ones hand out
    /// again): after every operation each block a file holds has disk space.
    func testEveryBlockAFileHoldsHasDiskSpaceThroughCommitsPunchesAndReuse() throws {
        let (_, model, volume) = try volume()
        let (files, journals) = try VolumeFileBlocksTests.openFiles(volume, models: nil)
        var random = SplitMix64(seed: 17)
        var commits = 0, full = 0
        let reservesBefore = model.state.withLock { $0.reserves }
        var allocatingOperations = 0
        for step in 0..<1200 {
            let file = files[Int(random.next() % UInt64(files.count))]
            let choice = random.next() % 10
            if choice < 6 {
                let count = Int(1 + random.next() % (96 << 10))
                let offset = random.next() % (1 << 20)
                let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: step), count: count)
                if try Self.refusedForSpace({ () throws(FSError) in try file.write(at: offset, bytes: bytes) }) {
                    full += 1
                } else {
                    allocatingOperations += 1
                }
            } else if choice < 8 {
                _ = try file.resize(to: random.next() % (1 << 20))
            } else {
                let source = files[Int(random.next() % UInt64(files.count))]
                if source !== file && source.size > 0 {
                    let offset = random.next() % source.size
                    let target = random.next() % (1 << 20)
                    if try Self.refusedForSpace({ () throws(FSError) in
                        try file.cloneRange(from: source, sourceOffset: offset, count: min(source.size - offset, 64 << 10), to: target)
                    }) {
                        full += 1
                    }
                }
            }
            XCTAssertEqual(model.unbacked(files), [], "step \(step): blocks held without disk space")
            if step % 12 == 11 {
                try volume.commit()
                commits += 1
            }
        }
        for journal in journals { XCTAssertNil(journal.failure) }
        let reserves = model.state.withLock { $0.reserves } - reservesBefore
        print("disk space: \(model.state.withLock { $0.punched.count }) blocks punched, \(reserves) reserves (nodes and journal segments included) for \(allocatingOperations) writes over \(commits) commits, \(full) refused for want of space")
    }
}
