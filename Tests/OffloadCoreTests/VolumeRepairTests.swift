import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// fsck --repair of format 2 (`VolumeRepair`): committed images of random operations
/// (`VolumeCheckTests.makeVolume`) with damage written into them; after the repair the
/// image checks clean, opens, and every file the damage did not reach reads back byte for
/// byte at its path, and every file whose path or bytes changed is named in the report.
final class VolumeRepairTests: XCTestCase {
    /// What a committed volume holds: each inode's path (by the model's first link), and
    /// each regular file's bytes as read from the image.
    struct Snapshot {
        var paths: [UInt64: String] = [:]
        var bytes: [UInt64: [UInt8]] = [:]
        var parents: [UInt64: UInt64] = [:]
    }

    func snapshot(_ volume: TreeVolume) throws -> Snapshot {
        var snapshot = Snapshot()
        var contents = VolumeFileContents()
        var inodes: [(UInt64, InodeItem)] = []
        try volume.filesystem.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
            if key.kind == ItemKind.inode.rawValue, key.object < ReservedObject.firstReserved {
                inodes.append((key.object, try FileSystemTree.decode(key, value)))
            }
            return true
        }
        for (number, item) in inodes {
            if let path = VolumeRepair.Changes.path(of: number, in: volume.filesystem) { snapshot.paths[number] = path }
            snapshot.parents[number] = try volume.filesystem.links(of: number).first?.directory
            if item.type == 8 {
                snapshot.bytes[number] = try XCTUnwrap(try contents.bytes(of: number, size: Int(item.size), in: volume))
            }
        }
        return snapshot
    }

    /// The filesystem tree's leaves: block, generation, first and last key.
    func leaves(_ volume: TreeVolume) throws -> [(block: UInt64, generation: UInt64, first: TreeKey, last: TreeKey)] {
        var found: [(block: UInt64, generation: UInt64, first: TreeKey, last: TreeKey)] = []
        var blocks: [UInt64] = []
        try volume.filesystem.tree.forEachNodeBlock { blocks.append($0) }
        let page = TreePage()
        for block in blocks {
            _ = try volume.storage.read(into: page.mutableBuffer, at: block << 12)
            let view = page.view
            if view.isLeaf, view.count > 0 {
                found.append((block, view.generation, view.key(0), view.key(view.count - 1)))
            }
        }
        return found.sorted { $0.first < $1.first }
    }

    func zero(_ block: UInt64, on disk: CrashSimulatingStorage) throws {
        try [UInt8](repeating: 0, count: 4096).withUnsafeBytes { try disk.write($0, at: block << 12) }
        try disk.sync()
    }

    /// Repairs `disk`, checks the result and opens it; returns the report and the volume.
    func repair(_ disk: CrashSimulatingStorage, budgetBytes: Int = 64 << 20) throws -> (VolumeRepair.Report, TreeVolume) {
        XCTAssertFalse(try VolumeCheck.run(disk).isClean, "the damage was not found by the check")
        let report = try VolumeRepair.run(disk, budgetBytes: budgetBytes)
        XCTAssertTrue(report.repaired)
        let after = try XCTUnwrap(report.after)
        XCTAssertTrue(after.isClean, "after repair: \(after.problems.prefix(5))")
        XCTAssertEqual(after.inodes, report.inodes)
        let again = try VolumeRepair.run(disk)
        XCTAssertFalse(again.repaired, "a repaired image needs no second repair")
        for line in report.repairs { print("repaired: \(line)") }
        for line in report.affected { print(line) }
        let opened = try TreeVolume.open(disk)
        // Blocks the repair wrote and replaced before its commit (its passes' nodes) are
        // free now: they must read as zeros, as all free space must for files.
        XCTAssertEqual(try TreeVolumeNodeReuseTests.freeBlocksNotZero(opened, disk), [], "free blocks hold bytes after the repair")
        return (report, opened)
    }

    /// Every inode of `before` reads back at its path with its bytes, except those in
    /// `reached` (inode numbers the damage held), which are named in the report when they
    /// changed (themselves, or a directory they were or are under); an inode under a
    /// directory the damage reached may have moved, and is then named the same way.
    func assertSurvivors(_ before: Snapshot, _ after: Snapshot, reached: (UInt64) -> Bool,
                         _ report: VolumeRepair.Report, minimumUnchanged: Int = 2,
                         file: StaticString = #filePath, line: UInt = #line) {
        var unchanged = 0
        for (number, path) in before.paths {
            var parentReached = false
            var ancestor = before.parents[number]
            for _ in 0..<64 {
                guard let directory = ancestor, directory != 1 else { break }
                if reached(directory) { parentReached = true }
                ancestor = before.parents[directory]
            }
            let intact = after.paths[number] == path && after.bytes[number] == before.bytes[number]
            if !reached(number) && !parentReached {
                XCTAssertTrue(intact, "inode \(number) (\(path)) changed: now \(after.paths[number] ?? "gone")", file: file, line: line)
            }
            if intact {
                unchanged += 1
            } else {
                // Named itself, or a directory it was or is now under.
                let now = after.paths[number]
                let named = report.affected.contains { line in
                    if line.contains("(it named inode \(number),") { return true }
                    guard let start = line.range(of: ": "), let end = line.range(of: " (") else { return false }
                    let named = String(line[start.upperBound..<end.lowerBound])
                    return [path, now].contains { $0 == named || ($0?.hasPrefix(named + "/") ?? false) }
                }
                XCTAssertTrue(named, "inode \(number) (\(path)) changed and the report does not name it", file: file, line: line)
            }
        }
        XCTAssertGreaterThanOrEqual(unchanged, minimumUnchanged, file: file, line: line)
    }

    /// Every path and every file's bytes as in `before`.
    func assertUnchanged(_ before: Snapshot, _ repaired: TreeVolume, file: StaticString = #filePath, line: UInt = #line) throws {
        let after = try snapshot(repaired)
        XCTAssertEqual(after.paths, before.paths, file: file, line: line)
        XCTAssertEqual(after.bytes, before.bytes, file: file, line: line)
    }

    func testAZeroedLeafLosesOnlyWhatItHeld() throws {
        for seed in UInt64(1)...12 {
            let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: seed)
            let before = try snapshot(volume)
            // A leaf the previous commit has too (not written by the last commit): no
            // commit to fall back to.
            let shared = try leaves(volume).filter { $0.generation < volume.current.generation }
            XCTAssertGreaterThan(shared.count, 3)
            let leaf = shared[shared.count / 2]
            try zero(leaf.block, on: disk)
            let (report, repaired) = try repair(disk)
            XCTAssertTrue(report.repairs.contains { $0.contains("block \(leaf.block)") && $0.contains("lost") }, "\(report.repairs)")
            let after = try snapshot(repaired)
            assertSurvivors(before, after, reached: { (leaf.first.object...leaf.last.object).contains($0) }, report)
        }
    }

    /// An image file cut short (a copy that did not finish, a `truncate`): the mount
    /// refuses it, saying so; repair gives the file its length back and names each file
    /// that had bytes past the cut. Odd seeds cut past every tree node (only file bytes
    /// are lost, and nothing else needs repair), even ones anywhere in the used blocks
    /// (tree nodes are lost too, and the rest of the repair runs; with leaves of both
    /// trees lost, blocks only they named are free afterwards and must read as zeros,
    /// which `repair` checks: seed 10 held bytes there before the free space was
    /// punched).
    func testAnImageFileCutShortGetsItsLengthBackAndTheFilesThatLostBytesAreNamed() throws {
        var cutPastTheNodes = 0, cutThroughNodes = 0
        for seed in UInt64(1)...10 {
            let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: seed)
            let before = try snapshot(volume)
            var extents: [(inode: UInt64, blocks: Range<UInt64>)] = []
            try volume.filesystem.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
                if key.kind == ItemKind.extent.rawValue, case .image(let offset, let length)? = try? ExtentItem.decode(value) {
                    extents.append((key.object, ExtentReferenceChanges.blocks(offset: offset, length: length)))
                }
                return true
            }
            var nodes: [UInt64] = []
            try volume.filesystem.tree.forEachNodeBlock { nodes.append($0) }
            try volume.space.blockTree.tree.forEachNodeBlock { nodes.append($0) }
            let lastNode = try XCTUnwrap(nodes.max()), lastData = try XCTUnwrap(extents.map(\.blocks.upperBound).max())
            var random = SplitMix64(seed: seed)
            let cut: UInt64
            if seed % 2 == 1 {
                guard lastData > lastNode + 2 else { continue }
                cut = lastNode + 1 + random.next() % (lastData - lastNode - 1)
                cutPastTheNodes += 1
            } else {
                let end = max(lastNode, lastData), start = end / 2
                cut = start + random.next() % (end - start)
                cutThroughNodes += nodes.contains { $0 >= cut } ? 1 : 0
            }
            print("cut short: seed \(seed), at block \(cut)")
            let lostLeaves = try leaves(volume).filter { $0.block >= cut }
            let lostBytes = Set(extents.filter { $0.blocks.upperBound > cut }.map(\.inode))
            try disk.setLength(cut << 12)
            try disk.sync()
            XCTAssertThrowsError(try TreeVolume.open(disk)) { error in
                XCTAssertTrue("\(error)".contains("its end was cut off"), "seed \(seed): \(error)")
            }
            let (report, repaired) = try repair(disk)
            XCTAssertEqual(disk.length, VolumeCheckTests.capacity)
            XCTAssertTrue(report.repairs.first?.contains("the image file was \(cut << 12) bytes") == true, "\(report.repairs)")
            let after = try snapshot(repaired)
            // Lost with a leaf: an inode's own items, and its name (kept under its parent).
            func inLostLeaf(_ object: UInt64?) -> Bool {
                guard let object else { return false }
                return lostLeaves.contains { ($0.first.object...$0.last.object).contains(object) }
            }
            assertSurvivors(before, after, reached: { inode in
                lostBytes.contains(inode) || inLostLeaf(inode) || inLostLeaf(before.parents[inode])
            }, report, minimumUnchanged: 0)  // a cut through the root directory's names moves every file
            if seed % 2 == 1 {
                // Only file bytes were lost: each such file is named for them, and nothing else is.
                let named = report.affected.filter { $0.contains("past the end of the cut-short image file") }
                XCTAssertEqual(named.count, report.affected.count, "\(report.affected)")
                for inode in lostBytes where after.bytes[inode] != before.bytes[inode] {
                    let path = before.paths[inode] ?? "#\(inode)"  // unlinked while open: no path
                    XCTAssertTrue(named.contains { $0.hasPrefix("lost data: \(path) (") }, "seed \(seed): \(path) not named")
                }
            }
        }
        XCTAssertGreaterThan(cutPastTheNodes, 1)
        XCTAssertGreaterThan(cutThroughNodes, 1)
    }

    /// An image cut short below its filesystem tree's root: the refusal (the mount's, and
    /// fsck's check) says that repair will find no file in it, before anyone runs it (an
    /// administrator's repair emptied such a tree, naming nothing: the admin hunt of the
    /// thirty-fifth session). A cut past the root does not say it.
    func testACutBelowTheTreesRootSaysRepairFindsNoFile() throws {
        for belowRoot in [true, false] {
            let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
            let root = try XCTUnwrap(volume.current.filesystemTree).block
            let capacity = volume.current.capacityBytes
            XCTAssertLessThan(root + 1, capacity >> 12, "setup: a block past the root to cut at")
            let saysSo = belowRoot
            try disk.setLength(belowRoot ? root << 12 : capacity - 4096)
            // fsck's check reports it; the mount refuses with it.
            let text = try VolumeCheck.run(disk).problems.joined(separator: "\n")
            XCTAssertTrue(text.contains("its end was cut off"), text)
            XCTAssertEqual(text.contains("the root of its filesystem tree (block \(root)) lies past the cut"), saysSo, text)
            XCTAssertThrowsError(try TreeVolume.open(disk)) { error in
                XCTAssertEqual("\(error)".contains("lies past the cut"), saysSo, "\(error)")
            }
        }
    }

    /// A cut through the journal's frames after the last commit: repair replays the
    /// frames before the cut and says that the operations past it are lost, and that
    /// which files they changed cannot be told (their frames named them). A cut after the
    /// journal's last frame says nothing of the journal.
    func testACutThroughTheJournalSaysTheOperationsPastItAreLost() throws {
        for (seed, throughTheJournal) in [(UInt64(3), true), (UInt64(4), false), (UInt64(5), true)] {
            let (disk, volume, script) = try VolumeCheckTests.committedVolume(seed: seed, steps: 300)
            let generation = volume.current.generation
            // Frames only, after the commit.
            for _ in 0..<250 { try script.step() }
            XCTAssertEqual(volume.current.generation, generation, "a commit ran: the journal is not the tail")
            let journal = try XCTUnwrap(volume.journal)
            XCTAssertEqual(try CommitSlots.read(disk).current.journal, journal.head)
            let segments = journal.segments, end = journal.writeOffset
            let cut: UInt64
            if throughTheJournal {
                // Inside the first segment's frames.
                let first = segments[0].range
                let framesEnd = segments.count > 1 ? first.upperBound : end
                cut = ((first.lowerBound + framesEnd) / 2) >> 12
                XCTAssertTrue(cut > first.lowerBound >> 12 && cut << 12 < framesEnd,
                              "seed \(seed): frames \(first.lowerBound)..<\(framesEnd) within one block")
            } else {
                XCTAssertTrue(segments.allSatisfy { $0.range.upperBound <= segments.last!.range.upperBound })
                cut = (end >> 12) + 2
            }
            try disk.setLength(cut << 12)
            try disk.sync()
            let (report, _) = try repair(disk)
            let lines = report.repairs.filter { $0.contains("journal") && $0.contains("cannot be told") }
            // The frames after the commit that read whole but are not replayed (the cut
            // took tree nodes of the commit, and repair fell back to the one before): each
            // file they changed is named.
            if throughTheJournal || report.repairs.contains(where: { $0.contains("journal frames after commit \(generation) are not replayed") }) {
                XCTAssertTrue(report.affected.contains { $0.hasPrefix("lost changes: ") && $0.contains("after commit \(generation)") },
                              "seed \(seed): \(report.affected)")
            }
            if throughTheJournal {
                XCTAssertEqual(lines.count, 1, "seed \(seed): \(report.repairs)")
                XCTAssertTrue(lines.first?.contains("commit \(generation)'s journal") == true, "\(lines)")
                XCTAssertFalse(lines.first?.contains("its 0 frames before the cut") ?? true, "\(lines)")
            } else {
                XCTAssertEqual(lines, [], "seed \(seed): a cut after the journal's end")
            }
        }
    }

    func testAZeroedInternalNodeLosesNothing() throws {
        let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 4, steps: 900)
        let before = try snapshot(volume)
        let root = try XCTUnwrap(volume.current.filesystemTree)
        XCTAssertGreaterThan(root.level, 0)
        try zero(root.block, on: disk)
        // And no previous commit to fall back to.
        try zero(CommitSlot.block(forGeneration: volume.current.generation - 1), on: disk)
        let (report, repaired) = try repair(disk)
        XCTAssertTrue(report.repairs.contains { $0.contains("found through the block tree") }, "\(report.repairs)")
        try assertUnchanged(before, repaired)
        XCTAssertEqual(report.affected, [])
    }

    func testAWrongLinkCountIsCorrected() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        let (number, item) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount > 0 })
        var wrong = item
        wrong.linkCount += 3
        try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(number), wrong.encoded())
        try volume.commit()
        let (report, repaired) = try repair(disk)
        XCTAssertEqual(try repaired.filesystem.inode(number)?.linkCount, item.linkCount)
        let path = try XCTUnwrap(before.paths[number])
        XCTAssertTrue(report.affected.contains("links: \(path) (its link count was \(wrong.linkCount), now \(item.linkCount))"),
                      "\(report.affected)")
        try assertUnchanged(before, repaired)
    }

    func testAMissingIndexEntryIsRestored() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        let (directory, entries) = try XCTUnwrap(model.entries.first { !$0.value.isEmpty })
        let entry = try XCTUnwrap(entries.values.first)
        _ = try volume.filesystem.tree.remove(FileSystemTree.indexKey(directory, entry.index))
        try volume.commit()
        let (report, repaired) = try repair(disk)
        XCTAssertTrue(try repaired.filesystem.entries(directory: directory).contains(entry))
        XCTAssertTrue(report.affected.contains { $0.hasPrefix("restored: ") && $0.contains("directory entry") }, "\(report.affected)")
        try assertUnchanged(before, repaired)
    }

    /// A back reference kept under another name's hash (a damaged key the checksums did
    /// not catch; the fuzzer made one): lookups of the inode's links by name would not find
    /// it. Repair moves it under its own; before, the repaired image still had the
    /// problem.
    func testABackReferenceUnderAnotherHashIsMoved() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        let (directory, entries) = try XCTUnwrap(model.entries.first { !$0.value.isEmpty })
        let entry = try XCTUnwrap(entries.values.first)
        let key = volume.filesystem.backReferenceKey(entry.child, directory, entry.name)
        let value = try XCTUnwrap(try volume.filesystem.tree.lookup(key))
        _ = try volume.filesystem.tree.remove(key)
        let wrong = TreeKey(object: key.object, kind: key.kind, offset: key.offset ^ 0x10)
        try volume.filesystem.tree.upsert(wrong, value)
        try volume.commit()
        XCTAssertTrue(try VolumeCheck.run(disk).problems.contains { $0.contains("under another hash") })
        let (_, repaired) = try repair(disk)
        XCTAssertNotNil(try repaired.filesystem.tree.lookup(key))
        XCTAssertNil(try repaired.filesystem.tree.lookup(wrong))
        try assertUnchanged(before, repaired)
    }

    /// An inode item that does not decode (a file type no file has), under an orphan item
    /// saying its drop is under way, is lost with its inode: its names are removed and
    /// named in the report, and the repaired image checks clean (its slot's count
    /// included). The fuzzer's image of this kind,
    /// `Tests/FuzzRegressions/format2-inode-item-that-does-not-decode-under-a-drop`, kept
    /// the item before the name pass removed such items ("commit 8 counts 0 inodes; the
    /// tree holds 1"); this simpler one repairs cleanly either way.
    func testAnInodeItemThatDoesNotDecodeIsLostWithItsInode() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        let (number, _) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount == 1 })
        var bytes = try XCTUnwrap(try volume.filesystem.tree.lookup(FileSystemTree.inodeKey(number)))
        bytes[1] = 0  // the file type
        try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(number), bytes)
        // And an orphan item saying its drop is under way (which keeps its other items for
        // that drop): the fuzzer's image had both.
        try volume.filesystem.tree.upsert(FileSystemTree.orphanKey(number), OrphanItem(state: .dropping).encoded())
        try volume.commit()
        let (report, repaired) = try repair(disk)
        XCTAssertNil(try repaired.filesystem.tree.lookup(FileSystemTree.inodeKey(number)))
        let path = try XCTUnwrap(before.paths[number])
        XCTAssertTrue(report.affected.contains { $0.hasPrefix("removed: \(path) (it named inode \(number),") }, "\(report.affected)")
        assertSurvivors(before, try snapshot(repaired), reached: { $0 == number }, report)
    }

    /// An xattr item holding an attribute whose name no namespace stores (damage: no
    /// request could have written it), one whose value's chunk items are not there, and
    /// one that is good: repair keeps the good one, removes the others and names the file.
    /// Before, the whole item went, and the file was not named (an item holds the
    /// attributes whose names share a 48-bit hash).
    func testADamagedXattrItemKeepsItsGoodAttributesAndNamesTheFile() throws {
        let good = Array("user.kept".utf8), bad = Array("bad.name".utf8), chunked = Array("user.chunks".utf8)
        let value: [UInt8] = [1, 2, 3]
        let item = XattrItem.unchecked([
            XattrItem.Attribute(name: bad, valueLength: 1, firstChunk: 0, inlineValue: [9]),
            XattrItem.Attribute(name: chunked, valueLength: 2_000, firstChunk: 1, inlineValue: []),
            XattrItem.Attribute(name: good, valueLength: 3, firstChunk: 0, inlineValue: value),
        ])
        let (number, _, repaired) = try repairDamagedXattrItem(seed: 5, named: good, item,
                                                               "are removed; kept: \"user.kept\")")
        XCTAssertEqual(try repaired.filesystem.xattr(number, name: good), value, "the good attribute is kept")
        XCTAssertEqual(try repaired.filesystem.xattrNames(number).filter { [good, bad, chunked].contains($0) }, [good])
    }

    /// An xattr item that cannot be read at all (its first entry's lengths run past it) is
    /// removed, and the file is named.
    func testAnXattrItemThatCannotBeReadIsRemovedAndItsFileNamed() throws {
        let (_, key, repaired) = try repairDamagedXattrItem(seed: 6, named: Array("user.gone".utf8), [1, 200, 0x75],
                                                            "are removed)")
        XCTAssertNil(try repaired.filesystem.tree.lookup(key))
    }

    /// An xattr item whose attributes are all good, with a byte after them: rewritten
    /// without it, every attribute kept, and said so.
    func testAnXattrItemDamagedAfterItsAttributesKeepsThemAll() throws {
        let name = Array("user.tail".utf8)
        let bytes = XattrItem(attributes: [.init(name: name, valueLength: 1, firstChunk: 0, inlineValue: [5])]).encoded() + [0]
        let (number, _, repaired) = try repairDamagedXattrItem(seed: 7, named: name, bytes, saying: "rewritten",
                                                               "which are all kept: \"user.tail\")")
        XCTAssertEqual(try repaired.filesystem.xattr(number, name: name), [5])
    }

    /// A chunked xattr value with a chunk item missing or of another length, in an item
    /// that decodes: the check found it clean and its read failed with EIO. Repair removes
    /// the attribute with its other chunk items and names the file; a chunk item no
    /// attribute names goes with a line of the report and no file named.
    func testAnXattrWhoseChunksAreDamagedIsRemovedAndItsStrayChunksToo() throws {
        for damage in ["missing", "longer", "stray"] {
            let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
            let before = try snapshot(volume)
            let (key, bytes) = try VolumeCheckTests.firstXattrChunk(volume)
            let itemKey = TreeKey(object: key.object, kind: key.kind, offset: key.offset & ~0xFFFF)
            let item = try XCTUnwrap(try volume.filesystem.tree.lookup(itemKey).map { try XattrItem.decode(bytes: $0) })
            let attribute = try XCTUnwrap(item.attributes.first { $0.chunks.contains(Int(key.offset & 0xFFFF)) })
            switch damage {
            case "missing": XCTAssertTrue(try volume.filesystem.tree.remove(key))
            case "longer": try volume.filesystem.tree.upsert(key, bytes + [0])
            default: try volume.filesystem.tree.upsert(TreeKey(object: key.object, kind: key.kind, offset: key.offset | 0xFFFF), bytes)
            }
            try volume.commit()
            let (report, repaired) = try repair(disk)
            var chunks: [UInt64] = []
            try repaired.filesystem.tree.scan(from: itemKey, through: TreeKey(object: key.object, kind: key.kind, offset: itemKey.offset | 0xFFFF)) {
                (found, _) throws(FSError) in
                if found.offset & 0xFFFF != 0 { chunks.append(found.offset & 0xFFFF) }
                return true
            }
            if damage == "stray" {
                XCTAssertEqual(report.affected, [], damage)
                XCTAssertTrue(report.repairs.contains("1 extended attribute chunk item that no attribute names is removed"), "\(report.repairs)")
                XCTAssertEqual(try repaired.filesystem.xattr(key.object, name: attribute.name)?.count, Int(attribute.valueLength))
                XCTAssertFalse(chunks.contains(0xFFFF))
            } else {
                let path = try XCTUnwrap(before.paths[key.object])
                let name = VolumeCheck.show(attribute.name).debugDescription
                XCTAssertTrue(report.affected.contains { $0 == "lost extended attributes: \(path) (\(name): their values' chunk items were missing or damaged; the attributes are removed)" },
                              "\(damage): \(report.affected)")
                XCTAssertNil(try repaired.filesystem.xattr(key.object, name: attribute.name))
                XCTAssertTrue(chunks.allSatisfy { !attribute.chunks.contains(Int($0)) }, "\(damage): its chunks stay: \(chunks)")
                XCTAssertTrue(report.repairs.contains { $0.hasSuffix("that no attribute names are removed") || $0.hasSuffix("that no attribute names is removed") } == (attribute.chunkCount > 1 || damage == "longer"),
                              "\(damage): \(report.repairs)")
            }
            assertSurvivors(before, try snapshot(repaired), reached: { _ in false }, report)
        }
    }

    /// Writes `bytes` as the xattr item of `name` of a file of a committed volume, repairs
    /// it, and checks that the report names that file with a line of `kind` ending in `ending` and
    /// that nothing else changed. Returns the file's inode, the key and the repaired volume.
    private func repairDamagedXattrItem(seed: UInt64, named name: [UInt8], _ bytes: [UInt8],
                                        saying kind: String = "lost extended attributes", _ ending: String,
                                        file: StaticString = #filePath, line: UInt = #line) throws -> (UInt64, TreeKey, TreeVolume) {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: seed, steps: 250)
        let before = try snapshot(volume)
        let (number, _) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount == 1 })
        let key = volume.filesystem.xattrKey(number, name)
        XCTAssertNil(try volume.filesystem.tree.lookup(key), "setup: the key is free", file: file, line: line)
        try volume.filesystem.tree.upsert(key, bytes)
        try volume.commit()
        let (report, repaired) = try repair(disk)
        let path = try XCTUnwrap(before.paths[number])
        XCTAssertTrue(report.affected.contains { $0.hasPrefix("\(kind): \(path) (") && $0.hasSuffix(ending) },
                      "\(report.affected)", file: file, line: line)
        assertSurvivors(before, try snapshot(repaired), reached: { _ in false }, report, file: file, line: line)
        return (number, key, repaired)
    }

    /// An inode item at object 0 (found by the fuzzer): no inode has that number, so
    /// repair removes its items; it moved it to /lost+found as "#0" before, whose name item
    /// (child 0) does not decode (an assertion in a debug build).
    func testItemsOfObjectZeroAreRemoved() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        let (_, item) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount > 0 })
        try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(0), item.encoded())
        try volume.commit()
        let (report, repaired) = try repair(disk)
        XCTAssertNil(try repaired.filesystem.tree.lookup(FileSystemTree.inodeKey(0)))
        XCTAssertEqual(report.affected, [])
        assertSurvivors(before, try snapshot(repaired), reached: { _ in false }, report)
    }

    /// An extent whose image bytes run from below the block space to far past it (found by
    /// the fuzzer: `Tests/FuzzRegressions/format2-extent-outside-the-space-claims-every-block`).
    /// The name pass removes it and names the file; it held no file's bytes. Repair
    /// counted its blocks, clamped to the space, as the old commit's, so they were every
    /// block and repair refused the image, which mounts ("repair found no free block to
    /// write the repaired trees in").
    func testAnExtentOutsideTheSpaceLeavesRepairItsFreeBlocks() throws {
        let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        var found: (TreeKey, UInt64)?
        try volume.filesystem.tree.scan(from: .minimum, through: .maximum) { (key, value) throws(FSError) in
            guard key.kind == ItemKind.extent.rawValue, case .image(_, let length)? = try? ExtentItem.decode(value) else { return true }
            found = (key, length)
            return false
        }
        let (key, length) = try XCTUnwrap(found)
        try volume.filesystem.tree.upsert(key, ExtentItem.image(offset: 0, length: length + (1 << 56)).encoded())
        try volume.commit()
        XCTAssertGreaterThan(try volume.space.freeBlockCount(), TreeVolume.commitOverheadBlocks,
                             "the image had room: only the damaged extent's claim could take it")
        let (report, repaired) = try repair(disk)
        XCTAssertNil(try repaired.filesystem.tree.lookup(key))
        let path = try XCTUnwrap(before.paths[key.object])
        XCTAssertTrue(report.affected.contains { $0.hasPrefix("lost data: \(path) (its extent at byte \(key.offset) was damaged") },
                      "\(report.affected)")
        assertSurvivors(before, try snapshot(repaired), reached: { $0 == key.object }, report)
    }

    /// The damages the defect hunt of the thirty-fifth session found checking clean, each
    /// failing a request, trapping the daemon or leaving the mount refusing: repair
    /// brings each to a clean image, says what it did, and loses nothing else.
    func testTheDamagesTheHuntFoundCheckingCleanAreRepaired() throws {
        for damage in ["extent wrapping past 2^64", "next entry number 0", "parent field", "target with a NUL"] {
            let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
            let before = try snapshot(volume)
            var reached: UInt64 = 0
            switch damage {
            case "extent wrapping past 2^64":
                let (number, _) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.size >= 200 })
                reached = number
                try volume.filesystem.tree.upsert(FileSystemTree.key(number, .extent, UInt64.max - 4095),
                                                  ExtentItem.fill(byte: 7, length: 4196).encoded())
            case "next entry number 0":
                var root = try XCTUnwrap(try volume.filesystem.inode(1))
                root.nextIndex = 0
                try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(1), root.encoded())
            case "parent field":
                let (number, item) = try XCTUnwrap(model.inodes.first { $0.key != 1 && $0.value.type == 4 && $0.value.linkCount > 0 })
                var wrong = item
                wrong.parent = item.parent == 1 ? number : 1
                try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(number), wrong.encoded())
            default:
                let (number, _) = try XCTUnwrap(model.inodes.first { $0.value.type == 10 })
                reached = number
                var target = try XCTUnwrap(try volume.filesystem.symlinkTarget(number))
                target[0] = 0
                try volume.filesystem.tree.upsert(FileSystemTree.key(number, .symlinkTarget, 0), target)
            }
            try volume.commit()
            let (report, repaired) = try repair(disk)
            switch damage {
            case "extent wrapping past 2^64":
                let path = try XCTUnwrap(before.paths[reached])
                XCTAssertTrue(report.affected.contains { $0.hasPrefix("lost data: \(path) (its extent at byte \(UInt64.max - 4095)") },
                              "\(report.affected)")
            case "next entry number 0":
                XCTAssertGreaterThanOrEqual(try XCTUnwrap(try repaired.filesystem.inode(1)).nextIndex, 3)
            case "parent field":
                XCTAssertTrue(report.repairs.contains { $0.contains("its parent field said") }, "\(report.repairs)")
            default:
                let path = try XCTUnwrap(before.paths[reached])
                XCTAssertTrue(report.affected.contains { $0.hasPrefix("lost data: \(path) (its symlink target was damaged") },
                              "\(report.affected)")
            }
            assertSurvivors(before, try snapshot(repaired), reached: { $0 == reached }, report)
        }
    }

    /// An index item moved to key 2^64 - 1 (no entry's number; no decoder of the item
    /// reads its key), its name item gone: repair removes it, and the file, which no name
    /// reaches then, goes to /lost+found. Before, the name pass rebuilt a name item at
    /// that number from it, which does not decode, and the link pass's count past the
    /// last entry trapped (the review of the change). With its name item there, the name
    /// decides and the entry is restored at its number.
    func testAnIndexItemKeyedAtTheLastNumberIsRemoved() throws {
        for nameKept in [true, false] {
            let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
            let before = try snapshot(volume)
            // A file of one link (with another, a name still reaches it), chosen in a fixed
            // order (dictionaries iterate in a per-process order).
            func single(_ entry: NamedEntry) -> Bool { entry.type == 8 && model.inodes[entry.child]?.linkCount == 1 }
            let (directory, entries) = try XCTUnwrap(model.entries.sorted { $0.key < $1.key }.first {
                $0.value.count >= 2 && $0.value.values.contains(where: single)
            })
            let moved = try XCTUnwrap(entries.values.sorted { $0.index < $1.index }.first(where: single))
            let key = FileSystemTree.indexKey(directory, moved.index)
            let bytes = try XCTUnwrap(try volume.filesystem.tree.lookup(key))
            XCTAssertTrue(try volume.filesystem.tree.remove(key))
            try volume.filesystem.tree.upsert(FileSystemTree.indexKey(directory, UInt64.max), bytes)
            if !nameKept {
                XCTAssertTrue(try volume.filesystem.tree.remove(volume.filesystem.nameKey(directory, moved.name)))
            }
            try volume.commit()
            let (report, repaired) = try repair(disk)
            XCTAssertNil(try repaired.filesystem.tree.lookup(FileSystemTree.indexKey(directory, UInt64.max)))
            if nameKept {
                XCTAssertNotNil(try repaired.filesystem.tree.lookup(key), "the entry is restored at its name's number")
                try assertUnchanged(before, repaired)
            } else {
                assertSurvivors(before, try snapshot(repaired), reached: { $0 == moved.child }, report)
                XCTAssertTrue(VolumeRepair.Changes.path(of: moved.child, in: repaired.filesystem)?.hasPrefix("/lost+found/") == true)
            }
        }
    }

    func testAWrongReferenceCountIsRecounted() throws {
        let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 5, steps: 250)
        let before = try snapshot(volume)
        let block = try XCTUnwrap(try volume.space.blockTree.allRuns().first { $0.use == .data && $0.count == 1 }).blocks.lowerBound
        volume.space.retain(block..<block + 1)
        try volume.commit()
        // In batches of 100 blocks: the census of the references takes many passes.
        let (report, repaired) = try repair(disk, budgetBytes: 400)
        XCTAssertEqual(report.affected, [])
        XCTAssertEqual(try repaired.space.blockTree.count(of: block), 1)
        var contents = VolumeFileContents()
        for (number, bytes) in before.bytes {
            XCTAssertEqual(try contents.bytes(of: number, size: bytes.count, in: repaired), bytes)
        }
        XCTAssertNil(try contents.dataRunMismatch(in: repaired))
    }

    /// Journal blocks the block tree records and no chain links (what a crash left when
    /// a commit recorded a spare segment before the chain linked it, before spares were
    /// recorded only once linked): the repair's census frees them, and nothing else changes.
    func testJournalBlocksNoChainLinksAreFreed() throws {
        let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 6, steps: 120)
        let before = try snapshot(volume)
        let segment = try volume.logSpace.allocateLogSegment(byteCount: 16 << 10, minimumBytes: 16 << 10)
        try volume.commit()
        let leaked = segment.lowerBound >> BackingStore.blockShift
        XCTAssertEqual(try volume.space.blockTree.runs(overlapping: leaked..<leaked + 1).first?.use, .journal)
        try volume.close()
        let (report, repaired) = try repair(disk)
        XCTAssertEqual(report.affected, [])
        XCTAssertEqual(try repaired.space.blockTree.count(of: leaked), 0, "the leaked segment's first block")
        try assertUnchanged(before, repaired)
    }

    /// A leaf the last commit wrote, damaged: the previous commit, which checks clean, is
    /// taken, and the journal kept since it brings the last commit's change (a chmod)
    /// back: nothing is lost.
    func testADamagedCurrentCommitFallsBackToThePreviousOne() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 6, steps: 300)
        let before = try snapshot(volume)
        let previous = volume.current.generation
        let (number, item) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount > 0 })
        var changed = item
        changed.permissions = 0o600 ^ item.permissions & 0o7
        try volume.perform([.attributes(inode: number, changed)])
        try volume.commit()
        // A change after the damaged commit (a frame of the next generation, which replay
        // over the previous commit cannot apply): left out, said so, and its file named.
        let (other, otherItem) = try XCTUnwrap(model.inodes.first { $0.key != number && $0.value.type == 8 && $0.value.linkCount > 0 })
        var otherChanged = otherItem
        otherChanged.uid += 1
        try volume.perform([.attributes(inode: other, otherChanged)])
        let written = try XCTUnwrap(try leaves(volume).first { $0.generation == volume.current.generation })
        try zero(written.block, on: disk)
        let (report, repaired) = try repair(disk)
        XCTAssertTrue(report.repairs.contains { $0.contains("the previous commit, \(previous), checks clean and is taken instead") },
                      "\(report.repairs)")
        XCTAssertTrue(report.repairs.contains("1 journal frames after commit \(previous + 1) are not replayed (changes made after the damaged commit)"),
                      "\(report.repairs)")
        XCTAssertEqual(try repaired.filesystem.inode(number)?.permissions, changed.permissions)
        XCTAssertEqual(try repaired.filesystem.inode(other)?.uid, otherItem.uid)
        // The file whose change was left out is named (it was not before).
        let otherPath = try XCTUnwrap(before.paths[other])
        XCTAssertEqual(report.affected, ["lost changes: \(otherPath) (operations answered after commit \(previous + 1), whose "
                                         + "journal frames were left out of the replay, changed it)"])
        try assertUnchanged(before, repaired)
    }

    /// A damaged current commit with no previous commit to fall back to: its trees are
    /// rebuilt, the journal's frames after it are not replayed, and each file they changed
    /// is named (they were counted only, before).
    func testFramesAfterARebuiltCommitNameTheFilesTheyChanged() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 6, steps: 300)
        let before = try snapshot(volume)
        let generation = volume.current.generation
        let files = model.inodes.filter { $0.value.type == 8 && $0.value.linkCount > 0 }.sorted { $0.key < $1.key }
        XCTAssertGreaterThan(files.count, 2)
        let (number, item) = files[0]
        var changed = item
        changed.uid += 1
        try volume.perform([.attributes(inode: number, changed)])
        let written = try XCTUnwrap(try leaves(volume).first { $0.generation == generation })
        try zero(written.block, on: disk)
        try zero(CommitSlot.block(forGeneration: generation - 1), on: disk)
        let (report, _) = try repair(disk)
        XCTAssertTrue(report.repairs.contains("1 journal frames after commit \(generation) are not replayed (changes made after "
                                              + "the last commit)"), "\(report.repairs)")
        let path = try XCTUnwrap(before.paths[number])
        XCTAssertTrue(report.affected.contains { $0.hasPrefix("lost changes: \(path) (") && $0.contains("after commit \(generation),") },
                      "\(path): \(report.affected)")
    }

    /// A cut inside a journal frame's header (an image file's length need not be whole
    /// blocks) still says the operations past it are lost; a cleanly unmounted image cut
    /// through its empty chain says nothing of the journal (nothing was answered after it).
    func testACutInsideAFramesHeaderIsSaidAndACleanImagesIsNot() throws {
        let (disk, _, script) = try VolumeCheckTests.committedVolume(seed: 7, steps: 300)
        for _ in 0..<250 { try script.step() }
        let slot = try CommitSlots.read(disk).current
        // The start of the frame after the chain's tenth, read as replay reads it.
        var read = 0
        let firstTen = SlotJournal(disk, slot) { _, _ in
            read += 1
            return read < 10
        }
        XCTAssertEqual(read, 10, "fewer than ten frames")
        let tenth = try XCTUnwrap(firstTen.endOffset)
        try disk.setLength(tenth + 20)
        try disk.sync()
        let (report, _) = try repair(disk)
        XCTAssertTrue(report.repairs.contains { $0.contains("journal frame") && $0.contains("at byte \(tenth) runs past the cut")
                                                && $0.contains("(10 frames before it read whole)") }, "\(report.repairs)")

        let (cleanDisk, clean, _) = try VolumeCheckTests.committedVolume(seed: 7, steps: 300)
        try clean.close()
        let cleanSlot = try CommitSlots.read(cleanDisk).current
        XCTAssertTrue(cleanSlot.cleanlyUnmounted && cleanSlot.journal.length > 0)
        try cleanDisk.setLength(cleanSlot.journal.start + 8)
        try cleanDisk.sync()
        let (cleanReport, _) = try repair(cleanDisk)
        XCTAssertFalse(cleanReport.repairs.contains { $0.contains("cannot be told") }, "\(cleanReport.repairs)")
    }

    /// The fall-back numbers its journal past the damaged commit's chain, not only past the
    /// previous commit's: when the damaged commit is a mount's opening one, that mount's
    /// frames lie in blocks free under the previous commit, numbered from where replay of
    /// the previous chain ended, as the fall-back's chain would be (docs/FORMAT.md, "The
    /// journal of format 2").
    func testTheFallBackNumbersItsJournalPastTheDamagedCommitsChain() throws {
        let (firstDisk, volume, model) = try VolumeCheckTests.makeVolume(seed: 8, steps: 300)
        try volume.commit()
        let (number, item) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount > 0 })
        var changed = item
        changed.permissions = 0o600 ^ item.permissions & 0o7
        try volume.perform([.attributes(inode: number, changed)])
        // A kill; the next mount's opening commit writes the change, then a frame follows.
        var rng = SplitMix64(seed: 8)
        let disk = CrashSimulatingStorage(maximumBytes: Int(firstDisk.length),
                                          initial: firstDisk.crashImage(using: &rng, keep: 1, torn: 0))
        let next = try TreeVolume.open(disk)
        changed.uid += 1
        try next.perform([.attributes(inode: number, changed)])
        let damagedChainEnd = try XCTUnwrap(next.journal).nextSequence
        let written = try XCTUnwrap(try leaves(next).first { $0.generation == next.current.generation })
        try zero(written.block, on: disk)
        let report = try VolumeRepair.run(disk)
        XCTAssertTrue(report.repairs.contains { $0.contains("checks clean and is taken instead") }, "\(report.repairs)")
        let repaired = try CommitSlots.read(disk).current
        XCTAssertGreaterThanOrEqual(repaired.journalSequence, damagedChainEnd + TreeVolume.sequenceGap,
                                    "the fall-back's journal is numbered among the damaged mount's frames")
        // The frame after the damaged commit lies in that mount's own chain, which the
        // previous commit's does not link to: it is left out, counted and its file named.
        XCTAssertTrue(report.repairs.contains { $0.hasPrefix("1 journal frames after commit ") }, "\(report.repairs)")
        XCTAssertEqual(report.affected.filter { $0.hasPrefix("lost changes: ") }.count, 1, "\(report.affected)")
    }

    /// The fall-back to the previous commit punches nothing until its own commit's slot is
    /// written: the previous commit's pending frees may be blocks the damaged commit wrote
    /// nodes on (freed nodes reused without a punch), which repair of that commit needs if
    /// the fall-back fails half-way. Before, opening the previous commit punched them first.
    func testTheFallBackPunchesNothingBeforeItsCommitIsWritten() throws {
        let (disk, volume, model) = try VolumeCheckTests.makeVolume(seed: 6, steps: 300)
        let (number, item) = try XCTUnwrap(model.inodes.first { $0.value.type == 8 && $0.value.linkCount > 0 })
        var changed = item
        changed.permissions = 0o600 ^ item.permissions & 0o7
        try volume.perform([.attributes(inode: number, changed)])
        // What opening the previous commit would punch: its pending frees but its own.
        volume.waitForPunches()
        let previousPending = BlockRanges(RangeSet(try volume.space.blockTree.pendingFrees(through: volume.current.generation - 1)
            .map { ($0.blocks.lowerBound << 12)..<($0.blocks.upperBound << 12) }))
        XCTAssertFalse(previousPending.isEmpty, "setup: the previous commit has no pending frees for its opening to punch")
        try volume.commit()
        let written = try XCTUnwrap(try leaves(volume).first { $0.generation == volume.current.generation })
        try zero(written.block, on: disk)
        final class Changes: @unchecked Sendable {
            var list: [CrashSimulatingStorage.Change] = []
        }
        let changes = Changes()
        disk.beforeChange { changes.list.append($0) }
        let report = try VolumeRepair.run(disk)
        disk.beforeChange(nil)
        XCTAssertTrue(report.repairs.contains { $0.contains("checks clean and is taken instead") }, "\(report.repairs)")
        let slotWrite = try XCTUnwrap(changes.list.firstIndex {
            if case .write(let range) = $0 { return range.overlaps(0..<(2 << 12)) }
            return false
        })
        func punchesPending(_ change: CrashSimulatingStorage.Change) -> Bool {
            if case .punch(let range) = change { return previousPending.overlaps(range) }
            return false
        }
        // (Blocks it took from the free space and gave back unwritten may be punched.)
        XCTAssertEqual(changes.list[..<slotWrite].filter(punchesPending).map(\.description), [],
                       "the fall-back punched pending frees of the previous commit before its own commit was written")
        XCTAssertTrue(changes.list[slotWrite...].contains(where: punchesPending), "the fall-back never punched the pending frees")
        XCTAssertTrue(try VolumeCheck.run(disk).isClean)
    }

    /// A crash anywhere in the repair leaves the image at its old commit (the repair
    /// writes only blocks that commit does not use, and its slot last) or at the repaired
    /// one: power cut at random moments among its writes and syncs.
    func testACrashDuringRepairLeavesTheOldCommitOrTheRepairedOne() throws {
        let (disk, volume, _) = try VolumeCheckTests.makeVolume(seed: 7, steps: 300)
        let shared = try leaves(volume).filter { $0.generation < volume.current.generation }
        try zero(shared[shared.count / 2].block, on: disk)
        let damaged = try VolumeCheck.run(disk)
        let old = try CommitSlots.read(disk).current.generation
        final class Cuts: @unchecked Sendable {
            let lock = PthreadMutex<(rng: SplitMix64, changes: Int, images: [(String, [UInt8])])>((SplitMix64(seed: 7), 0, []))
        }
        let cuts = Cuts()
        disk.beforeChange { change in
            cuts.lock.withLock { s in
                s.changes += 1
                if s.rng.next() % 4 == 0 { s.images.append(("\(s.changes): \(change)", disk.crashImage(using: &s.rng))) }
            }
        }
        _ = try VolumeRepair.run(disk)
        disk.beforeChange(nil)
        let (changes, images) = cuts.lock.withLock { ($0.changes, $0.images) }
        XCTAssertGreaterThan(images.count, 3)
        var atOld = 0, repaired = 0
        for (change, image) in images {
            let cut = CrashSimulatingStorage(maximumBytes: Int(VolumeCheckTests.capacity), initial: image)
            let generation = try CommitSlots.read(cut).current.generation
            let report = try VolumeCheck.run(cut)
            if generation == old {
                atOld += 1
                XCTAssertEqual(report.problems, damaged.problems, "cut before change \(change) of \(changes)")
                XCTAssertTrue(try VolumeRepair.run(cut).after?.isClean ?? false, "cut before change \(change): repaired again")
            } else {
                repaired += 1
                XCTAssertTrue(report.isClean, "cut before change \(change) of \(changes), at commit \(generation): \(report.problems.prefix(3))")
            }
        }
        print("\(images.count) cuts among \(changes) changes: \(atOld) at the old commit, \(repaired) repaired")
        XCTAssertGreaterThan(atOld, 0)
    }
}
