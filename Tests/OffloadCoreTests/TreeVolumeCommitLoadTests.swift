import XCTest
@testable import OffloadCore
import OffloadSimulation

/// What the commits of changes waiting may write on a full image (`CommitLoad`): an object
/// counted once, as before, and the leaves its items may fill beyond it. Counted by objects
/// alone, an inode given thousands of xattrs, or a directory thousands of hard links, was
/// one object's commit in the estimate: on a full image admission let them through, the
/// generation was not committed in time, and its commit found no room and failed the volume
/// (through a mount: `scripts/full-image-probe`'s `xattr` and `link` cases, unmount exit 1).
final class TreeVolumeCommitLoadTests: XCTestCase {
    private let file = NamespaceChangeScript.inode(type: 8, links: 1)

    /// A key counts once a generation; an xattr's value again only by what it grew; a
    /// create's name counts nothing (its new inode's count covers it), but a name linked
    /// again after an unlink counts anew; a name of an existing child, or an xattr of an
    /// existing inode, counts its items and the leaves elsewhere it may land in (a link:
    /// name and back reference; an unlink: those and the index item), none when the object
    /// was made in the generation; a file range that continues the last one of its file
    /// lands in none.
    func testItemsCountOnceAndByWhereTheyLand() throws {
        let generation = DeltaGeneration(number: 1)
        let growth = CommitLoad.growth, overhead = CommitLoad.itemOverhead
        var expected = CommitLoad()
        func check(_ line: UInt = #line) {
            XCTAssertEqual(generation.commitLoad, expected, line: line)
        }
        // An xattr of an existing inode: its item, one leaf.
        try generation.record([.setXattr(inode: 40, name: Array("user.c".utf8), value: [1])])
        expected = CommitLoad(objects: 1, itemBytes: growth * (overhead + 6 + 1), scatteredLeaves: 1)
        check()
        // A create: nothing beyond its two objects.
        let created = NamedEntry(name: Array("f".utf8), child: 10, type: 8, index: 3)
        try generation.record([.link(directory: 1, created), .attributes(inode: 10, file)], born: 10..<11)
        expected.objects += 2
        check()
        // A hard link to an existing file: its three items, two leaves.
        let linked = NamedEntry(name: Array("g".utf8), child: 20, type: 8, index: 4)
        try generation.record([.link(directory: 1, linked), .attributes(inode: 20, file)])
        expected.objects += 1
        expected.itemBytes += growth * 3 * (overhead + 1)
        expected.scatteredLeaves += 2
        check()
        // An xattr of that existing inode: its item, a leaf; set again larger: the
        // growth; smaller: nothing.
        try generation.record([.setXattr(inode: 20, name: Array("user.a".utf8), value: [UInt8](repeating: 1, count: 100))])
        expected.itemBytes += growth * (overhead + 6 + 100)
        expected.scatteredLeaves += 1
        check()
        try generation.record([.setXattr(inode: 20, name: Array("user.a".utf8), value: [UInt8](repeating: 1, count: 150))])
        expected.itemBytes += growth * 50
        check()
        try generation.record([.setXattr(inode: 20, name: Array("user.a".utf8), value: [1])])
        check()
        // An xattr of the inode made in this generation: its item, no leaf elsewhere.
        try generation.record([.setXattr(inode: 10, name: Array("user.b".utf8), value: [1, 2])])
        expected.itemBytes += growth * (overhead + 6 + 2)
        check()
        // File ranges of the existing file: a leaf, unless one continues the last.
        let piece = { (offset: UInt64) in [FilePiece(offset: offset, extent: .repeatingBytes(value: 7, count: 4096))] }
        try generation.record([.fileRange(inode: 20, size: 4096, range: 0..<4096, pieces: piece(0))])
        expected.itemBytes += growth * 2 * overhead
        expected.scatteredLeaves += 1
        check()
        try generation.record([.fileRange(inode: 20, size: 8192, range: 4096..<8192, pieces: piece(4096))])
        expected.itemBytes += growth * 2 * overhead
        check()
        try generation.record([.fileRange(inode: 20, size: 8192, range: 0..<4096, pieces: piece(0))])
        expected.itemBytes += growth * 2 * overhead
        expected.scatteredLeaves += 1
        check()
        // A RAM piece kept inline in its extent item counts its bytes (this one does not
        // continue the last range: a leaf elsewhere too); a longer one, placed in a data
        // block its write was promised, does not (it continues the last: no leaf).
        let small = [FilePiece(offset: 8192, extent: .inMemory([UInt8](repeating: 3, count: 1000)))]
        try generation.record([.fileRange(inode: 20, size: 9192, range: 8192..<9192, pieces: small)])
        expected.itemBytes += growth * (2 * overhead + 1000)
        expected.scatteredLeaves += 1
        check()
        let large = [FilePiece(offset: 9192, extent: .inMemory([UInt8](repeating: 3, count: ExtentItem.inlineLimit + 1)))]
        try generation.record([.fileRange(inode: 20, size: 9192 + UInt64(ExtentItem.inlineLimit) + 1,
                                          range: 9192..<9192 + UInt64(ExtentItem.inlineLimit) + 1, pieces: large)])
        expected.itemBytes += growth * 2 * overhead
        check()
        // The unlink of the hard link: its key is counted already; linked again: anew.
        try generation.record([.unlink(directory: 1, linked)])
        check()
        try generation.record([.link(directory: 1, linked)])
        expected.itemBytes += growth * 3 * (overhead + 1)
        expected.scatteredLeaves += 2
        check()
        // The created name, linked to an existing file (a rename over it): anew.
        try generation.record([.link(directory: 1, NamedEntry(name: created.name, child: 20, type: 8, index: 6))])
        expected.itemBytes += growth * 3 * (overhead + 1)
        expected.scatteredLeaves += 2
        check()
        // An unlink of another existing child: three leaves.
        try generation.record([.unlink(directory: 1, NamedEntry(name: Array("h".utf8), child: 30, type: 8, index: 5))])
        expected.scatteredLeaves += 3
        check()
        // Admission's count of one operation: each change an object, every key new.
        XCTAssertEqual(CommitLoad.of([.link(directory: 1, linked), .attributes(inode: 20, file)], born: 0..<0),
                       CommitLoad(objects: 2, itemBytes: growth * 3 * (overhead + 1), scatteredLeaves: 2))
        XCTAssertEqual(CommitLoad.of([.link(directory: 1, created), .attributes(inode: 10, file),
                                      .setXattr(inode: 10, name: Array("user.b".utf8), value: [1, 2])], born: 10..<11),
                       CommitLoad(objects: 3, itemBytes: growth * (overhead + 6 + 2)))
    }

    /// The leaves scattered keys may land in are capped per generation at what the tree
    /// can have (the committed tree's, by its root's level, and those the waiting items
    /// add), and the generations' capped counts added: each commit writes its leaves anew.
    func testScatteredLeavesAreCappedPerGenerationAtWhatTheTreeHas() throws {
        XCTAssertEqual(CommitLoad.leaves(belowLevel: 0), 1)
        XCTAssertEqual(CommitLoad.leaves(belowLevel: 1), TreeNode.maximumChildren)
        XCTAssertEqual(CommitLoad.leaves(belowLevel: 2), TreeNode.maximumChildren * TreeNode.maximumChildren)
        XCTAssertGreaterThan(CommitLoad.leaves(belowLevel: TreeNode.maximumLevel), 10_000_000_000_000)
        let delta = MetadataDelta(committedGeneration: 1)
        delta.noteCommittedTree(level: 0)
        // Two generations of 500 empty xattrs each on an existing inode: one closed, one
        // open.
        var itemBytes = 0
        for round in 0..<2 {
            let ticket = delta.join()
            for k in 0..<500 {
                let name = Array("user.\(round)-\(k)".utf8)
                try delta.record([.setXattr(inode: 5, name: name, value: [])], in: ticket)
                itemBytes += CommitLoad.growth * (CommitLoad.itemOverhead + name.count)
            }
            delta.leave(ticket)
            if round == 0 { _ = delta.close() }
        }
        let load = delta.commitLoad(after: 1)
        XCTAssertEqual(load.itemBytes, itemBytes)
        // Each generation: at most the root leaf and the leaves every waiting item fills
        // (with one more for the rounding).
        let perGeneration = 1 + itemBytes / CommitLoad.leafBytes + 1
        XCTAssertLessThan(perGeneration, 500)
        XCTAssertEqual(load.scatteredLeaves, 2 * perGeneration, "capped per generation, then added")
        XCTAssertEqual(load.objects, 2)
        // A deeper committed tree lifts the cap: every key's leaf counts.
        delta.noteCommittedTree(level: 2)
        XCTAssertEqual(delta.commitLoad(after: 1).scatteredLeaves, 1_000)
        // An empty tree has no leaf to land in but those the items make.
        delta.noteCommittedTree(level: nil)
        XCTAssertEqual(delta.commitLoad(after: 1).scatteredLeaves, 2 * perGeneration)
    }

    /// The volume notes its committed tree's level at opening and at each commit: a
    /// fresh volume's tree is a leaf, and committing many items makes it deeper.
    func testTheVolumeNotesItsCommittedTreesLevel() throws {
        let volume = try TreeVolumeJournalRoomTests.volume(capacity: 64 << 20)
        try volume.commit()
        XCTAssertEqual(volume.current.filesystemTree?.level, 0)
        func capOfOneGenerationOfKeys() throws -> Int {
            for k in 0..<300 {
                try volume.perform([.setXattr(inode: 1, name: Array("user.n\(k)-\(volume.committedGeneration)".utf8), value: [])])
            }
            return volume.delta.commitLoad(after: volume.space.settledGeneration).scatteredLeaves
        }
        let small = try capOfOneGenerationOfKeys()
        XCTAssertLessThan(small, 300, "a root leaf caps the leaves")
        for _ in 0..<5 {
            try volume.commit()
            for k in 0..<2_000 {
                try volume.perform([.setXattr(inode: 1, name: Array("user.m\(k)-\(volume.committedGeneration)".utf8),
                                              value: [UInt8](repeating: 1, count: 200))])
            }
        }
        try volume.commit()
        XCTAssertGreaterThan(volume.current.filesystemTree?.level ?? 0, 0)
        XCTAssertEqual(try capOfOneGenerationOfKeys(), 300, "a deeper tree caps no longer")
    }

    /// Xattrs of 1,000 bytes, each under a name of its own, set on one existing inode of a
    /// nearly full image (2 MiB free), with the volume committing when its
    /// budget says: refused with ENOSPC in the end, never failing the volume, and every one
    /// answered is there after a reopen. On the code before, a commit found no room and
    /// failed the volume.
    func testXattrsOfOneInodeOnAFullImageNeverFailTheVolume() throws {
        let (volume, disk) = try nearlyFullVolume()
        let answered = try changesUntilRefused(volume) { k in
            [.setXattr(inode: 2, name: Array("user.x\(k)".utf8), value: [UInt8](repeating: UInt8(truncatingIfNeeded: k), count: 1_000))]
        }
        try volume.close()
        let reader = try TreeVolume.open(disk).reader()
        for k in [0, answered / 2, answered - 1] {
            XCTAssertEqual(try reader.xattr(2, name: Array("user.x\(k)".utf8)),
                           [UInt8](repeating: UInt8(truncatingIfNeeded: k), count: 1_000), "xattr \(k)")
        }
        XCTAssertNil(try reader.xattr(2, name: Array("user.x\(answered)".utf8)), "the refused one")
        print("xattrs of one inode on a full image: \(answered) answered")
    }

    /// Hard links to one existing file in one existing directory, under names of 100
    /// bytes, on the same image: refused in the end, never failing the volume, every one
    /// answered there after a reopen.
    func testLinksToOneFileOnAFullImageNeverFailTheVolume() throws {
        let (volume, disk) = try nearlyFullVolume()
        var directory = TreeVolumeReserveTests.root
        var target = file
        let answered = try changesUntilRefused(volume) { k in
            directory.nextIndex = UInt64(k + 5)
            target.linkCount = UInt32(k + 2)
            return [.link(directory: 1, NamedEntry(name: Self.linkName(k), child: 2, type: 8, index: UInt64(k + 4))),
                    .attributes(inode: 1, directory), .attributes(inode: 2, target)]
        }
        try volume.close()
        let reader = try TreeVolume.open(disk).reader()
        for k in [0, answered / 2, answered - 1] {
            XCTAssertEqual(try reader.lookup(directory: 1, name: Self.linkName(k))?.child, 2, "link \(k)")
        }
        XCTAssertNil(try reader.lookup(directory: 1, name: Self.linkName(answered)), "the refused one")
        print("links to one file on a full image: \(answered) answered")
    }

    private static func linkName(_ k: Int) -> [UInt8] {
        Array(("l\(k)-" + String(repeating: "n", count: 100)).utf8.prefix(100))
    }

    /// A 64 MiB image with a root (inode 1) and a file (inode 2, named "f") committed, and
    /// file data in every block but about `free` bytes.
    private func nearlyFullVolume(free: Int = 2 << 20) throws -> (TreeVolume, MemoryImageStorage) {
        let disk = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(disk, capacityBytes: 64 << 20, imageID: 9, nameHashKey: SipHash24(key0: 1, key1: 2))
        var root = TreeVolumeReserveTests.root
        root.nextIndex = 4
        try volume.perform([.attributes(inode: 1, root), .attributes(inode: 2, file),
                            .link(directory: 1, NamedEntry(name: Array("f".utf8), child: 2, type: 8, index: 3))])
        try volume.commit()
        let files = try volume.fileBlocks()
        var chunks: [Range<UInt64>] = []
        while let chunk = try? files.allocate(byteCount: 256 << 10) { chunks.append(chunk) }
        files.release(Array(chunks.suffix(free / (256 << 10))), unsharing: [])
        for _ in 0..<10 where files.availableBytes < UInt64(free) / 2 { try volume.commit() }
        XCTAssertGreaterThan(files.availableBytes, UInt64(free) / 2, "the chunks given back are free")
        return (volume, disk)
    }

    /// Performs `changes(k)` for k = 0, 1, ... (the volume committing by itself at its
    /// budget) until one is refused with ENOSPC; asserts the volume did not fail and a
    /// commit after the refusal works. Returns how many were answered.
    private func changesUntilRefused(_ volume: TreeVolume, _ changes: (Int) -> [JournalChange]) throws -> Int {
        var answered = 0
        while answered < 200_000 {
            do {
                try volume.perform(changes(answered))
                answered += 1
            } catch {
                guard case .noSpace = error else { throw error }
                break
            }
        }
        XCTAssertNil(volume.failure, "the volume failed after \(answered) changes")
        XCTAssertGreaterThan(answered, 100)
        XCTAssertLessThan(answered, 200_000, "never refused")
        XCTAssertNoThrow(try volume.commit(), "the commit after the refusal")
        XCTAssertNil(volume.failure)
        return answered
    }
}
