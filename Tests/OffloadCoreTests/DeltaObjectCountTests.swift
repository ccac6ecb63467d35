import XCTest
@testable import OffloadCore

/// `DeltaGeneration.objectCount`, which the dirty cap (`TreeVolume.Limits.dirtyObjects`)
/// reads: an inode counts once whatever of it the generation changed; and `record`'s
/// refusal of a change to a dropped inode, which leaves the generation as it was.
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
}
