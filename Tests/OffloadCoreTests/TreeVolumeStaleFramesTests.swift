import XCTest
@testable import OffloadCore
import OffloadSimulation
import SplitMix

/// Journal frames a crashed mount left in blocks its slot never named: a power cut between
/// a chain switch and the commit's first sync keeps the new chain's frames but not the link
/// to it, so the next mount's replay ends before them, and their blocks are free. A later
/// mount that puts its own chain there must not have its replay run on into them when its
/// frames end where one of them begins (docs/FORMAT.md, "The journal of format 2").
final class TreeVolumeStaleFramesTests: XCTestCase {
    static let capacity: UInt64 = 16 << 20
    static let name = Array("user.note".utf8)

    /// One journal frame: an extended attribute of inode 2 set to `value`.
    static func setNote(_ volume: TreeVolume, _ value: [UInt8]) throws {
        try volume.perform([.setXattr(inode: 2, name: name, value: value)])
    }

    /// The attribute after opening `image` (and committing what replay found).
    static func note(after image: [UInt8]) throws -> [UInt8]? {
        let volume = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(capacity), initial: image))
        try volume.commit()
        return try volume.filesystem.xattr(2, name: name)
    }

    func testAMountsReplayStopsAtItsOwnLastFrameBeforeFramesACrashedMountLeftThere() throws {
        // Mount A: a durable commit; then a chain switch (a link frame ends the old chain)
        // and four frames in the new chain, which a power cut keeps without the link.
        let diskA = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let a = try TreeVolume.format(diskA, capacityBytes: Self.capacity, imageID: 5,
                                      nameHashKey: SipHash24(key0: 1, key1: 2))
        try a.perform([.attributes(inode: 2, NamespaceChangeScript.inode(type: 8, links: 1))])
        try Self.setNote(a, Array("durable".utf8))
        try a.commit()
        try a.sync()
        try a.closeOpenGeneration()
        let staleJournal = try XCTUnwrap(a.journal)
        let staleChain = staleJournal.head, staleFirst = staleJournal.nextSequence
        XCTAssertEqual(staleJournal.appendedBytes, 0)
        for k in 1...4 { try Self.setNote(a, [UInt8](repeating: UInt8(k), count: 400)) }
        let staleFrameBytes = Int(staleJournal.appendedBytes) / 4
        var rng = SplitMix64(seed: 1)
        var image = diskA.crashImage(using: &rng, keep: 0, torn: 0)
        let pages = Int(staleChain.start)..<Int(staleChain.start + staleChain.length)
        if image.count < pages.upperBound { image += [UInt8](repeating: 0, count: pages.upperBound - image.count) }
        image.replaceSubrange(pages, with: diskA.readBytes(at: staleChain.start, count: pages.count))
        XCTAssertEqual(try Self.note(after: image), Array("durable".utf8),
                       "the link to A's last chain was lost: its frames are not A's journal")

        // Mount B puts its chain where A's last one was and writes two frames that end
        // where A's second frame begins. Numbered on from where replay ended (A's link frame
        // took that number), the frame found there had the number B's next would have.
        let diskB = CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: image)
        let b = try TreeVolume.open(diskB)
        let journal = try XCTUnwrap(b.journal)
        XCTAssertEqual(journal.head.start, staleChain.start,
                       "B's chain is not where A's was: this test no longer sets up what it checks")
        XCTAssertEqual(journal.appendedBytes, 0)
        XCTAssertGreaterThan(journal.nextSequence, staleFirst + 4, "B numbers its frames among A's")
        let emptyFrameBytes = staleFrameBytes - 400
        let last = [UInt8](repeating: 0xBB, count: staleFrameBytes - 2 * emptyFrameBytes)
        try Self.setNote(b, [])
        try Self.setNote(b, last)
        XCTAssertEqual(Int(journal.appendedBytes), staleFrameBytes)
        let killed = diskB.crashImage(using: &rng, keep: 1, torn: 0)

        // Replay after B's kill ends at B's last frame, not in A's.
        let found = try Self.note(after: killed)
        XCTAssertTrue(found == last, "replay ran on into frames the crashed mount A left: the attribute reads \(found?.count ?? 0) bytes of \(found?.first ?? 0)")
    }
}
