import Foundation
import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// The version 1 upgrade (`TreeVolume.upgrade`) of the images the format 1 release wrote
/// (Tests/Fixtures/format1: one cleanly unmounted, one left by `kill -9` with a journal
/// to replay and an orphan): the upgraded volume holds exactly the tree format 1's
/// recovery gives (every reachable inode's attributes and link count, every name, the
/// order-free listing of every directory, xattrs, symlink targets, every file's bytes),
/// its data runs hold exactly the references its extents take, and it opens again the
/// same. Power cuts at random moments of the upgrade leave either the format 1 image,
/// recovering to the same tree (and upgrading again), or the upgraded one: never
/// neither, never a mix.
/// Replay one seed of the power-cut test with `OFFLOADFS_UPGRADE_SEED=N`.
final class TreeVolumeUpgradeTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/format1")

    /// The fixture's image bytes (gunzipped).
    static func fixture(_ name: String) throws -> [UInt8] {
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-dc", fixtures.appendingPathComponent("\(name).img.gz").path]
        let output = Pipe()
        gzip.standardOutput = output
        try gzip.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        gzip.waitUntilExit()
        XCTAssertEqual(gzip.terminationStatus, 0)
        return [UInt8](data)
    }

    /// What format 1's recovery reads from `storage` (read-only).
    struct FormatOne {
        var replay: ImageReplay
        var analysis: ImageAnalysis
        var previousSegments: [LogSegment]
    }

    static func recover(_ storage: any ImageStorage) throws -> FormatOne {
        guard case .image(let superblock, _) = try ImageIdentity.read(storage) else {
            throw Failure(description: "not a format 1 image: \(try ImageIdentity.read(storage))")
        }
        let read = { (offset: UInt64, count: Int) in storage.readBytes(at: offset, count: count) }
        let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length, read: read)
        return FormatOne(replay: replay, analysis: ImageAnalysis(replay, fileBytes: storage.length),
                         previousSegments: ImageReplay.previousCommitSegments(of: superblock, fileBytes: storage.length,
                                                                              read: read))
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The tree a format 1 recovery gives, in the terms the volume is read in; file bytes
    /// read through `image` (the format 1 image the replay came from).
    struct Expected: Equatable {
        var inodes: [UInt64: InodeItem] = [:]
        var names: [UInt64: [[UInt8]: UInt64]] = [:]
        var xattrs: [UInt64: [[UInt8]: [UInt8]]] = [:]
        var targets: [UInt64: [UInt8]] = [:]
        var bytes: [UInt64: [UInt8]] = [:]
    }

    static func expected(_ one: FormatOne, image: [UInt8]) -> Expected {
        var expected = Expected()
        for number in one.analysis.reachable {
            let record = one.replay.inodes[number]!
            let names = one.replay.entries[number] ?? [:]
            let file = one.replay.files[number]
            expected.inodes[number] = InodeItem(
                type: record.type, permissions: record.permissions, uid: record.uid, gid: record.gid,
                linkCount: one.analysis.linkCounts[number] ?? 0,
                size: record.type == 8 ? file?.size ?? 0 : record.type == 10 ? UInt64(record.symlinkTarget.count) : 0,
                rdev: record.rdev, accessTime: record.accessTime, modificationTime: record.modificationTime,
                changeTime: record.changeTime, birthTime: record.birthTime,
                parent: record.type == 4 ? (one.analysis.parents[number] ?? record.parent) : 0, nextIndex: record.type == 4 ? 3 + UInt64(names.count) : 0)
            if record.type == 4 { expected.names[number] = names }
            if !record.xattrs.isEmpty {
                expected.xattrs[number] = Dictionary(uniqueKeysWithValues: record.xattrs.map { ($0.name, $0.value) })
            }
            if record.type == 10 { expected.targets[number] = record.symlinkTarget }
            if record.type == 8 {
                var bytes = [UInt8](repeating: 0, count: Int(file?.size ?? 0))
                for piece in file?.pieceList ?? [] {
                    let at = Int(piece.offset), n = Int(piece.extent.size)
                    switch piece.extent {
                    case .mmapOffload(let offset, _): bytes.replaceSubrange(at..<at + n, with: image[Int(offset)..<Int(offset) + n])
                    case .repeatingBytes(let value, _): bytes.replaceSubrange(at..<at + n, with: repeatElement(value, count: n))
                    case .inMemory(let held): bytes.replaceSubrange(at..<at + n, with: held)
                    }
                }
                expected.bytes[number] = bytes
            }
        }
        return expected
    }

    /// The first difference between the volume and `expected`, after checking that its data
    /// runs hold exactly the references its extents take (nil: none).
    static func mismatch(_ volume: TreeVolume, _ expected: Expected) throws -> String? {
        let reader = try volume.reader()
        var contents = VolumeFileContents()
        for (number, item) in expected.inodes {
            guard let read = try reader.inode(number) else { return "inode \(number) is missing" }
            guard read == item else { return "inode \(number) reads \(read), format 1 had \(item)" }
            if let names = expected.names[number] {
                let listed = try reader.entries(directory: number, from: 3, limit: .max)
                guard Dictionary(uniqueKeysWithValues: listed.map { ($0.name, $0.child) }) == names else {
                    return "directory \(number) lists \(listed.count) names, format 1 had \(names.count)"
                }
                for (name, child) in names {
                    guard try reader.lookup(directory: number, name: name)?.child == child else {
                        return "directory \(number): '\(String(decoding: name, as: UTF8.self))' does not look up to \(child)"
                    }
                }
            }
            let xattrs = expected.xattrs[number] ?? [:]
            guard Set(try reader.xattrNames(number)) == Set(xattrs.keys) else { return "inode \(number): xattr names differ" }
            for (name, value) in xattrs where try reader.xattr(number, name: name) != value {
                return "inode \(number): xattr '\(String(decoding: name, as: UTF8.self))' differs"
            }
            guard try reader.symlinkTarget(number) == expected.targets[number] else { return "inode \(number): its target differs" }
            if let bytes = expected.bytes[number] {
                let read = try contents.bytes(of: number, size: bytes.count, in: volume)
                guard read == bytes else { return "file \(number): its \(bytes.count) bytes differ" }
            }
        }
        if let problem = try contents.dataRunMismatch(in: volume) { return problem }
        return nil
    }

    static func upgrade(_ storage: any ImageStorage, _ one: FormatOne) throws -> TreeVolume {
        try TreeVolume.upgrade(storage, from: one.replay, analysis: one.analysis, previousSegments: one.previousSegments,
                               nameHashKey: SipHash24(key0: 0x5eed, key1: 0xfeed))
    }

    func testTheFormatOneFixturesUpgradeWithEverything() throws {
        for name in ["clean", "crash"] {
            let image = try Self.fixture(name)
            let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
            XCTAssertFalse(try ImageIdentity.upgradeWasCutShort(disk), name)
            let one = try Self.recover(disk)
            let expected = Self.expected(one, image: image)
            XCTAssertGreaterThan(expected.inodes.count, 1000, name)
            let volume = try Self.upgrade(disk, one)
            XCTAssertNil(try Self.mismatch(volume, expected), "\(name), upgraded")
            XCTAssertEqual(try ImageIdentity.read(disk), .newerVersion(CommitSlot.version), "\(name): a format 1 copy is left")
            // The upgraded image opens again as format 2, the same.
            var rng = SplitMix64(seed: 1)
            let reopened = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: 80 << 20,
                                                                      initial: disk.crashImage(using: &rng, keep: 0, torn: 0)))
            XCTAssertNil(try Self.mismatch(reopened, expected), "\(name), reopened")
            print("upgrade of \(name): \(expected.inodes.count) inodes, \(expected.bytes.values.reduce(0) { $0 + $1.count }) file bytes")
        }
    }

    /// Fields format 1's records decode but format 2 refuses (no request makes them; a
    /// damaged or hand-built image may hold them): permission bits past 0o7777, symlink
    /// targets with a NUL, of 4,096 bytes or empty, an inode numbered 0. Each is a problem,
    /// so the upgrade refuses the image (before, it wrote items that do not decode: a
    /// debug build trapped on the encoder's assertion), and format 1's repair fixes it so
    /// that the upgrade keeps every file.
    func testFieldsFormatTwoCannotHoldAreProblemsThatRepairFixesBeforeTheUpgrade() throws {
        let image = try Self.fixture("clean")
        let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
        let one = try Self.recover(disk)
        let replay = one.replay
        XCTAssertTrue(one.analysis.isClean, "\(one.analysis.problems)")
        let file = try XCTUnwrap(one.analysis.reachable.filter { replay.inodes[$0]?.type == ImageReplay.regularType }.min())
        replay.inodes[file]?.permissions = 0o170644
        let template = try XCTUnwrap(replay.inodes[ImageAnalysis.rootInode])
        func add(_ name: String, number: UInt64, type: UInt8, target: [UInt8] = []) {
            var record = template
            record.number = number
            record.type = type
            record.permissions = 0o644
            record.linkCount = 1
            record.parent = 0
            record.symlinkTarget = target
            record.xattrs = []
            replay.inodes[number] = record
            replay.entries[ImageAnalysis.rootInode, default: [:]][Array(name.utf8)] = number
        }
        let first = replay.nextInode
        replay.nextInode += 3
        add("with-nul", number: first, type: ImageReplay.symlinkType, target: Array("abc".utf8) + [0] + Array("def".utf8))
        add("too-long", number: first + 1, type: ImageReplay.symlinkType, target: [UInt8](repeating: 0x61, count: 4096))
        add("only-nul", number: first + 2, type: ImageReplay.symlinkType, target: [0, 0x61])
        add("zero", number: 0, type: ImageReplay.regularType)

        let damaged = ImageAnalysis(replay, fileBytes: disk.length)
        XCTAssertEqual(damaged.problems.sorted(), [
            "entry 'zero' in directory 1 names inode 0, a number no file may have",
            "inode \(file) records permissions 0o170644, past 0o7777",
            "symlink \(first) has a target of 7 bytes holding a NUL, which no request makes (1 to 4095 bytes, no NUL)",
            "symlink \(first + 1) has a target of 4096 bytes, which no request makes (1 to 4095 bytes, no NUL)",
            "symlink \(first + 2) has a target of 2 bytes holding a NUL, which no request makes (1 to 4095 bytes, no NUL)",
        ])
        XCTAssertThrowsError(try Self.upgrade(disk, FormatOne(replay: replay, analysis: damaged,
                                                               previousSegments: one.previousSegments))) { error in
            XCTAssertTrue("\(error)".contains("fsck --repair"), "\(error)")
        }

        let log = replay.repair(damaged, now: template.changeTime, uid: 0, gid: 0)
        let renumbered = first + 3
        XCTAssertEqual(log.lines, [
            "gave inode 0, a number no file may have, the number \(renumbered)",
            "inode \(file): permissions 0o170644 cut to 0o644",
            "symlink \(first): its target of 7 bytes, which no request makes, is now 'abc'",
            "symlink \(first + 1): its target of 4096 bytes, which no request makes, is now '\(String(repeating: "a", count: 80))'",
            "symlink \(first + 2): its target of 2 bytes, which no request makes, is now 'lost-symlink-target-of-inode-\(first + 2)'",
        ])
        let repaired = FormatOne(replay: replay, analysis: ImageAnalysis(replay, fileBytes: disk.length),
                                 previousSegments: one.previousSegments)
        XCTAssertEqual(repaired.analysis.problems, [])
        XCTAssertEqual(replay.entries[ImageAnalysis.rootInode]?[Array("zero".utf8)], renumbered)
        XCTAssertEqual(replay.inodes[first + 1]?.symlinkTarget.count, 4095)
        let expected = Self.expected(repaired, image: image)
        let volume = try Self.upgrade(disk, repaired)
        XCTAssertNil(try Self.mismatch(volume, expected))
        try volume.close()
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems)")
    }

    /// The capacity the upgrade is given (a mount's, resolved as format 1's open resolves
    /// it) is the volume's, and the file's length; never below the file's length; past 64
    /// TiB refused. Kept or not as the superblock says.
    func testTheUpgradeTakesTheCapacityItIsGiven() throws {
        let image = try Self.fixture("clean")
        for (asked, expected) in [(UInt64(40 << 20), UInt64(40 << 20)), (UInt64(1 << 20), UInt64(image.count))] {
            let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
            let one = try Self.recover(disk)
            let volume = try TreeVolume.upgrade(disk, from: one.replay, analysis: one.analysis,
                                                previousSegments: one.previousSegments, capacityBytes: asked,
                                                nameHashKey: SipHash24(key0: 1, key1: 2))
            XCTAssertEqual(volume.current.capacityBytes, expected, "asked \(asked)")
            XCTAssertEqual(disk.length, expected, "asked \(asked)")
            XCTAssertEqual(volume.current.capacityIsSet, one.replay.superblock.capacityIsSet)
            XCTAssertNil(try Self.mismatch(volume, Self.expected(one, image: image)), "asked \(asked)")
        }
        let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
        let one = try Self.recover(disk)
        XCTAssertThrowsError(try TreeVolume.upgrade(disk, from: one.replay, analysis: one.analysis,
                                                    previousSegments: one.previousSegments,
                                                    capacityBytes: TreeVolume.maximumCapacity + (1 << 20),
                                                    nameHashKey: SipHash24(key0: 1, key1: 2))) { error in
            guard case FSError.invalidArgument(let why) = error else { return XCTFail("got \(error)") }
            // In TiB too: "capacity 70368745226240 bytes" alone is hard to read.
            XCTAssertEqual(why, "capacity 70368745226240 bytes (64.1 TiB) exceeds the 70368744177664 bytes (64 TiB) an image can map")
        }
        XCTAssertEqual(disk.length, UInt64(image.count), "refused before anything was written")
        XCTAssertEqual("\(BackingStore.capacityPastTheLimit(100 << 40))",
                       "\(FSError.invalidArgument("capacity 109951162777600 bytes (100.0 TiB) exceeds the 70368744177664 bytes (64 TiB) an image can map"))")
    }

    /// The upgrade keeps the previous format 1 commit's blocks (format 1's repair may read
    /// them) from a walk of its chains that decodes nothing: the same segments a whole
    /// load of that commit lists, also with a damaged checkpoint frame, which both skip.
    func testThePreviousCommitsSegmentsAreThoseItsWholeLoadLists() throws {
        for name in ["clean", "crash"] {
            var image = try Self.fixture(name)
            guard case .image(let superblock, _) = try ImageIdentity.read(CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)) else {
                XCTFail("\(name): not a format 1 image"); continue
            }
            guard let previous = superblock.previous else {
                // The crash fixture was never checkpointed twice: nothing to keep.
                XCTAssertEqual(name, "crash")
                let read = { (offset: UInt64, count: Int) -> [UInt8] in Array(image[Int(offset)..<Int(offset) + count]) }
                XCTAssertNil(ImageReplay.loadPrevious(of: superblock, fileBytes: UInt64(image.count), read: read))
                XCTAssertEqual(ImageReplay.previousCommitSegments(of: superblock, fileBytes: UInt64(image.count), read: read), [])
                continue
            }
            for damaged in [false, true] {
                if damaged {
                    // A byte inside the previous checkpoint's first segment, past its first
                    // frame's header: that frame's checksum fails.
                    image[Int(previous.checkpoint.start) + 100] ^= 0xff
                }
                let read = { (offset: UInt64, count: Int) -> [UInt8] in
                    let start = min(Int(offset), image.count)
                    return Array(image[start..<min(start + count, image.count)])
                }
                let loaded = try XCTUnwrap(ImageReplay.loadPrevious(of: superblock, fileBytes: UInt64(image.count), read: read))
                XCTAssertFalse(loaded.inodes.isEmpty, "\(name)")
                XCTAssertEqual(loaded.provenance?.lostCheckpointFrames ?? 0 > 0, damaged, "\(name), damaged \(damaged)")
                let walked = ImageReplay.previousCommitSegments(of: superblock, fileBytes: UInt64(image.count), read: read)
                XCTAssertFalse(walked.isEmpty, "\(name)")
                XCTAssertEqual(walked, loaded.metadataSegments, "\(name), damaged \(damaged)")
            }
        }
    }

    /// The upgrade reports its progress (a mount's waiters follow it, and give up after a
    /// minute without any): every step of it in order, the inodes recorded, then each
    /// commit's steps, with the long ones' counts climbing to their end.
    func testTheUpgradeReportsEachStepAndItsProgress() throws {
        let image = try Self.fixture("clean")
        let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
        let one = try Self.recover(disk)
        enum Heard: Equatable { case step(CommitProgress.Step), count(Int, Int) }
        let heard = PthreadMutex<[Heard]>([])
        let progress = CommitProgress(stride: 64, began: { step in heard.withLock { $0.append(.step(step)) } }) { done, total in
            heard.withLock { $0.append(.count(done, total)) }
        }
        let volume = try TreeVolume.upgrade(disk, from: one.replay, analysis: one.analysis, previousSegments: one.previousSegments,
                                            nameHashKey: SipHash24(key0: 0x5eed, key1: 0xfeed), progress: progress)
        XCTAssertNil(try Self.mismatch(volume, Self.expected(one, image: image)))
        let events = heard.withLock { $0 }
        let steps = events.compactMap { if case .step(let step) = $0 { step } else { nil } }
        let commit: [CommitProgress.Step] = [.applying, .linking, .writingNodes, .countingBlocks, .syncing]
        XCTAssertEqual(steps, [.recording] + commit + commit, "the recording, then two commits")
        // Each step's counts: one total, never backwards, from its start to its end.
        var counts: [CommitProgress.Step: [(done: Int, total: Int)]] = [:]
        // (The first commit's: the second one commits what the first left, next to nothing.)
        var current: CommitProgress.Step?
        var commitsBegun = 0
        for event in events {
            switch event {
            case .step(let step):
                if step == .applying { commitsBegun += 1 }
                current = step
            case .count(let done, let total):
                guard let step = current, commitsBegun <= 1 else { continue }
                counts[step, default: []].append((done, total))
            }
        }
        let inodes = one.analysis.reachable.count
        XCTAssertGreaterThan(inodes, 1000)
        // Every inode but the root has a name: 2 * inodes - 1 units to apply, inodes - 1 to link.
        for (step, minimum) in [(CommitProgress.Step.recording, inodes), (.applying, 2 * inodes - 1), (.linking, inodes - 1),
                                (.writingNodes, 20)] {
            let seen = counts[step] ?? []
            let total = seen.first?.total ?? 0
            XCTAssertGreaterThanOrEqual(total, minimum, "\(step): \(seen.prefix(3))")
            XCTAssertTrue(seen.allSatisfy { $0.total == total }, "\(step): one total")
            XCTAssertTrue(zip(seen, seen.dropFirst()).allSatisfy { $0.done < $1.done }, "\(step): never backwards")
            XCTAssertEqual(seen.first?.done, 0, "\(step) starts at 0")
            XCTAssertGreaterThan(seen.last?.done ?? 0, total - 64 - 1, "\(step) reaches its end: \(seen.last.map { "\($0)" } ?? "none")")
        }
    }

    func testPowerCutsDuringTheUpgradeLeaveFormatOneOrTheWholeUpgrade() throws {
        let image = try Self.fixture("crash")
        let one = try Self.recover(CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image))
        let expected = Self.expected(one, image: image)
        var asFormatOne = 0, asFormatTwo = 0, changes = 0
        for seed in crashTestSeeds(replay: "OFFLOADFS_UPGRADE_SEED", count: 3) {
            var rng = SplitMix64(seed: seed)
            let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
            let cuts = TreeCrashTests.PowerCuts()
            cuts.arm(disk, cuts: 6, within: 160, using: &rng)  // the upgrade makes about 160 changes
            _ = try Self.upgrade(disk, one)
            changes = cuts.lock.withLock { $0.changes }
            for cut in cuts.disarm(disk, using: &rng) {
                let cutDisk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: cut.image)
                switch try ImageIdentity.read(cutDisk) {
                case .image:
                    // Format 1: it recovers to the same tree, and upgrades again.
                    let again = try Self.recover(cutDisk)
                    XCTAssertEqual(Self.expected(again, image: cut.image), expected, "seed \(seed), cut before change \(cut.moment): format 1 changed")
                    XCTAssertNil(try Self.mismatch(try Self.upgrade(cutDisk, again), expected),
                                 "seed \(seed), cut before change \(cut.moment): the second upgrade")
                    asFormatOne += 1
                case .newerVersion:
                    XCTAssertNil(try Self.mismatch(try TreeVolume.open(cutDisk), expected),
                                 "seed \(seed), cut before change \(cut.moment) (\(cut.change)): the upgraded image")
                    asFormatTwo += 1
                case let other:
                    XCTFail("seed \(seed), cut before change \(cut.moment) (\(cut.change)): the image is \(other)")
                }
            }
        }
        print("upgrade power cuts: \(asFormatOne) left format 1, \(asFormatTwo) the upgraded image, among \(changes) changes of the image")
        XCTAssertGreaterThan(asFormatOne, 0)
        XCTAssertGreaterThan(asFormatTwo, 0)
    }

    /// Power cuts at every change of the upgrade from the write of its first slot (block 0)
    /// on: the window the random cuts of `TreeVolumeUpgradeTests` never reached (all 18
    /// landed before it). Each cut is format 1 recovering to the same tree, or the upgraded
    /// volume reading as it.
    func testPowerCutsAtEveryChangeAfterTheFirstSlotOfTheUpgrade() throws {
        let image = try Self.fixture("crash")
        let one = try Self.recover(CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image))
        let expected = Self.expected(one, image: image)
        let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
        final class Cuts: @unchecked Sendable {
            let lock = PthreadMutex<(armed: Bool, rng: SplitMix64, images: [(String, [UInt8])])>((false, SplitMix64(seed: 11), []))
        }
        let cuts = Cuts()
        disk.beforeChange { change in
            cuts.lock.withLock { s in
                if s.armed {
                    for _ in 0..<2 { s.images.append(("\(change)", disk.crashImage(using: &s.rng))) }
                }
                if case .write(let range) = change, range.lowerBound == 0 { s.armed = true }
            }
        }
        _ = try Self.upgrade(disk, one)
        disk.beforeChange(nil)
        let images = cuts.lock.withLock { $0.images }
        var asOne = 0, asTwo = 0, cutShort = 0
        for (index, (change, cut)) in images.enumerated() {
            let cutDisk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: cut)
            do {
                switch try ImageIdentity.read(cutDisk) {
                case .image(_, let agrees):
                    // What fsck and info say of it: an upgrade cut short, when the first
                    // slot is durable (the copies then differ), never otherwise.
                    let slotDurable = cut[0..<4096] == disk.readBytes(at: 0, count: 4096)[...] && !agrees
                    XCTAssertEqual(try ImageIdentity.upgradeWasCutShort(cutDisk), slotDurable, "cut \(index) before \(change)")
                    if slotDurable { cutShort += 1 }
                    let again = try Self.recover(cutDisk)
                    XCTAssertEqual(Self.expected(again, image: cut), expected, "cut \(index) before \(change): format 1 changed")
                    // The interrupted upgrade runs again over its own first slot.
                    XCTAssertNil(try Self.mismatch(try Self.upgrade(cutDisk, again), expected), "cut \(index) before \(change): the second upgrade")
                    asOne += 1
                case .newerVersion:
                    XCTAssertNil(try Self.mismatch(try TreeVolume.open(cutDisk), expected), "cut \(index) before \(change)")
                    asTwo += 1
                case let other:
                    XCTFail("cut \(index) before \(change): \(other)")
                }
            } catch {
                XCTFail("cut \(index) before \(change): \(error)")
            }
        }
        print("upgrade cuts after the first slot: \(images.count) images, \(asOne) format 1 (\(cutShort) with the first slot), \(asTwo) format 2")
        XCTAssertGreaterThan(cutShort, 0, "some cuts keep the first slot and format 1's copy 1")
    }

    /// Two valid format 1 copies of different commits (a crash between format 1's two
    /// superblock writes): the first slot would leave the older one as the image's truth,
    /// so the upgrade refuses before writing anything.
    func testTwoFormatOneCopiesOfDifferentCommitsAreRefused() throws {
        var image = try Self.fixture("clean")
        let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
        let one = try Self.recover(disk)
        var older = one.replay.superblock
        older.generation -= 1
        image.replaceSubrange(4096..<8192, with: older.encoded() + [UInt8](repeating: 0, count: 4096 - older.encoded().count))
        let differing = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: image)
        XCTAssertThrowsError(try Self.upgrade(differing, try Self.recover(differing))) { error in
            XCTAssertTrue("\(error)".contains("copies differ"), "\(error)")
        }
        XCTAssertEqual(differing.readBytes(at: 0, count: 8192), Array(image[0..<8192]), "the refused upgrade wrote a superblock")
    }
}
