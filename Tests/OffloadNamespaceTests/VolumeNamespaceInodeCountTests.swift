import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import XCTest

/// Format 2's inode numbers and inode count across mounts: the commit slot keeps the next
/// inode number past every number ever used and the count of inodes in the tree, so a new
/// mount never hands out a number an inode has (it would take over that inode's items),
/// and statfs counts what the image holds, after a clean unmount and after a crash (a
/// mount that replays the journal) alike.
final class VolumeNamespaceInodeCountTests: XCTestCase {
    func testANewMountNumbersNewInodesPastEveryOldOneAndCountsThem() throws {
        let storage = MemoryImageStorage(maximumBytes: 16 << 20)
        var volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 5, nameHashKey: SipHash24(key0: 3, key1: 4))
        var namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        var numbers: Set<UInt64> = [1]
        var live = 1
        for round in 0..<4 {
            var first: InodeNumber?
            for index in 0..<5 {
                let made = try namespace.mkdir(parent: .root, name: FileName("d\(round)-\(index)"), mode: 0o755, context: .root)
                XCTAssertTrue(numbers.insert(made.inode.rawValue).inserted, "round \(round): inode \(made.inode) again")
                live += 1
                if index == 0 { first = made.inode }
            }
            try namespace.rmdir(parent: .root, name: FileName("d\(round)-0"))
            XCTAssertEqual(namespace.statfs().totalInodes - namespace.statfs().freeInodes, UInt64(live),
                           "round \(round): the kernel's reference keeps it, an orphan")
            namespace.forget(inode: first!, lookups: 1)
            live -= 1
            XCTAssertEqual(namespace.statfs().totalInodes - namespace.statfs().freeInodes, UInt64(live), "round \(round)")
            // Even rounds commit (a clean mount's state), odd ones do not (a crash: the
            // next mount replays the journal).
            if round % 2 == 0 { try volume.commit() }
            volume = try TreeVolume.open(storage)
            namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
            XCTAssertEqual(volume.current.inodeCount, UInt64(live), "round \(round): the slot's count")
            XCTAssertGreaterThan(volume.current.nextInode, numbers.max()!, "round \(round): the slot's next number")
            XCTAssertEqual(namespace.statfs().totalInodes - namespace.statfs().freeInodes, UInt64(live))
            // Every directory made is still there, under its own number.
            let listing = try namespace.readdir(inode: .root, handle: try namespace.opendir(inode: .root), offset: 0, limit: 1000)
            XCTAssertEqual(listing.count - 2, live - 1, "round \(round)")
        }
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
        XCTAssertEqual(report.inodes, live)
    }
}
