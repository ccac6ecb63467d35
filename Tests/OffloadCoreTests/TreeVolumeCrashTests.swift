import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// `TreeVolume` under power cuts: random namespace operations (each a journal frame;
/// files written with RAM pieces the commit places in the image, so data blocks and
/// journal segments come and go through the block space), `sync`s and commits, with the
/// power cut at random moments among the image's changes (`CrashSimulatingStorage`: what
/// the last sync made durable, plus any subset of later pages, some torn). Each image a
/// cut leaves must open (replaying the journal) to exactly the model after some prefix of
/// the operations: every operation finished before the last completed sync or commit,
/// and any number of the later ones in their order, never a gap. Compared: names,
/// attributes, xattrs, targets, orphans, every file's bytes read from the image, and the
/// block tree's data runs against the references the extents hold. The recovered image
/// must then take a change and a commit.
/// Replay one seed with `OFFLOADFS_VOLUME_CRASH_SEED=N`.
final class TreeVolumeCrashTests: XCTestCase {
    static let capacity: UInt64 = 6 << 20

    func testPowerCutsKeepWhatTheLastSyncMadeDurableAndAPrefixOfTheRest() throws {
        let seeds = crashTestSeeds(replay: "OFFLOADFS_VOLUME_CRASH_SEED", count: 5)
        var totals = SeedTotals()
        for seed in seeds {
            do {
                totals.add(try runSeed(seed))
            } catch {
                return XCTFail("seed \(seed) failed: \(error)\nreplay with OFFLOADFS_VOLUME_CRASH_SEED=\(seed)")
            }
        }
        print("volume crash test: \(seeds.count) seeds, \(totals.commits) commits, \(totals.cuts) cuts (\(totals.atFloor) at the last sync, \(totals.beyondFloor) with later operations), \(totals.replayed) frames replayed, \(totals.cutsWhileOpening) cuts while opening, \(totals.placed) bytes placed, \(totals.punched) blocks punched, \(totals.reused) nodes written on kept freed nodes, \(totals.spilled) leaves written ahead")
        if seeds.count > 1 {
            XCTAssertGreaterThan(totals.cuts, 10 * seeds.count)
            XCTAssertGreaterThan(totals.atFloor, 0, "no cut lost the unsynced operations")
            XCTAssertGreaterThan(totals.beyondFloor, 0, "no cut kept unsynced operations")
            XCTAssertGreaterThan(totals.replayed, 0, "no cut needed the journal")
            XCTAssertGreaterThan(totals.cutsWhileOpening, 2 * seeds.count, "power was rarely cut while an image opened")
            XCTAssertGreaterThan(totals.punched, 0, "no freed block was ever retired and punched")
            XCTAssertGreaterThan(totals.reused, 0, "no commit wrote a node on a freed node kept unpunched")
            XCTAssertGreaterThan(totals.spilled, 0, "no commit wrote a changed leaf ahead")
        }
    }

    struct SeedTotals {
        var cuts = 0, atFloor = 0, beyondFloor = 0, commits = 0, replayed = 0, placed = 0, punched = 0, cutsWhileOpening = 0
        /// Nodes commits wrote on freed nodes kept unpunched: cuts among those commits'
        /// writes land between such a write and the slot.
        var reused = 0
        /// Changed leaves commits wrote ahead (`spillLeaves`).
        var spilled = 0

        mutating func add(_ other: SeedTotals) {
            spilled += other.spilled
            cuts += other.cuts; atFloor += other.atFloor; beyondFloor += other.beyondFloor; commits += other.commits
            replayed += other.replayed; placed += other.placed; punched += other.punched
            cutsWhileOpening += other.cutsWhileOpening
            reused += other.reused
        }
    }

    struct CheckFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// Power-cut images with the operations they may hold: every one up to `floor` (the
    /// last sync or commit that had completed), and at most up to `ceiling`.
    final class Cuts: @unchecked Sendable {
        struct State {
            var changes = 0
            var moments: Set<Int> = []
            var floor = 0, finished = 0
            var images: [(moment: Int, change: String, floor: Int, ceiling: Int, image: [UInt8])] = []
            var rng = SplitMix64(seed: 0)
        }
        let state = PthreadMutex(State())

        func arm(_ disk: CrashSimulatingStorage, cuts: Int, within span: UInt64, using rng: inout SplitMix64) {
            state.withLock { s in
                s.changes = 0
                s.moments = Set((0..<cuts).map { _ in 1 + Int(rng.next() % span) })
                s.rng = SplitMix64(seed: rng.next())
            }
            disk.beforeChange { change in
                self.state.withLock { s in
                    s.changes += 1
                    guard s.moments.contains(s.changes) else { return }
                    // An operation in progress may be in the image: the ceiling is the one
                    // being performed.
                    s.images.append((s.changes, "\(change)", s.floor, s.finished + 1, disk.crashImage(using: &s.rng)))
                }
            }
        }

        func disarm(_ disk: CrashSimulatingStorage) -> [(moment: Int, change: String, floor: Int, ceiling: Int, image: [UInt8])] {
            disk.beforeChange(nil)
            return state.withLock { s in
                defer { s.images = [] }
                return s.images
            }
        }

        /// `finished` operations are done; with `durable`, all of them survive a cut.
        func mark(finished: Int, durable: Bool) {
            state.withLock { s in
                s.finished = finished
                if durable { s.floor = finished }
            }
        }
    }

    func runSeed(_ seed: UInt64) throws -> SeedTotals {
        var rng = SplitMix64(seed: seed)
        var totals = SeedTotals()
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let key = SipHash24(key0: seed, key1: ~seed)
        let volume = try TreeVolume.format(disk, capacityBytes: Self.capacity, imageID: seed + 1, nameHashKey: key)
        // Every other seed writes a commit's changed leaves ahead as soon as there are a few:
        // cuts land among those writes too.
        if seed % 2 == 0 { volume.spilledLeavesAbove = Int(rng.next() % 3) }
        let script = NamespaceChangeScript(seed: seed, refusals: false)
        script.longMemoryPieces = true
        script.model.refusesLongMemoryPieces = false
        // The model after each operation of the round: snapshots[0] is where it began.
        var snapshots: [FileSystemModel] = []
        let cuts = Cuts()
        script.perform = { changes, _ in
            try volume.perform(changes)
            for change in changes { script.model.apply(change) }
            snapshots.append(script.model)
            cuts.mark(finished: snapshots.count - 1, durable: false)
        }
        try script.makeRoot()
        try volume.commit()

        for _ in 0..<(6 + rng.next() % 5) {
            snapshots = [script.model]
            cuts.mark(finished: 0, durable: true)
            let cutting = rng.next() % 3 != 0
            if cutting { cuts.arm(disk, cuts: 8, within: 120, using: &rng) }
            for _ in 0..<(10 + rng.next() % 30) {
                try script.step()
                switch rng.next() % 12 {
                case 0:
                    try volume.sync()
                    cuts.mark(finished: snapshots.count - 1, durable: true)
                case 1:
                    let report = try volume.commit()
                    totals.commits += 1
                    totals.placed += report.placedBytes
                    totals.punched += report.punchedBlocks
                    totals.reused += report.nodesReused
                    cuts.mark(finished: snapshots.count - 1, durable: true)
                default:
                    break
                }
            }
            let report = try volume.commit()
            totals.commits += 1
            totals.placed += report.placedBytes
            totals.punched += report.punchedBlocks
            totals.reused += report.nodesReused
            totals.spilled = volume.filesystem.tree.leavesWrittenAhead
            guard cutting else { continue }
            for cut in cuts.disarm(disk) {
                // Power cut again while the image opens (replays and commits): a second open
                // must read the same as the first, nothing of the replayed journal lost.
                let recoveredDisk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: cut.image)
                let secondCuts = Cuts()
                secondCuts.arm(recoveredDisk, cuts: 2, within: 24, using: &rng)
                let recovered: TreeVolume
                do {
                    recovered = try TreeVolume.open(recoveredDisk)
                } catch {
                    throw CheckFailure(description: "a cut before change \(cut.moment) (\(cut.change)) does not open: \(error)")
                }
                let reopenings = secondCuts.disarm(recoveredDisk)
                totals.replayed += recovered.replayedFrames
                // The newest state the image may hold first: most cuts keep later operations.
                let candidates = (cut.floor...min(cut.ceiling, snapshots.count - 1)).reversed()
                var matched: Int?
                var problems: [String] = []
                for k in candidates {
                    if let problem = try Self.mismatch(recovered, snapshots[k]) {
                        problems.append("after operation \(k): \(problem)")
                    } else {
                        matched = k
                        break
                    }
                }
                guard let matched else {
                    throw CheckFailure(description: "a cut before change \(cut.moment) (\(cut.change)) opened at commit \(recovered.current.generation) reads as no model from operation \(cut.floor) to \(cut.ceiling): \(problems.prefix(3))")
                }
                if matched == cut.floor { totals.atFloor += 1 } else { totals.beyondFloor += 1 }
                for second in reopenings {
                    let again = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: second.image))
                    if let problem = try Self.mismatch(again, snapshots[matched]) {
                        throw CheckFailure(description: "a cut before change \(cut.moment), then one before change \(second.moment) (\(second.change)) of the open that followed: \(problem)")
                    }
                    totals.cutsWhileOpening += 1
                }
                // The recovered image takes a change and a commit.
                var root = snapshots[matched].inodes[1]!
                root.permissions = 0o700
                try recovered.perform([.attributes(inode: 1, root)])
                try recovered.commit()
                var after = snapshots[matched]
                after.apply(.attributes(inode: 1, root))
                if let problem = try Self.mismatch(recovered, after) {
                    throw CheckFailure(description: "after a cut before change \(cut.moment) and a commit on the recovered image: \(problem)")
                }
                totals.cuts += 1
            }
        }
        return totals
    }

    /// The first difference between the volume's committed state and `model` (nil: none).
    static func mismatch(_ volume: TreeVolume, _ model: FileSystemModel) throws -> String? {
        if let problem = try model.mismatch(in: try volume.reader(), absent: Array("never-made".utf8)) { return problem }
        let fs = volume.filesystem
        _ = try fs.tree.check()
        _ = try volume.space.blockTree.tree.check()
        // Every file's bytes, from the image.
        var contents = VolumeFileContents()
        for (inode, item) in model.inodes where item.type == 8 {
            let cells = model.contents[inode] ?? []
            guard let bytes = try contents.bytes(of: inode, size: cells.count, in: volume) else { return "file \(inode): an extent past its size" }
            if bytes != cells.map({ UInt8(truncatingIfNeeded: $0) }) { return "file \(inode): its bytes differ from the model's" }
        }
        // The block tree's data runs hold exactly the extents' references, its journal runs
        // exactly the chain the slot names (no chain leaked).
        var journalBlocks = Set<UInt64>()
        for run in try volume.space.blockTree.allRuns() where run.use == .journal { journalBlocks.formUnion(run.blocks) }
        let chainBlocks = Set((volume.journal?.segments ?? []).flatMap { ($0.start >> 12)..<($0.range.upperBound >> 12) })
        if journalBlocks != chainBlocks {
            return "journal runs \(journalBlocks.count) blocks, the named chain \(chainBlocks.count): \(journalBlocks.symmetricDifference(chainBlocks).sorted().prefix(5))"
        }
        if let problem = try contents.dataRunMismatch(in: volume) { return problem }
        return nil
    }
}
