import Foundation
import Dispatch
import XCTest
@testable import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Format 2's last FORGET of an inode with no name writes no frame of its own: the drop
/// goes into the next frame an operation holding the namespace lock alone writes
/// (`VolumeNamespace.dropForgotten`; the changes that share the lock carry no drops,
/// `changingNames`, `changingInodes`), or a frame of drops once `forgottenBatch`
/// FORGETs wait, at the maintenance's tick, at a statfs and at the unmount; that frame
/// shares the lock, holding the forgotten inodes' locks (`dropForgottenNow`). An orphan a
/// crash keeps meanwhile is dropped at the next mount, as any orphan.
final class VolumeNamespaceForgottenTests: XCTestCase {
    private struct Fixture {
        let storage = MemoryImageStorage(maximumBytes: 32 << 20)
        let volume: TreeVolume
        let namespace: VolumeNamespace

        init() throws {
            volume = try TreeVolume.format(storage, capacityBytes: 32 << 20, imageID: 5,
                                           nameHashKey: SipHash24(key0: 3, key1: 4))
            namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        }

        /// `count` files, each unlinked while the kernel holds the reference its mknod
        /// gave: orphans, to be dropped at their FORGET.
        func orphans(_ count: Int, prefix: String) throws -> [InodeNumber] {
            var made: [InodeNumber] = []
            for i in 0..<count {
                let name = try FileName("\(prefix)\(i)")
                let inode = try namespace.mknod(parent: .root, name: name, mode: 0o100644, rdev: 0, context: .root).inode
                _ = try namespace.setattr(inode: inode, changes: AttributeChanges(size: 3000), context: .root)
                try namespace.unlink(parent: .root, name: name)
                made.append(inode)
            }
            return made
        }

        /// A frame of an operation that holds the namespace lock alone.
        func frameHoldingTheLockAlone() throws {
            try namespace.writeFrameHoldingTheLockAlone()
        }

        /// Commits, and fails the test unless fsck finds the image clean.
        func commitAndCheck(file: StaticString = #filePath, line: UInt = #line) throws {
            try volume.commit()
            let report = try VolumeCheck.run(storage)
            XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))", file: file, line: line)
        }

        var orphanItems: Set<UInt64> {
            get throws { Set(try volume.reader().orphans().map(\.inode)) }
        }
    }

    /// A frame of drops shares the namespace lock and holds the forgotten inodes' locks
    /// (`dropForgottenNow`): with the lock held shared by the test (a change in
    /// progress), the drops of two forgotten orphans are written; with the third one's
    /// lock held too, its drop waits until the test lets go. Before, the frame held the
    /// namespace lock alone and waited for the change.
    func testAFrameOfDropsSharesTheLockAndWaitsForAForgottenInodesLock() throws {
        let f = try Fixture()
        let orphans = try f.orphans(3, prefix: "o")
        let namespace = f.namespace
        let first = DispatchGroup(), second = DispatchGroup()
        try namespace.lock.withReadLock {
            onThreadOfItsOwn(first) {
                for inode in orphans.prefix(2) { namespace.forget(inode: inode, lookups: 1) }
                namespace.dropForgottenNow()
            }
            XCTAssertEqual(first.wait(timeout: .now() + 20), .success, "a frame of drops waited for a change sharing the lock")
            XCTAssertEqual(try f.orphanItems, [orphans[2].rawValue])
            let held = namespace.inodeLocks.lock(orphans[2].rawValue)
            onThreadOfItsOwn(second) {
                namespace.forget(inode: orphans[2], lookups: 1)
                namespace.dropForgottenNow()
            }
            // Once the frame has taken the forgotten list, it waits for the stripe.
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline, namespace.kernelReferences.withSnapshot({ $0.counts[orphans[2].rawValue] != nil || !$0.forgotten.isEmpty }) {
                usleep(1000)
            }
            XCTAssertEqual(second.wait(timeout: .now() + 0.3), .timedOut, "a drop ran while its inode's lock was held")
            XCTAssertEqual(try f.orphanItems, [orphans[2].rawValue])
            namespace.inodeLocks.unlock(held)
            XCTAssertEqual(second.wait(timeout: .now() + 20), .success)
        }
        XCTAssertEqual(try f.orphanItems, [])
        for inode in orphans { XCTAssertThrowsError(try namespace.getattr(inode: inode)) }
        XCTAssertTrue(namespace.kernelReferences.withSnapshot { $0.unlinked.isEmpty && $0.forgotten.isEmpty })
        try f.commitAndCheck()
    }

    func testTheNextOperationsFrameDropsTheForgottenAndAFailedOneKeepsThemWaiting() throws {
        let f = try Fixture()
        let orphans = try f.orphans(3, prefix: "o")
        let journaled = f.volume.journalBytesSinceCommit
        for inode in orphans { f.namespace.forget(inode: inode, lookups: 1) }
        XCTAssertEqual(f.volume.journalBytesSinceCommit, journaled, "FORGETs wrote frames of their own")
        XCTAssertEqual(try f.orphanItems, Set(orphans.map(\.rawValue)), "dropped before a frame was written")

        XCTAssertThrowsError(try f.namespace.unlink(parent: .root, name: FileName("missing")))
        XCTAssertEqual(f.volume.journalBytesSinceCommit, journaled, "a failed operation wrote a frame")
        XCTAssertEqual(try f.orphanItems.count, 3, "a failed operation lost the waiting drops")

        _ = try f.namespace.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root)
        XCTAssertEqual(try f.orphanItems.count, 3, "a change of names sharing the lock dropped forgotten inodes")
        try f.frameHoldingTheLockAlone()
        XCTAssertEqual(try f.orphanItems, [])
        for inode in orphans { XCTAssertThrowsError(try f.namespace.getattr(inode: inode)) }
        XCTAssertTrue(f.namespace.kernelReferences.withSnapshot { $0.unlinked.isEmpty && $0.forgotten.isEmpty })
        XCTAssertEqual(f.namespace.statfs().totalInodes - f.namespace.statfs().freeInodes, 2, "the root and d")
        try f.commitAndCheck()
    }

    /// An operation that changes nothing (an open without O_TRUNC, a lookup-only create
    /// of an existing name) writes no frame for the drops waiting: it could then fail
    /// after making its handle or reference.
    func testAnOperationThatChangesNothingWritesNoFrameOfDrops() throws {
        let f = try Fixture()
        let kept = try f.namespace.mknod(parent: .root, name: FileName("kept"), mode: 0o100644, rdev: 0, context: .root).inode
        let orphan = try f.orphans(1, prefix: "o")[0]
        f.namespace.forget(inode: orphan, lookups: 1)
        let journaled = f.volume.journalBytesSinceCommit
        let handle = try f.namespace.open(inode: kept, flags: O_RDONLY)
        XCTAssertEqual(f.volume.journalBytesSinceCommit, journaled, "an open without O_TRUNC wrote a frame")
        XCTAssertEqual(f.namespace.kernelReferences.withSnapshot { $0.forgotten }, [orphan.rawValue])
        f.namespace.release(inode: kept, handle: handle)
        try f.frameHoldingTheLockAlone()
        XCTAssertEqual(try f.orphanItems, [])
    }

    /// A FORGET that comes while an operation changes the same inode (the bridge forgets
    /// from another thread when a reply fails, so during an unlink of that inode): the
    /// operation's reader does not see its own frame, where the inode still has its
    /// name, so the drop waits for the next frame, which sees the unlink.
    func testAnInodeTheFramesOperationChangesWaitsForTheNextFrame() throws {
        let f = try Fixture()
        let file = try f.namespace.mknod(parent: .root, name: FileName("f"), mode: 0o100644, rdev: 0, context: .root).inode
        try f.namespace.changing { (reader, operation) throws(FSError) in
            // The unlink's body, with the kernel's FORGET in the middle of it.
            guard var parent = try reader.inode(1), var item = try reader.inode(file.rawValue),
                  let entry = try reader.lookup(directory: 1, name: Array("f".utf8)) else { throw .notFound }
            parent.changeTime = item.changeTime
            item.linkCount = 0
            operation.changes = [.unlink(directory: 1, entry), .attributes(inode: 1, parent)]
            f.namespace.state(file.rawValue, item, hadOrphan: false, into: &operation)
            f.namespace.forget(inode: file, lookups: 1)
        }
        XCTAssertEqual(try f.orphanItems, [file.rawValue], "the unlink's frame left an orphan")
        XCTAssertEqual(f.namespace.kernelReferences.withSnapshot { $0.forgotten }, [file.rawValue], "the drop was decided on a stale reader")
        try f.frameHoldingTheLockAlone()
        XCTAssertEqual(try f.orphanItems, [], "the next frame left the orphan")
        XCTAssertThrowsError(try f.namespace.getattr(inode: file))
        XCTAssertTrue(f.namespace.kernelReferences.withSnapshot { $0.unlinked.isEmpty && $0.forgotten.isEmpty })
        try f.commitAndCheck()
    }

    /// A frame that carried drops and failed gives them back to wait for the next one.
    func testDropsOfAFrameThatFailedWaitAgain() throws {
        let f = try Fixture()
        let orphan = try f.orphans(1, prefix: "o")[0]
        f.namespace.forget(inode: orphan, lookups: 1)
        f.volume.failure = .io("a journal write failed")
        XCTAssertThrowsError(try f.frameHoldingTheLockAlone())
        XCTAssertEqual(f.namespace.kernelReferences.withSnapshot { $0.forgotten }, [orphan.rawValue],
                       "the failed frame's drops were lost")
        f.volume.failure = nil
        try f.frameHoldingTheLockAlone()
        XCTAssertEqual(try f.orphanItems, [])
        XCTAssertThrowsError(try f.namespace.getattr(inode: orphan))
    }

    func testABatchOfForgetsWritesOneFrameOfDrops() throws {
        let f = try Fixture()
        let batch = VolumeNamespace.forgottenBatch
        let orphans = try f.orphans(batch, prefix: "b")
        let journaled = f.volume.journalBytesSinceCommit
        for inode in orphans.dropLast() { f.namespace.forget(inode: inode, lookups: 1) }
        XCTAssertEqual(f.volume.journalBytesSinceCommit, journaled, "fewer FORGETs than a batch wrote a frame")
        f.namespace.forget(inode: orphans.last!, lookups: 1)
        XCTAssertGreaterThan(f.volume.journalBytesSinceCommit, journaled, "a batch of FORGETs waits for another operation")
        XCTAssertEqual(try f.orphanItems, [])
        XCTAssertEqual(f.namespace.kernelReferences.withSnapshot { $0.forgotten.count }, 0)
        try f.commitAndCheck()
    }

    /// An open file's last FORGET does not drop it (its last close does), and the inode
    /// the next frame drops already (that close, in the same frame) is not dropped twice.
    func testAnOpenFileForgottenIsDroppedByItsLastCloseOnce() throws {
        let f = try Fixture()
        let (file, handle) = try f.namespace.create(parent: .root, name: FileName("open"), mode: 0o644, flags: O_RDWR,
                                                    context: .root)
        try f.namespace.unlink(parent: .root, name: FileName("open"))
        f.namespace.forget(inode: file.inode, lookups: 1)
        try f.frameHoldingTheLockAlone()
        XCTAssertEqual(try f.namespace.getattr(inode: file.inode).linkCount, 0, "an open file was dropped")
        f.namespace.release(inode: file.inode, handle: handle)
        XCTAssertThrowsError(try f.namespace.getattr(inode: file.inode), "its last close drops it")

        let (other, otherHandle) = try f.namespace.create(parent: .root, name: FileName("other"), mode: 0o644,
                                                          flags: O_RDWR, context: .root)
        try f.namespace.unlink(parent: .root, name: FileName("other"))
        f.namespace.forget(inode: other.inode, lookups: 1)  // waits; the close's frame drops it
        f.namespace.release(inode: other.inode, handle: otherHandle)
        XCTAssertThrowsError(try f.namespace.getattr(inode: other.inode))
        XCTAssertEqual(try f.orphanItems, [])
        try f.commitAndCheck()
    }

    func testTheTickStatfsAndTheUnmountDropTheForgotten() throws {
        let f = try Fixture()
        let ticked = try f.orphans(1, prefix: "t")[0]
        f.namespace.forget(inode: ticked, lookups: 1)
        _ = try f.namespace.commitIfChanged()
        XCTAssertEqual(try f.orphanItems, [], "the maintenance's tick left a forgotten inode")

        let counted = try f.orphans(1, prefix: "s")[0]
        f.namespace.forget(inode: counted, lookups: 1)
        XCTAssertEqual(f.namespace.statfs().totalInodes - f.namespace.statfs().freeInodes, 1, "statfs counted a forgotten inode")
        XCTAssertEqual(try f.orphanItems, [])

        let closed = try f.orphans(1, prefix: "c")[0]
        f.namespace.forget(inode: closed, lookups: 1)
        try f.namespace.close()
        let reopened = try TreeVolume.open(f.storage)
        XCTAssertEqual(try reopened.reader().orphans().count, 0, "the unmount left a forgotten inode to the next mount")
        XCTAssertNil(try reopened.reader().inode(closed.rawValue))
    }

    /// A kill while drops wait: the orphans are in the image, and the next mount drops them.
    func testAKillWhileDropsWaitLeavesOrphansTheNextMountDrops() throws {
        let capacity = 32 << 20
        let disk = CrashSimulatingStorage(maximumBytes: capacity)
        let volume = try TreeVolume.format(disk, capacityBytes: UInt64(capacity), imageID: 5,
                                           nameHashKey: SipHash24(key0: 3, key1: 4))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        var orphans: [InodeNumber] = []
        for i in 0..<2 {
            orphans.append(try namespace.mknod(parent: .root, name: FileName("k\(i)"), mode: 0o100644, rdev: 0,
                                               context: .root).inode)
            try namespace.unlink(parent: .root, name: FileName("k\(i)"))
        }
        for inode in orphans { namespace.forget(inode: inode, lookups: 1) }
        var random = SplitMix64(seed: 11)
        let killed = CrashSimulatingStorage(maximumBytes: capacity, initial: disk.crashImage(using: &random, keep: 1, torn: 0))
        let reopened = try TreeVolume.open(killed)
        XCTAssertEqual(Set(try reopened.reader().orphans().map(\.inode)), Set(orphans.map(\.rawValue)))
        let next = try VolumeNamespace(volume: reopened, memoryLimiter: MemoryLimiter(limitBytes: 0))
        XCTAssertEqual(try reopened.reader().orphans().count, 0)
        for inode in orphans { XCTAssertThrowsError(try next.getattr(inode: inode)) }
        try reopened.commit()
        XCTAssertTrue(try VolumeCheck.run(killed).isClean)
    }
}
