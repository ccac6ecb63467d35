import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// A counter a check's progress closure adds to.
private final class CheckCount: @unchecked Sendable { var n = 0 }

/// fsck's check of the tree a journal tail's replay leaves (`VolumeCheck.runReplaying`,
/// docs/ARCHITECTURE.md, "fsck checks the tree the replay leaves"), and repair of an
/// image whose commit checks clean but whose replay does not.
final class VolumeCheckReplayTests: XCTestCase {
    /// A volume committed after 200 random operations, then `after` run with no commit
    /// after them, and the image a kill then leaves (every page written kept).
    static func killedAfter(seed: UInt64, _ after: (TreeVolume, NamespaceChangeScript, CrashSimulatingStorage) throws -> Void)
        throws -> (image: [UInt8], model: FileSystemModel) {
        let (disk, volume, script) = try VolumeCheckTests.committedVolume(seed: seed, steps: 200)
        try after(volume, script, disk)
        var rng = SplitMix64(seed: seed)
        return (disk.crashImage(using: &rng, keep: 1, torn: 0), script.model)
    }

    /// `body`'s result, and how many checks it ran (each starts with its trees' phase).
    static func countingChecks<T>(_ body: (@escaping VolumeCheck.Progress) throws -> T) throws -> (T, Int) {
        let count = CheckCount()
        let result = try body { phase, done, _ in if phase == "checking the trees", done == 0 { count.n += 1 } }
        return (result, count.n)
    }

    static func storage(_ image: [UInt8]) -> MemoryImageStorage {
        MemoryImageStorage(maximumBytes: Int(VolumeCheckTests.capacity), initial: image)
    }

    /// A kill's journal tail: the check replays it in memory, writes nothing, and counts
    /// the tree the mount then shows, not the commit's.
    func testAJournalTailIsCheckedAsItsReplayLeavesTheTree() throws {
        for seed in UInt64(1)...3 {
            let (image, model) = try Self.killedAfter(seed: seed) { _, script, _ in
                for _ in 0..<60 { try script.step() }
            }
            let disk = Self.storage(image)
            let commit = try VolumeCheck.run(disk)
            XCTAssertTrue(commit.isClean, "seed \(seed): \(commit.problems.prefix(3))")
            XCTAssertGreaterThan(commit.framesToReplay, 0)
            let (report, checks) = try Self.countingChecks { try VolumeCheck.runReplaying(disk, progress: $0) }
            XCTAssertEqual(report.replay, .checked)
            XCTAssertTrue(report.isClean, "seed \(seed): \(report.problems.prefix(3))")
            // The replayed tree holds the commit's nodes: one check stands for both.
            XCTAssertEqual(checks, 1, "seed \(seed)")
            XCTAssertEqual(report.framesToReplay, commit.framesToReplay)
            XCTAssertEqual(report.generation, commit.generation)
            XCTAssertEqual(disk.bytes, image, "seed \(seed): the check wrote the image")
            // The replayed tree's counts are the model's after every operation; the
            // commit's are not (60 operations made or removed some).
            XCTAssertEqual(report.inodes, model.inodes.count, "seed \(seed)")
            XCTAssertNotEqual(commit.inodes + commit.names, report.inodes + report.names, "seed \(seed)")
            // And they are what the mount's replay commits.
            let mounted = try TreeVolume.open(disk)
            try mounted.close()
            let after = try VolumeCheck.run(disk)
            XCTAssertTrue(after.isClean)
            XCTAssertEqual([after.inodes, after.directories, after.names, after.extents, after.orphans],
                           [report.inodes, report.directories, report.names, report.extents, report.orphans], "seed \(seed)")
        }
    }

    /// A frame whose checksum is good but whose change names an inode that has no inode
    /// item: the commit checks clean, the replayed tree does not. Repair makes the replay
    /// the image's first (nothing the journal holds is lost), then repairs that tree.
    func testAReplayThatLeavesProblemsIsReportedAndRepairedKeepingTheJournal() throws {
        let ghost: [UInt8] = Array("ghost".utf8)
        var directory: UInt64 = 0
        let (image, model) = try Self.killedAfter(seed: 4) { volume, script, _ in
            directory = try XCTUnwrap(script.model.entries.keys.min())
            try volume.perform([.link(directory: directory, NamedEntry(name: ghost, child: 987_654, type: 8, index: 1 << 40))])
            for _ in 0..<40 { try script.step() }
        }
        let disk = Self.storage(image)
        XCTAssertTrue(try VolumeCheck.run(disk).isClean, "the commit before the frame")
        let (report, checks) = try Self.countingChecks { try VolumeCheck.runReplaying(disk, progress: $0) }
        XCTAssertEqual(report.replay, .checked)
        XCTAssertFalse(report.isClean)
        // The replayed tree's problems: the commit is checked too, to tell whose they are.
        XCTAssertEqual(checks, 2)
        XCTAssertTrue(report.problems.allSatisfy { $0.hasPrefix("after the journal's replay: ") }, "\(report.problems)")
        XCTAssertTrue(report.problems.contains { $0.contains("987654") }, "\(report.problems)")
        XCTAssertEqual(disk.bytes, image, "the check wrote the image")

        let repair = try VolumeRepair.run(disk)
        XCTAssertTrue(repair.repaired)
        XCTAssertTrue(repair.repairs.first?.hasPrefix("the journal's \(report.framesToReplay) operations after commit ") == true,
                      "\(repair.repairs)")
        XCTAssertEqual(repair.after?.isClean, true, "\(repair.after?.problems.prefix(3) ?? [])")
        // Every name the operations after the commit left is there.
        let volume = try TreeVolume.open(disk)
        for (parent, names) in model.entries {
            for (name, entry) in names {
                XCTAssertEqual(try volume.filesystem.lookup(directory: parent, name: name)?.child, entry.child,
                               "\(String(decoding: name, as: UTF8.self)) in \(parent)")
            }
        }
        XCTAssertNil(try volume.filesystem.lookup(directory: directory, name: ghost))
        try volume.close()
        XCTAssertTrue(try VolumeCheck.runReplaying(disk).isClean)
    }

    /// A frame whose file extent names the filesystem tree's root node, between other
    /// operations: the mount's replay refuses it, and so does the check now (it said
    /// "clean" before). Repair keeps the operations before it, as a crash right after them
    /// would have left the image, and leaves it and the rest out.
    func testAReplayThatFailsIsAProblemAndRepairKeepsTheOperationsBeforeIt() throws {
        var before = FileSystemModel(), framesBefore = 0, file: UInt64 = 0
        let (image, final) = try Self.killedAfter(seed: 5) { volume, script, disk in
            for _ in 0..<30 { try script.step() }
            before = script.model
            var rng = SplitMix64(seed: 1)
            framesBefore = try VolumeCheck.run(Self.storage(disk.crashImage(using: &rng, keep: 1, torn: 0))).framesToReplay
            file = try XCTUnwrap(script.model.inodes.filter { $0.value.type == 8 && $0.value.linkCount == 1 }.keys.min())
            let root = try XCTUnwrap(volume.current.filesystemTree).block
            try volume.perform([.fileRange(inode: file, size: 4096, range: 0..<4096,
                                           pieces: [FilePiece(offset: 0, extent: .mmapOffload(offset: root << 12, size: 4096))])])
            for _ in 0..<30 { try script.step() }
        }
        XCTAssertGreaterThan(framesBefore, 5)
        let disk = Self.storage(image)
        XCTAssertTrue(try VolumeCheck.run(disk).isClean, "the commit before the frame")
        XCTAssertThrowsError(try TreeVolume.open(Self.storage(image)), "the mount's replay")
        let report = try VolumeCheck.runReplaying(disk)
        XCTAssertEqual(report.replay, .failed(replayable: framesBefore))
        XCTAssertGreaterThan(report.framesToReplay, framesBefore + 1)
        XCTAssertEqual(report.problemCount, 1)
        XCTAssertTrue(report.problems.first?.contains("do not replay") == true, "\(report.problems)")
        XCTAssertEqual(disk.bytes, image, "the check wrote the image")

        let repair = try VolumeRepair.run(disk)
        XCTAssertTrue(repair.repaired)
        XCTAssertEqual(repair.repairs, ["the journal's first \(framesBefore) of \(report.framesToReplay) operations after commit "
                                        + "\(report.generation) replayed (commit \(try CommitSlots.read(disk).current.generation)); the "
                                        + "\(report.framesToReplay - framesBefore) from the first whose replay fails on are left out"])
        XCTAssertEqual(repair.after?.isClean, true, "\(repair.after?.problems.prefix(3) ?? [])")
        // The tree is the one the operations before the frame left.
        XCTAssertEqual(repair.after?.inodes, before.inodes.count)
        let volume = try TreeVolume.open(disk)
        var names = 0
        for (parent, entries) in before.entries {
            for (name, entry) in entries {
                names += 1
                XCTAssertEqual(try volume.filesystem.lookup(directory: parent, name: name)?.child, entry.child,
                               "\(String(decoding: name, as: UTF8.self)) in \(parent)")
            }
        }
        XCTAssertEqual(repair.after?.names, names)
        try volume.close()
        // The files the left-out operations changed or made are named: the one the
        // failing frame names, and each name made in the root for a file the kept ones
        // do not have.
        let why = "(operations answered after commit \(report.generation), whose journal frames were left out of the replay"
        XCTAssertTrue(repair.affected.allSatisfy { $0.hasPrefix("lost changes: /") && $0.contains(why) }, "\(repair.affected)")
        var parents: [UInt64: (UInt64, [UInt8])] = [:]
        for (parent, entries) in before.entries { for (name, entry) in entries { parents[entry.child] = (parent, name) } }
        func path(_ inode: UInt64) -> String? {
            var parts: [String] = []
            var at = inode
            while at != 1 {
                guard let (parent, name) = parents[at] else { return nil }
                parts.insert(String(decoding: name, as: UTF8.self), at: 0)
                at = parent
            }
            return "/" + parts.joined(separator: "/")
        }
        XCTAssertTrue(repair.affected.contains("lost changes: \(try XCTUnwrap(path(file))) \(why), changed it)"), "\(repair.affected)")
        var made = 0
        for (directory, entries) in final.entries {
            guard let at = path(directory) else { continue }
            for (name, entry) in entries where before.inodes[entry.child] == nil {
                made += 1
                let line = "lost changes: \(at == "/" ? "" : at)/\(String(decoding: name, as: UTF8.self)) \(why), made it: it is not there)"
                XCTAssertTrue(repair.affected.contains(line), "\(line) in \(repair.affected)")
            }
        }
        XCTAssertGreaterThan(made, 0)
    }
}
