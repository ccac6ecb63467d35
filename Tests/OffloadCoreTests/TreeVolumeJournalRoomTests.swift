import XCTest
import Synchronization
import Dispatch
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Journal room claimed without the journal lock (`TreeVolume+JournalRoom.swift`): the
/// lock grants room ahead and operations claim from it with a compare-and-swap, so an
/// operation takes the journal lock once, for its append. What a claim guarantees is
/// unchanged: a full image refuses an operation having changed nothing, and a frame whose
/// room was claimed is written, also across chain switches (commits) and with threads
/// claiming and appending at once. Debug builds check the invariant (the chain's room
/// covers what is granted) after every append.
final class TreeVolumeJournalRoomTests: XCTestCase {
    /// A thousand small operations claim their room under the journal lock a few times
    /// (each grant holds about a hundred of their claims), not a thousand.
    func testSmallOperationsClaimTheirRoomWithoutTheJournalLock() throws {
        let volume = try Self.volume(capacity: 64 << 20)
        let before = volume.journalRoomGrants.load(ordering: .relaxed)
        for k in 0..<1_000 {
            try volume.perform([.attributes(inode: UInt64(1_000 + k), TreeVolumeReserveTests.file)])
        }
        let grants = volume.journalRoomGrants.load(ordering: .relaxed) - before
        XCTAssertGreaterThan(grants, 0, "the room was granted at some point")
        XCTAssertLessThanOrEqual(grants, 20, "\(grants) of 1,000 claims took the journal lock")
        XCTAssertEqual(volume.claimedJournalRoom, 0, "every claim was spent")
        XCTAssertNil(volume.failure)
    }

    /// A frame over `largestPooledFrame` whose reservation covers it (a file change's: a
    /// 4 KiB write held in RAM makes one) takes the journal lock once for its claim, at
    /// the reservation, which raised the spares' floor to it, and once for its append:
    /// `perform` claims nothing more (eed255d claimed again under the lock, which also
    /// gave up the room granted ahead to every other operation).
    func testALargeFrameItsReservationCoversClaimsUnderTheLockOnce() throws {
        let volume = try Self.volume(capacity: 64 << 20)
        let value = [UInt8](repeating: 0x42, count: 5_000)
        for round in 0..<3 {
            let before = volume.journalRoomGrants.load(ordering: .relaxed)
            let claim = try volume.reserveRoom(changeBytes: value.count + 64)
            try volume.perform([.setXattr(inode: 1, name: Array("user.r\(round)".utf8), value: value)], reserved: claim)
            XCTAssertEqual(volume.journalRoomGrants.load(ordering: .relaxed) - before, 1, "round \(round)")
        }
        XCTAssertEqual(volume.claimedJournalRoom, 0)
        XCTAssertNil(volume.failure)
    }

    /// A claim made before commits switch the chain, larger than a new chain's first
    /// segment, is written to the chain of its day: each switch makes the new chain's room
    /// for what was claimed (without it the chain's room falls short of what is granted,
    /// which debug builds check at the next append).
    func testAClaimHeldAcrossCommitsIsWrittenToTheNewChain() throws {
        let volume = try Self.volume(capacity: 64 << 20)
        let values = [[UInt8](repeating: 0x5A, count: 40_000), [UInt8](repeating: 0xA5, count: 40_000)]
        // Two claims: the first takes a spare that the next chain starts in, so the two
        // together are more than that chain's first segment holds.
        let claims = try values.map { try volume.reserveRoom(changeBytes: $0.count + 64) }
        XCTAssertGreaterThan(claims.reduce(0, +), 2 * MetadataLog.firstJournalSegmentBytes)
        XCTAssertEqual(volume.claimedJournalRoom, claims.reduce(0, +))
        for round in 0..<6 {
            try volume.perform([.setXattr(inode: 1, name: Array("user.r\(round)".utf8), value: [UInt8(round)])])
            try volume.commit()
        }
        XCTAssertEqual(volume.claimedJournalRoom, claims.reduce(0, +), "commits kept the claims")
        for (index, value) in values.enumerated() {
            try volume.perform([.setXattr(inode: 1, name: Array("user.held\(index)".utf8), value: value)], reserved: claims[index])
        }
        XCTAssertNil(volume.failure)
        XCTAssertEqual(volume.claimedJournalRoom, 0)
        for (index, value) in values.enumerated() {
            XCTAssertEqual(try volume.reader().xattr(1, name: Array("user.held\(index)".utf8)), value)
        }
    }

    /// Spare segments the chain took for claims and never linked (the claims given back)
    /// go back at the unmount: carried into the clean slot's chain, it was recorded by
    /// the clean commit as a journal segment that no chain links, which no later mount
    /// knew of (found by this session's change: `VolumeCheck` after a reopen reported its
    /// blocks).
    func testASpareSegmentLeftUnlinkedAtTheUnmountIsGivenBack() throws {
        let disk = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
        // Two claims of more than the first segment's room: a spare is taken for each (a
        // chain switch continues in the first spare, so one alone would not stay unlinked).
        let claims = [try volume.reserveRoom(changeBytes: 100_000), try volume.reserveRoom(changeBytes: 100_000)]
        let spares = try XCTUnwrap(volume.journalLock.withLock { volume.journal?.spareCount })
        XCTAssertEqual(spares, 2, "the claims took two spares (the test's premise)")
        for claim in claims { volume.releaseRoom(claim) }
        try volume.close()
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
        let reopened = try TreeVolume.open(disk)
        try reopened.perform([.setXattr(inode: 1, name: Array("user.a".utf8), value: [1])])
        try reopened.close()
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
    }

    /// A crash after a commit while spare segments the chain took for claims are not
    /// linked yet leaves no blocks behind: a spare is recorded in the block tree only once
    /// the chain links it (until then it is taken and recorded nowhere, like the metadata
    /// reserve), so the crash leaves it free. Recorded when taken, the commit wrote its
    /// blocks as journal blocks no chain links, and no later mount knew of them ("block
    /// 74: the block tree says 1 x journal, the image uses it 0 x none"). A spare linked
    /// after the commit and before the crash is claimed by the replay, as any segment the
    /// chain took since the last commit.
    func testACrashWhileSparesAreUnlinkedLeavesNoBlocksBehind() throws {
        for linked in [false, true] {
            let disk = CrashSimulatingStorage(maximumBytes: 64 << 20)
            let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
            try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
            try volume.commit()
            // Two claims of more than the first segment's room: a spare for each.
            let claims = [try volume.reserveRoom(changeBytes: 100_000), try volume.reserveRoom(changeBytes: 100_000)]
            let spares = { try XCTUnwrap(volume.journalLock.withLock { volume.journal?.spareCount }) }
            XCTAssertEqual(try spares(), 2, "the claims took two spares (the test's premise)")
            try volume.perform([.setXattr(inode: 1, name: Array("user.a".utf8), value: [1])])
            // The commit (durable) sees the spares unlinked: its chain switch carries them
            // to the new chain.
            try volume.commit()
            XCTAssertGreaterThan(try spares(), 0, "spares the commit saw unlinked")
            var written = 0
            if linked {
                // Frames until the chain links the spares.
                while try spares() > 0 {
                    try volume.perform([.setXattr(inode: 1, name: Array("user.f\(written)".utf8),
                                                  value: [UInt8](repeating: 7, count: 2_000))], commitsAtBudget: false)
                    written += 1
                }
            }
            try volume.perform([.setXattr(inode: 1, name: Array("user.b".utf8), value: [2])], commitsAtBudget: false)
            try volume.storage.sync()
            var rng = SplitMix64(seed: 7)
            let crashed = CrashSimulatingStorage(maximumBytes: 64 << 20, initial: disk.crashImage(using: &rng, keep: 1, torn: 0))
            let reopened = try TreeVolume.open(crashed)
            XCTAssertEqual(try reopened.reader().xattr(1, name: Array("user.b".utf8)), [2], "linked \(linked)")
            if written > 0 {
                XCTAssertEqual(try reopened.reader().xattr(1, name: Array("user.f\(written - 1)".utf8))?.count, 2_000)
            }
            try reopened.close()
            let check = try VolumeCheck.run(crashed)
            XCTAssertTrue(check.isClean, "linked \(linked): \(check.problems.prefix(3))")
            // Without the crash: the spares linked are recorded by the unmount's commits
            // (queued at the link, `TreeVolumeLogSpace.recordLinkedSpares`), the others
            // given back.
            for claim in claims { volume.releaseRoom(claim) }
            try volume.close()
            let unmounted = try VolumeCheck.run(disk)
            XCTAssertTrue(unmounted.isClean, "linked \(linked), unmounted: \(unmounted.problems.prefix(3))")
        }
    }

    /// Spares the new chain links after a generation closed (its chain switch) and before
    /// that generation's commit: the commit records them (`recordLinkedSpares`) and its
    /// slot names the chain that links them. A crash before that commit replays the old
    /// chain into the new one and claims them; a crash after it finds them recorded; the
    /// unmount leaves them recorded once. Each image opens to what was written, and the
    /// volume check finds every block's use as the chains and trees say.
    func testSparesLinkedBetweenAGenerationsCloseAndItsCommitAreRecordedOnce() throws {
        for crash in ["before the commit", "after the commit", "none"] {
            let disk = CrashSimulatingStorage(maximumBytes: 64 << 20)
            let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
            try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
            try volume.commit()
            try volume.closeOpenGeneration()
            let segments = { try XCTUnwrap(volume.journalLock.withLock { volume.journal?.segments.count }) }
            var written = 0
            while try segments() < 3 {
                try volume.perform([.setXattr(inode: 1, name: Array("user.f\(written)".utf8),
                                              value: [UInt8](repeating: 7, count: 2_000))], commitsAtBudget: false)
                written += 1
            }
            if crash != "before the commit" {
                XCTAssertNotNil(try volume.commitClosed(), "the closed generation committed")
            }
            try volume.perform([.setXattr(inode: 1, name: Array("user.b".utf8), value: [2])], commitsAtBudget: false)
            if crash == "none" {
                try volume.close()
                let check = try VolumeCheck.run(disk)
                XCTAssertTrue(check.isClean, "unmounted: \(check.problems.prefix(3))")
                XCTAssertEqual(try TreeVolume.open(disk).reader().xattr(1, name: Array("user.b".utf8)), [2])
                continue
            }
            try volume.storage.sync()
            var rng = SplitMix64(seed: 11)
            let crashed = CrashSimulatingStorage(maximumBytes: 64 << 20, initial: disk.crashImage(using: &rng, keep: 1, torn: 0))
            let reopened = try TreeVolume.open(crashed)
            XCTAssertEqual(try reopened.reader().xattr(1, name: Array("user.b".utf8)), [2], "crash \(crash)")
            XCTAssertEqual(try reopened.reader().xattr(1, name: Array("user.f\(written - 1)".utf8))?.count, 2_000,
                           "crash \(crash)")
            try reopened.close()
            let check = try VolumeCheck.run(crashed)
            XCTAssertTrue(check.isClean, "crash \(crash): \(check.problems.prefix(3))")
        }
    }

    /// Threads at once on an image whose free blocks file data took, each changing
    /// xattrs of an inode of its own (few objects, so admission lets them through and
    /// the journal's room is what runs out): some claim room ahead and append later (a
    /// file change's reservation), some claim as they perform, some give a claim back;
    /// frames of up to 6 KiB, past what claims take from the granted room, mixed in. A
    /// commit runs between rounds. Operations are refused with ENOSPC once the journal
    /// has no room, never with a failed volume; every claim is spent or given back; what
    /// was answered is there after a reopen.
    func testThreadsClaimingAndAppendingAtOnceOnAFullImageNeverFailTheVolume() throws {
        let disk = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        let files = try volume.fileBlocks()
        while (try? files.allocate(byteCount: 1 << 20)) != nil {}
        while (try? files.allocate(byteCount: 64 << 10)) != nil {}
        try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
        try volume.commit()
        try Self.threadsClaimingAndAppending(on: volume, disk: disk, sizes: [16, 700, 3_000, 6_000])
    }

    /// The same on an image whose free space is in pieces of two blocks, with frames of up
    /// to 20 KiB: each is written on the room its claim made sure of, whatever the others
    /// take meanwhile (`testALargeFrameClaimedOnAFragmentedImage…` alone).
    func testThreadsClaimingLargeFramesOnAFragmentedImageNeverFailTheVolume() throws {
        let disk = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
        try Self.fragment(volume)
        try Self.threadsClaimingAndAppending(on: volume, disk: disk, sizes: [16, 700, 3_000, 9_000, 20_000])
    }

    static func threadsClaimingAndAppending(on volume: TreeVolume, disk: MemoryImageStorage, sizes: [Int]) throws {
        // Per thread, the size of each xattr's last answered value.
        let answered = PthreadMutex<[[Int: Int]]>(Array(repeating: [:], count: 4))
        let refused = Atomic<Int>(0), performed = Atomic<Int>(0)
        nonisolated(unsafe) let shared = volume
        for round in 0..<3 {
            DispatchQueue.concurrentPerform(iterations: 4) { thread in
                for k in 0..<1_500 {
                    let size = sizes[(thread + k) % sizes.count]
                    let name = k % 20
                    let change = JournalChange.setXattr(inode: UInt64(100 + thread), name: Array("user.x\(name)".utf8),
                                                        value: [UInt8](repeating: UInt8(truncatingIfNeeded: k), count: size))
                    do throws(FSError) {
                        switch k % 3 {
                        case 0:
                            let claim = try shared.reserveRoom(changeBytes: size + 64)
                            try shared.perform([change], reserved: claim, commitsAtBudget: false)
                        case 1:
                            let claim = try shared.reserveRoom(changeBytes: size + 64)
                            shared.releaseRoom(claim)
                            try shared.perform([change], commitsAtBudget: false)
                        default:
                            try shared.perform([change], commitsAtBudget: false)
                        }
                        performed.add(1, ordering: .relaxed)
                        answered.withLock { $0[thread][name] = size }
                    } catch {
                        guard case .noSpace = error else { return XCTFail("thread \(thread), operation \(k): \(error)") }
                        refused.add(1, ordering: .relaxed)
                    }
                }
            }
            XCTAssertNil(volume.failure, "round \(round)")
            XCTAssertEqual(volume.claimedJournalRoom, 0, "round \(round): a claim was neither spent nor given back")
            try volume.commit()
        }
        XCTAssertGreaterThan(refused.load(ordering: .relaxed), 0, "the journal filled")
        XCTAssertGreaterThan(performed.load(ordering: .relaxed), 100)
        let reader = try TreeVolume.open(disk).reader()
        for (thread, sizes) in answered.withLock({ $0 }).enumerated() {
            for (name, size) in sizes {
                XCTAssertEqual(try reader.xattr(UInt64(100 + thread), name: Array("user.x\(name)".utf8))?.count, size,
                               "thread \(thread), xattr \(name)")
            }
        }
        print("journal room at once: \(performed.load(ordering: .relaxed)) answered, \(refused.load(ordering: .relaxed)) refused")
    }

    /// A frame over `largestPooledFrame` claimed on an image whose free space is in pieces
    /// smaller than the frame, then small operations until the journal has no room: the
    /// large frame is still written, on the room its claim made sure of. Before, its claim
    /// only made sure some segment held it when it claimed; the small frames filled that
    /// segment and took pieces for spares, and the large append, finding no segment to hold
    /// it, failed the volume ("the image has no room").
    func testALargeFrameClaimedOnAFragmentedImageIsWrittenWhateverSmallFramesTakeMeanwhile() throws {
        let disk = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
        let value = [UInt8](repeating: 0x6C, count: 20_000)
        let claim = try volume.reserveRoom(changeBytes: value.count + 64)
        // The commits that free the pieces switch chains: the claim is carried across them.
        try Self.fragment(volume)
        // Small operations until the journal finds no room.
        let small = try Self.smallXattrsUntilRefused(volume, atMost: 100_000)
        XCTAssertNil(volume.failure)
        XCTAssertGreaterThan(small, 0)
        XCTAssertNoThrow(try volume.perform([.setXattr(inode: 1, name: Array("user.large".utf8), value: value)], reserved: claim))
        XCTAssertNil(volume.failure, "the large frame's append failed the volume after \(small) small operations")
        XCTAssertEqual(volume.claimedJournalRoom, 0)
        XCTAssertTrue(try TreeVolume.open(disk).reader().xattr(1, name: Array("user.large".utf8)) == value,
                      "the large value after a reopen")
        print("large frame on a fragmented image: written after \(small) small operations")
    }

    /// A large frame's claim raises the spares' floor to it; once that frame is appended,
    /// the floor comes down although small claims are outstanding, so that on an image
    /// whose free space is in pieces smaller than the large frame the small operations
    /// that follow take those pieces for spares. Before, the floor came down only to half
    /// the room claimed: forty small claims held kept it above 20,000 bytes, every spare
    /// then had to come from the metadata reserve's journal quarter, and the small
    /// operations were refused once it ran out, with megabytes free in pieces.
    func testTheSpareFloorComesDownOnceTheLargeFrameIsAppendedWhileSmallClaimsAreHeld() throws {
        let disk = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
        try Self.fragment(volume)
        let held = try (0..<40).map { _ in try volume.reserveRoom(changeBytes: 1_000) }
        let value = [UInt8](repeating: 0x6C, count: 20_000)
        let claim = try volume.reserveRoom(changeBytes: value.count + 64)
        XCTAssertGreaterThanOrEqual(volume.journalLock.withLock { volume.journalSpareFloor }, 20_000)
        try volume.perform([.setXattr(inode: 1, name: Array("user.large".utf8), value: value)], reserved: claim)
        XCTAssertEqual(volume.largeJournalClaims.load(ordering: .relaxed), 0)
        let small = try Self.smallXattrsUntilRefused(volume, atMost: 3_000)
        print("small operations after the large frame, forty claims held: \(small)")
        XCTAssertEqual(volume.journalLock.withLock { volume.journalSpareFloor }, TreeVolume.largestPooledFrame)
        XCTAssertEqual(small, 3_000, "small operations refused while the image had pieces free")
        for bytes in held { volume.releaseRoom(bytes) }
        XCTAssertNil(volume.failure)
        XCTAssertEqual(volume.claimedJournalRoom, 0)
        try volume.close()
        let reopened = try TreeVolume.open(disk)
        XCTAssertTrue(try reopened.reader().xattr(1, name: Array("user.large".utf8)) == value)
        XCTAssertTrue(try reopened.reader().xattr(1, name: Array("user.s\(small - 1)".utf8)) != nil)
    }

    /// `ensureRoom(smallestSpare:)` counts only the spares that hold `smallestSpare`, and
    /// once the room is made gives the others back to the store.
    func testEnsuringRoomWithALargerFloorGivesSmallerSparesBack() throws {
        let image = TemporaryImage()
        let store = try image.makeStore(capacityBytes: 64 << 20)
        let log = try MetadataLog(store: store, imageID: 5, stream: 0, firstSequence: 1, segmentBytes: 16_384,
                                  firstSegmentBytes: 16_384)
        try log.ensureRoom(total: 20_000, largestFrame: 4096, smallestSpare: 4096)
        XCTAssertEqual(log.spareCount, 1)
        let live = store.liveBytes
        try log.ensureRoom(total: 20_000, largestFrame: 30_000, smallestSpare: 30_000)
        XCTAssertEqual(log.spareCount, 1, "the 16 KiB spare went back, one that holds 30,000 bytes came")
        XCTAssertGreaterThanOrEqual(log.roomAhead, 30_000)
        XCTAssertEqual(store.liveBytes, live + 16 << 10, "16 KiB given back, 32 KiB taken")
        // The spare holds the floor: a 30,000-byte frame needs no new segment.
        while log.segments.count == 1 { try log.append(payload: [UInt8](repeating: 1, count: 1_000)) }
        try log.append(payload: [UInt8](repeating: 2, count: 30_000 - FrameHeader.size))
        XCTAssertEqual(log.segments.count, 2, "the frame went to the spare the floor kept")
    }

    /// File data takes every free block in pieces of two blocks and gives every other piece
    /// back; commits until the pieces are free (the commits that stop naming them old
    /// enough), which refill the reserve from them too.
    static func fragment(_ volume: TreeVolume) throws {
        let files = try volume.fileBlocks()
        var pieces: [Range<UInt64>] = []
        while true {
            guard let piece = try? files.allocate(byteCount: 2 * BackingStore.blockSize, hint: nil) else { break }
            pieces.append(piece)
        }
        XCTAssertGreaterThan(pieces.count, 1_000)
        files.release(pieces.enumerated().filter { $0.offset % 2 == 0 }.map(\.element), unsharing: [])
        for _ in 0..<10 where files.availableBytes == 0 { try volume.commit() }
        XCTAssertGreaterThan(files.availableBytes, 16 << 20, "the pieces given back are free")
    }

    /// Sets xattrs of 1,000 bytes on the root ("user.s0", "user.s1", ...) until one is
    /// refused with ENOSPC or `limit` are set; returns how many were set. Any other error
    /// is thrown.
    static func smallXattrsUntilRefused(_ volume: TreeVolume, atMost limit: Int) throws -> Int {
        var small = 0
        while small < limit {
            do {
                try volume.perform([.setXattr(inode: 1, name: Array("user.s\(small)".utf8),
                                              value: [UInt8](repeating: 0x73, count: 1_000))])
                small += 1
            } catch {
                guard case .noSpace = error else { throw error }
                break
            }
        }
        return small
    }

    static func volume(capacity: UInt64) throws -> TreeVolume {
        let disk = MemoryImageStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(disk, capacityBytes: capacity, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.perform([.attributes(inode: 1, TreeVolumeReserveTests.root)])
        return volume
    }
}
