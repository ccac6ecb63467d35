import Foundation
import XCTest
@testable import OffloadCore
import OffloadFuzzing
import OffloadSimulation
@testable import OffloadNamespace
import SplitMix

/// Images nobody wrote: damaged or hostile bytes must open, or be refused with a clear
/// error, and repair must end in an image that opens or in a clear refusal; never a trap
/// or a hang (`HostileImageCheck` states the properties). The fuzzer (scripts/fuzz) looks
/// for inputs that break them; each it found is replayed here, and each defect it found
/// has its own test below.
final class HostileImageTests: XCTestCase {
    func testTheSeedImagesOpenAndNeedNoRepair() throws {
        let seeds = try SampleImage.seeds()
        XCTAssertEqual(Set(seeds.map { $0.name.hasPrefix("format2-") }), [false, true], "seeds of both formats")
        for (name, input) in seeds {
            let outcome = try HostileImageCheck.check(FuzzInput.image(from: input))
            if name == "format2-killed-short" {
                // Format 2 refuses an image file shorter than the capacity its commit
                // states (its end was cut off); repair gives it its length back.
                XCTAssertTrue("\(outcome.refusal.map { "\($0)" } ?? "")".contains("its end was cut off"), "\(outcome)")
                XCTAssertNil(outcome.repairRefusal, "\(name)")
                XCTAssertGreaterThan(outcome.repairs, 0, "\(name)")
                continue
            }
            XCTAssertNil(outcome.refusal, "\(name)")
            XCTAssertEqual(outcome.repairs, 0, "\(name)")
        }
    }

    /// Format 2's checksums, fixed by the harness the same way: nothing changes in an
    /// image whose checksums are good; a byte changed in a leaf of the filesystem tree
    /// is then found by no checksum (the leaf's own, its parent's copy, the root
    /// pointer's, the slot's), so the mutation reaches the item decoders.
    func testChecksumRepairOfFormatTwoFixesNodesParentsAndSlots() throws {
        for clean in [false, true] {
            let image = try SampleImage.make(seed: 7, clean: clean, format: .two)
            let storage = MemoryImageStorage(maximumBytes: image.count, initial: image)
            ChecksumRepair.apply(to: storage)
            XCTAssertTrue(storage.bytes == image, "clean: \(clean)")
            // The committed filesystem tree's leaves (level 0).
            var nodes: [UInt64] = []
            let slot = try CommitSlots.read(storage).current
            try VolumeCheck.filesystemTree(VolumeCheck.blockSpace(storage, slot), slot).tree.forEachNodeBlock { nodes.append($0) }
            let leaves = nodes.map { Int($0) * 4096 }.filter { image[$0 + 36] == 0 }
            XCTAssertGreaterThan(leaves.count, 0)
            var changed = image
            changed[leaves[0] + 4095] ^= 0x01  // the last byte of the first item's value
            let damaged = MemoryImageStorage(maximumBytes: changed.count, initial: changed)
            XCTAssertTrue(try VolumeCheck.run(damaged).problems.contains { $0.contains("checksum") },
                          "the change is caught by a checksum before the repair")
            ChecksumRepair.apply(to: damaged)
            let problems = try VolumeCheck.run(damaged).problems
            XCTAssertFalse(problems.contains { $0.contains("checksum") }, "\(problems.prefix(3))")
            XCTAssertEqual(damaged.bytes[leaves[0] + 4095], changed[leaves[0] + 4095], "the change itself stays")
        }
    }

    /// The harness's checksum repair changes nothing in an image whose checksums are all
    /// good (superblocks with their previous-commit extension, every frame of every chain
    /// they name), so what it does to a mutated image is only the checksums.
    func testChecksumRepairMakesChecksumsGoodAndChangesNothingElse() throws {
        for clean in [false, true] {
            let image = try SampleImage.make(seed: 7, clean: clean)
            let storage = MemoryImageStorage(maximumBytes: image.count, initial: image)
            guard case .image(let superblock, _) = try ImageIdentity.read(storage) else { return XCTFail("no superblock") }
            XCTAssertNotNil(superblock.previous, "the sample image names a previous commit")
            ChecksumRepair.apply(to: storage)
            XCTAssertTrue(storage.bytes == image, "clean: \(clean)")
            // A field of the main part changed: both checksums are made good again (the
            // extension's covers the main part too).
            var changed = image
            changed[96] ^= 0x10  // capacity
            let damaged = MemoryImageStorage(maximumBytes: changed.count, initial: changed)
            ChecksumRepair.apply(to: damaged)
            guard case .valid(let repaired) = Superblock.decode(damaged.readBytes(at: 0, count: 4096)) else {
                return XCTFail("copy 0 is not valid after its checksums were repaired")
            }
            XCTAssertEqual(repaired.previous, superblock.previous)
        }
    }

    /// A format 1 image whose checkpoint holds an xattr name no namespace stores (a `.`
    /// turned into `&`, its checksums good): format 1's mount drops the name, and so must
    /// the upgrade (it wrote an xattr item that does not decode: an assertion in a debug
    /// build, an image whose file answers EIO to listxattr in a release one).
    func testTheUpgradeLeavesOutXattrNamesFormatTwoDoesNotStore() throws {
        var image = try SampleImage.make(seed: 7, clean: true)
        let name = Array("user.origin".utf8)
        // Every copy (the checkpoint's, the previous one's, old frames).
        let places = (0...(image.count - name.count)).filter { image[$0..<$0 + name.count].elementsEqual(name) }
        XCTAssertFalse(places.isEmpty)
        for at in places { image[at + 4] = UInt8(ascii: "&") }
        let storage = MemoryImageStorage(maximumBytes: image.count, initial: image)
        ChecksumRepair.apply(to: storage)
        let outcome = try HostileImageCheck.check(FuzzInput.image(from: FuzzInput.encode(storage.bytes)))
        XCTAssertNil(outcome.refusal)
        // Upgraded as the mount does: the other xattrs are there, the damaged name is not.
        let disk = MemoryImageStorage(copying: storage, maximumBytes: 40 << 20)
        guard case .image(let superblock, _) = try ImageIdentity.read(disk) else { return XCTFail("not format 1") }
        let read = { (offset: UInt64, count: Int) in disk.readBytes(at: offset, count: count) }
        let replay = try ImageReplay.load(superblock: superblock, fileBytes: disk.length, read: read)
        let volume = try TreeVolume.upgrade(disk, from: replay, analysis: ImageAnalysis(replay, fileBytes: disk.length),
                                            previousSegments: [], nameHashKey: SipHash24(key0: 1, key1: 2))
        try volume.close()
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
        let fileSystem = try VolumeFileSystem.open(storage: disk, capacity: .kept(default: 32 << 20),
                                                   memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let big = try fileSystem.operations.lookup(parent: .root, name: FileName("big.bin")).inode
        XCTAssertEqual(try fileSystem.operations.listxattr(inode: big), [])
        let docs = try fileSystem.operations.lookup(parent: .root, name: FileName("docs")).inode
        let deep = try fileSystem.operations.lookup(parent: docs, name: FileName("deep")).inode
        XCTAssertEqual(try fileSystem.operations.listxattr(inode: deep), [Array("user.more".utf8)])
        try fileSystem.close(meter: nil)
    }

    /// A repair of a cut-short image that fails after giving the file its length back (here
    /// every write of the rebuilt trees fails; the fuzzer's image whose damaged block tree
    /// claims every block failed for want of room until repair learned to write over what
    /// nothing of the damaged commit reaches) leaves the file as it was: the mount still
    /// refuses it for its cut, and the next repair still names the files that lost bytes
    /// (the review of the change).
    func testAFailedRepairOfACutShortImageLeavesItCutShort() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzRegressions")
        let input = [UInt8](try Data(contentsOf: folder.appendingPathComponent("format2-repair-without-a-free-block")))
        let image = FuzzInput.image(from: input)
        let storage = MemoryImageStorage(copying: image, maximumBytes: 40 << 20)
        let length = storage.length
        let failing = FaultInjectingStorage(storage)
        failing.inject(.init(.write, error: .io("injected"), times: .max))
        XCTAssertThrowsError(try VolumeRepair.run(failing)) { error in
            XCTAssertTrue("\(error)".contains("injected"), "\(error)")
        }
        XCTAssertGreaterThan(failing.failures(of: .write), 0)
        XCTAssertEqual(storage.length, length)
        XCTAssertThrowsError(try VolumeFileSystem.open(storage: storage, capacity: .kept(default: 32 << 20),
                                                       memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))) { error in
            XCTAssertTrue("\(error)".contains("its end was cut off"), "\(error)")
        }
    }

    /// The fuzzer's image whose damaged commit's block tree claims every block: repair
    /// writes the rebuilt trees only over blocks that commit does not use, so that a crash
    /// leaves it whole, and refused it ("repair found no free block to write the repaired
    /// trees in"). It now tries again keeping only what the commit's trees, extents and
    /// journal reach, says so, and the repaired image checks clean and mounts.
    func testARepairWithNoFreeBlockWritesOverWhatTheDamagedCommitDoesNotReach() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzRegressions")
        let input = [UInt8](try Data(contentsOf: folder.appendingPathComponent("format2-repair-without-a-free-block")))
        let storage = MemoryImageStorage(copying: FuzzInput.image(from: input), maximumBytes: 40 << 20)
        let report = try VolumeRepair.run(storage)
        XCTAssertTrue(report.repaired)
        XCTAssertTrue(report.repairs.contains { $0.hasPrefix("the damaged commit's block tree says it uses") }, "\(report.repairs)")
        XCTAssertEqual(report.after?.isClean, true, "\(report.after?.problems.prefix(3) ?? [])")
        let fileSystem = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: 32 << 20),
                                                   memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        XCTAssertNoThrow(try fileSystem.operations.getattr(inode: .root))
        try fileSystem.close(meter: nil)
        XCTAssertTrue(try VolumeCheck.run(storage).isClean)
    }

    /// An orphan item whose key names 0, no inode's number (the defect hunt of the
    /// thirty-fifth session; checksums made good): the mount refuses it ("an orphan or a
    /// drop names 0"), so the check must not find the image clean, and repair removes
    /// the item. Before, the check found it clean and repair had nothing to do: the image
    /// neither mounted nor repaired.
    func testAnOrphanItemOfNoInodesNumberIsDamageThatRepairRemoves() throws {
        // A file unlinked while open, committed, and the daemon killed: its orphan item is
        // in the commit.
        // (Small enough for a fuzzer's input.)
        let storage = MemoryImageStorage(maximumBytes: FuzzInput.maximumBytes)
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(UInt64(FuzzInput.maximumBytes)),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let (open, handle) = try fs.create(parent: .root, name: FileName("open.tmp"), mode: 0o100644, flags: O_RDWR, context: .root)
        try fs.unlink(parent: .root, name: FileName("open.tmp"))
        _ = try fileSystem.volume.commit()
        var image = storage.bytes
        fs.release(inode: open.inode, handle: handle)
        try fileSystem.close(meter: nil)
        let slot = try CommitSlots.read(MemoryImageStorage(maximumBytes: image.count, initial: image)).current
        let committed = MemoryImageStorage(maximumBytes: image.count, initial: image)
        var blocks: [UInt64] = []
        try VolumeCheck.filesystemTree(VolumeCheck.blockSpace(committed, slot), slot).tree.forEachNodeBlock { blocks.append($0) }
        var patched = false
        for block in blocks where !patched {
            let base = Int(block) * 4096
            guard image[base + 36] == 0 else { continue }  // a leaf
            let count = Int(image[base + 38]) | Int(image[base + 39]) << 8
            for i in 0..<count {
                let key = base + 48 + 21 * i
                let object = image[key..<key + 8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                guard object == ReservedObject.orphans, image[key + 8] == ItemKind.orphan.rawValue else { continue }
                for byte in key + 9..<key + 17 { image[byte] = 0 }
                patched = true
                break
            }
        }
        XCTAssertTrue(patched, "setup: the sample image's commit holds an orphan item")
        let damaged = MemoryImageStorage(maximumBytes: image.count, initial: image)
        ChecksumRepair.apply(to: damaged)
        let problems = try VolumeCheck.run(damaged).problems
        XCTAssertTrue(problems.contains { $0.contains("orphan item 0: no inode has that number") }, "\(problems.prefix(3))")
        XCTAssertNoThrow(try HostileImageCheck.check(FuzzInput.image(from: FuzzInput.encode(damaged.bytes))))
        let report = try VolumeRepair.run(MemoryImageStorage(copying: damaged, maximumBytes: 40 << 20))
        XCTAssertEqual(report.after?.isClean, true, "\(report.after?.problems.prefix(3) ?? [])")
    }

    /// Every input the fuzzer found that crashed or broke a property (Tests/FuzzRegressions).
    func testEveryInputTheFuzzerFoundNowPasses() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzRegressions")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { !$0.hasPrefix(".") && $0 != "README.md" }
        XCTAssertFalse(names.isEmpty)
        for name in names.sorted() {
            let input = [UInt8](try Data(contentsOf: folder.appendingPathComponent(name)))
            do {
                try HostileImageCheck.check(FuzzInput.image(from: input))
            } catch {
                XCTFail("\(name): \(error)")
            }
        }
    }

    // MARK: - Defects the fuzzer found

    /// A superblock whose journal segment overlaps the checkpoint's made the analysis count
    /// the shared blocks twice as metadata, and `dataBytes` underflowed (a trap in fsck and
    /// mount). The journal now ends before a segment that overlaps one already read.
    func testAJournalSegmentOverlappingTheCheckpointEndsTheJournal() throws {
        var image = try SampleImage.make(seed: 2, clean: true)
        try editSuperblocks(of: &image) { superblock in
            // From a block before the checkpoint over all of it.
            let checkpoint = superblock.checkpoint
            superblock.journal = LogSegment(start: checkpoint.start - 4096, length: checkpoint.length + 4096)
        }
        let outcome = try HostileImageCheck.check(image)
        XCTAssertNil(outcome.refusal, "the journal ends where it would overlap the checkpoint; nothing is lost")
    }

    /// A superblock (good checksum) whose generation or journal sequence was at the end
    /// of UInt64: the next checkpoint's generation, or the next journal frame's sequence
    /// number, overflowed (a trap in mount and repair). No image reaches 2^63 of either;
    /// such a superblock is damaged.
    func testAGenerationOrJournalSequenceNearTheEndOfUInt64IsDamageNotATrap() throws {
        let edits: [(String, (inout Superblock) -> Void)] = [
            ("generation", { $0.generation = .max }),
            ("journal sequence", { $0.journalSequence = .max }),
            ("journal sequence 2^63", { $0.journalSequence = 1 << 63 }),
        ]
        for (what, edit) in edits {
            var image = try SampleImage.make(seed: 3)
            try editSuperblocks(of: &image, edit)
            let outcome = try HostileImageCheck.check(image)
            guard case .damagedImage(let why)? = outcome.refusal else {
                XCTFail("\(what): \(String(describing: outcome.refusal))")
                continue
            }
            XCTAssertTrue(why.contains("out of range"), "\(what): \(why)")
        }
    }

    /// An inode numbered UInt64.max (with a name), or a next-inode record of UInt64.max,
    /// in a frame with a good checksum: restoring the tree (the next free number after the
    /// highest) or the first create (the one after that) overflowed. No namespace hands
    /// out such numbers: the record is malformed, like a length past its limit.
    func testInodeNumbersAtTheEndOfUInt64AreMalformedNotATrap() throws {
        let far = regularFile(number: .max)
        let frames: [(String, [MetadataRecord])] = [
            ("an inode numbered UInt64.max", [.inode(far), .entry(directory: 1, name: Array("far".utf8), child: .max)]),
            ("next inode UInt64.max", [.nextInode(.max)]),
        ]
        for (what, records) in frames {
            let image = try imageWithJournalFrame(records)
            let outcome = try HostileImageCheck.check(image)
            XCTAssertNotNil(outcome.refusal, "\(what): a journal frame that does not decode is a problem")
            XCTAssertNil(outcome.repairRefusal, "\(what): repair drops the journal from that frame on")
        }
    }

    /// Repair gives unreachable files a name in /lost+found, and then checked them as if
    /// the image file were 2^64 bytes long: a piece naming image bytes near 2^63 overflowed
    /// the block arithmetic (a trap in `fsck --repair`), and a piece outside the file
    /// would have been left for the final check to refuse. Pieces of files that become
    /// reachable are now checked against the real file and become holes like any other.
    func testRepairChecksTheFilesItPutsInLostAndFoundAgainstTheRealImage() throws {
        let orphan = regularFile(number: 50)
        let largest = UInt64(Int64.max)
        for (what, imageOffset, length) in [("near 2^64 in all", largest, largest), ("past the file", UInt64(64 << 20), UInt64(1 << 30))] {
            let image = try imageWithJournalFrame([
                .inode(orphan),
                .fileRange(inode: 50, size: length, range: 0..<length,
                           pieces: [FilePiece(offset: 0, extent: .mmapOffload(offset: imageOffset, size: length))]),
                // Damage elsewhere, so that the image needs a repair at all.
                .entry(directory: 1, name: Array("dangling".utf8), child: 999),
            ])
            let outcome = try HostileImageCheck.check(image)
            XCTAssertNotNil(outcome.refusal, what)
            XCTAssertNil(outcome.repairRefusal, "\(what): \(String(describing: outcome.repairRefusal))")
        }
    }

    /// File data may lie past the end of the image file, up to the capacity the
    /// superblock records (a power cut can lose the file's growth); a superblock (good
    /// checksum) recording a capacity near 2^64 let a piece reach 2^64 and its block
    /// arithmetic overflow (a trap in fsck and mount). No image byte lies at 2^63 or past.
    func testACapacityNearTheEndOfUInt64DoesNotLetDataReachIt() throws {
        let file = regularFile(number: 60)
        let largest = UInt64(Int64.max)
        var image = try imageWithJournalFrame([
            .inode(file),
            .entry(directory: 1, name: Array("far".utf8), child: 60),
            .fileRange(inode: 60, size: largest, range: 0..<largest,
                       pieces: [FilePiece(offset: 0, extent: .mmapOffload(offset: largest, size: largest))]),
        ])
        try editSuperblocks(of: &image) { $0.capacityBytes = .max }
        let outcome = try HostileImageCheck.check(image)
        XCTAssertNotNil(outcome.refusal)
        XCTAssertNil(outcome.repairRefusal, "the piece becomes a hole")
    }

    /// Format 1's repair states each fix it made. Its lines were set in a `defer`, which
    /// runs after `return` has copied the log: `fsck --repair` of a format 1 image whose
    /// only damage was in its tree said "clean" and exited 0. Records format 2 cannot hold
    /// (permission bits past 0o7777, a symlink target with a NUL) are damage that repair
    /// fixes, so that the upgrade at the next mount takes the image.
    func testFormatOnesRepairStatesWhatItFixed() throws {
        var symlink = regularFile(number: 70)
        symlink.type = ImageReplay.symlinkType
        symlink.symlinkTarget = Array("to".utf8) + [0]
        var file = regularFile(number: 71)
        file.permissions = 0o100644
        var counted = regularFile(number: 72)
        counted.linkCount = 3
        let image = try imageWithJournalFrame([
            .entry(directory: 1, name: Array("dangling".utf8), child: 999),
            .inode(symlink), .entry(directory: 1, name: Array("link".utf8), child: 70),
            .inode(file), .entry(directory: 1, name: Array("file".utf8), child: 71),
            .inode(counted), .entry(directory: 1, name: Array("counted".utf8), child: 72),
            // A directory with no record holding a name: the name goes, the file it names
            // is given one in /lost+found (before, repair left the problem and failed).
            .inode(regularFile(number: 73)), .entry(directory: 555, name: Array("homeless".utf8), child: 73),
        ])
        let outcome = try HostileImageCheck.check(image)
        XCTAssertNotNil(outcome.refusal)
        XCTAssertNil(outcome.repairRefusal)
        let storage = MemoryImageStorage(maximumBytes: FuzzInput.maximumBytes, initial: image)
        let repaired = try ImageFileSystem.open(storage: storage, capacityBytes: SampleImage.capacityBytes,
                                                memoryLimiter: MemoryLimiter(limitBytes: 0), repair: true)
        XCTAssertEqual(repaired.report.repairs, [
            "removed the 1 entries of directory 555, which does not exist",
            "symlink 70: its target of 3 bytes, which no request makes, is now 'to'",
            "inode 71: permissions 0o100644 cut to 0o644",
            "removed entry 'dangling' from directory 1",
            "gave inode 73 the name /lost+found/#73",
            "inode 1: link count 3 set to 4, what its names give",  // /lost+found
            "inode 72: link count 3 set to 1, what its names give",
        ])
        try repaired.close()
        let again = try ImageFileSystem.open(storage: storage, capacityBytes: SampleImage.capacityBytes,
                                             memoryLimiter: MemoryLimiter(limitBytes: 0))
        XCTAssertEqual(again.report.repairs, [])
        try again.close()
    }

    // MARK: - Helpers

    /// A regular file's inode record with one name counted.
    private func regularFile(number: UInt64) -> InodeRecord {
        let now = RecordTime(seconds: 1_000, nanoseconds: 0)
        return InodeRecord(number: number, type: ImageReplay.regularType, permissions: 0o644, uid: 0, gid: 0,
                           linkCount: 1, rdev: 0, accessTime: now, modificationTime: now, changeTime: now,
                           birthTime: now, parent: 0, symlinkTarget: [], xattrs: [])
    }

    /// A sample image whose journal ends with one more frame holding `records`, as a
    /// daemon killed right after writing it would leave it.
    private func imageWithJournalFrame(_ records: [MetadataRecord]) throws -> [UInt8] {
        let storage = MemoryImageStorage(maximumBytes: FuzzInput.maximumBytes,
                                         initial: try SampleImage.make(seed: 1, clean: true))
        let fileSystem = try ImageFileSystem.open(storage: storage, capacityBytes: SampleImage.capacityBytes,
                                                  memoryLimiter: MemoryLimiter(limitBytes: 0))
        try XCTUnwrap(fileSystem.journal).record(records)
        return storage.bytes
    }

    /// Decodes the newest superblock of `image`, lets `change` edit it, and writes it back
    /// into both copies with a valid checksum.
    private func editSuperblocks(of image: inout [UInt8], _ change: (inout Superblock) -> Void) throws {
        guard case .valid(var superblock) = Superblock.decode(Array(image[0..<4096])) else {
            return XCTFail("the sample image has no valid superblock")
        }
        change(&superblock)
        let block = superblock.encoded()
        image.replaceSubrange(0..<4096, with: block)
        image.replaceSubrange(4096..<8192, with: block)
    }
}
