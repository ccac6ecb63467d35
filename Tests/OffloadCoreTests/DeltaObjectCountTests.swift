import XCTest
@testable import OffloadCore

/// `DeltaGeneration.objectCount`, which the dirty cap (`TreeVolume.Limits.dirtyObjects`)
/// reads: an inode counts once whatever of it the generation changed; and `record`'s
/// refusal of a change to a dropped inode, which leaves the generation as it was; and an
/// inode made and dropped within one generation, which leaves it altogether.
final class DeltaObjectCountTests: XCTestCase {
    private func item(links: UInt32) -> InodeItem { NamespaceChangeScript.inode(type: 8, links: links) }

    func testAnInodeCountsOnceWithItsOrphanItem() throws {
        let generation = DeltaGeneration(number: 1)
        let entry = NamedEntry(name: Array("f".utf8), child: 10, type: 8, index: 3)
        // A create: the directory and the new inode.
        try generation.record([.link(directory: 1, entry), .attributes(inode: 10, item(links: 1))])
        XCTAssertEqual(generation.objectCount, 2)
        // An unlink while the kernel references the file: its orphan item changes too.
        try generation.record([.unlink(directory: 1, entry), .attributes(inode: 10, item(links: 0)),
                               .orphan(inode: 10, OrphanItem(state: .unlinkedWhileOpen))])
        XCTAssertEqual(generation.objectCount, 2, "the orphan item of an inode already counted")
        // Its last FORGET: the orphan item goes, then the inode.
        try generation.record([.orphan(inode: 10, nil), .drop(inode: 10)])
        XCTAssertEqual(generation.objectCount, 2)

        // An inode of an earlier generation: its orphan item first, then its drop, once.
        try generation.record([.orphan(inode: 20, nil), .drop(inode: 20)])
        XCTAssertEqual(generation.objectCount, 3)
        // And the other way round: its items first, then its orphan item.
        try generation.record([.attributes(inode: 30, item(links: 0))])
        try generation.record([.orphan(inode: 30, OrphanItem(state: .unlinkedWhileOpen))])
        XCTAssertEqual(generation.objectCount, 4)
        // An orphan item alone is an object of its own.
        try generation.record([.orphan(inode: 40, OrphanItem(state: .unlinkedWhileOpen))])
        XCTAssertEqual(generation.objectCount, 5)
    }

    func testAChangeToADroppedInodeIsRefusedWithTheRestOfItsOperation() throws {
        let generation = DeltaGeneration(number: 1)
        let entry = NamedEntry(name: Array("f".utf8), child: 10, type: 8, index: 3)
        try generation.record([.link(directory: 1, entry), .attributes(inode: 10, item(links: 1))])
        try generation.record([.unlink(directory: 1, entry), .attributes(inode: 1, item(links: 2)), .drop(inode: 10)])
        let before = generation.objectCount
        // A later operation that changes the dropped inode: refused whole, the directory's
        // change in it included.
        let other = NamedEntry(name: Array("g".utf8), child: 11, type: 8, index: 4)
        XCTAssertThrowsError(try generation.record([.link(directory: 1, other), .attributes(inode: 10, item(links: 1))]))
        XCTAssertEqual(generation.withChanges(of: 1) { $0.names[NameKey(other.name)] }, .some(nil))
        XCTAssertEqual(generation.objectCount, before)
        // One operation that drops an inode and then changes it: refused too.
        XCTAssertThrowsError(try generation.record([.attributes(inode: 12, item(links: 0)), .drop(inode: 12),
                                                    .attributes(inode: 12, item(links: 0))]))
        let twelve: Bool? = generation.withChanges(of: 12) { $0.cleared }
        XCTAssertNil(twelve, "nothing of the refused operation is recorded")
        XCTAssertEqual(generation.objectCount, before)
        // Read in place: the dropped inode keeps the removed name of its directory only.
        XCTAssertEqual(generation.withChanges(of: 10) { $0.cleared }, true)
        XCTAssertEqual(generation.withChanges(of: 1) { $0.names[NameKey(entry.name)] }, .some(.removed))
    }

    func testAnInodeMadeAndDroppedInOneGenerationLeavesIt() throws {
        let generation = DeltaGeneration(number: 1)
        let entry = NamedEntry(name: Array("f".utf8), child: 10, type: 8, index: 3)
        // A create that gave out number 10, an unlink while the kernel references the
        // file, and its last FORGET.
        try generation.record([.attributes(inode: 10, item(links: 1)), .link(directory: 1, entry),
                               .attributes(inode: 1, item(links: 2))], born: 10..<11)
        XCTAssertEqual(generation.objectCount, 2)
        try generation.record([.unlink(directory: 1, entry), .attributes(inode: 10, item(links: 0)),
                               .orphan(inode: 10, OrphanItem(state: .unlinkedWhileOpen))])
        try generation.record([.orphan(inode: 10, nil), .drop(inode: 10)])
        XCTAssertEqual(generation.objectCount, 1, "only the directory is left")
        XCTAssertNil(generation.changes(of: 10))
        XCTAssertNil(generation.orphanChange(of: 10))
        XCTAssertEqual(generation.withChanges(of: 1) { $0.names[NameKey(entry.name)] }, .some(.removed))

        // Made here but dropped with no orphan item in between: gone too.
        try generation.record([.attributes(inode: 11, item(links: 1))], born: 11..<12)
        try generation.record([.drop(inode: 11)])
        XCTAssertNil(generation.changes(of: 11))
        XCTAssertEqual(generation.objectCount, 1)

        // Its orphan change after its drop in one frame (an order no caller uses): gone too.
        try generation.record([.attributes(inode: 14, item(links: 0)), .orphan(inode: 14, OrphanItem(state: .unlinkedWhileOpen))],
                              born: 14..<15)
        try generation.record([.drop(inode: 14), .orphan(inode: 14, nil)])
        XCTAssertNil(generation.changes(of: 14))
        XCTAssertNil(generation.orphanChange(of: 14))
        XCTAssertEqual(generation.objectCount, 1)

        // Changed here but not made by that operation (its number was given out before):
        // its drop must hide what older layers hold, so it stays, cleared, and counts.
        try generation.record([.attributes(inode: 12, item(links: 1))], born: 13..<14)
        try generation.record([.drop(inode: 12)])
        XCTAssertEqual(generation.withChanges(of: 12) { $0.cleared }, true)
        XCTAssertEqual(generation.objectCount, 2)

        // Made in an earlier generation: this one must hide it.
        let later = DeltaGeneration(number: 2)
        try later.record([.orphan(inode: 10, nil), .drop(inode: 10)], born: 10..<11)
        XCTAssertEqual(later.withChanges(of: 10) { $0.cleared }, true, "a number in this frame's range is not made by a drop")
        XCTAssertEqual(later.objectCount, 1)

        // Replay passes no numbers: the same frames keep the inode as dropped.
        let replayed = DeltaGeneration(number: 3)
        try replayed.record([.attributes(inode: 20, item(links: 1))])
        try replayed.record([.drop(inode: 20)])
        XCTAssertEqual(replayed.withChanges(of: 20) { $0.cleared }, true)
        XCTAssertEqual(replayed.objectCount, 1)
    }
}
