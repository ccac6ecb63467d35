import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix
@testable import OffloadNamespace

/// Review of the maintenance's commit outside the namespace lock (2026-12-02): what a
/// crash or a power cut leaves when requests of the next generation ran while the commit
/// of the closed one was held at its sync.
final class VolumeCommitOffTheLockReviewTests: XCTestCase {
    static let capacity: UInt64 = 32 << 20
    let caller = RequestContext(uid: 0, gid: 0)

    /// Runs the maintenance's commit on another thread; `finished` is signalled when it
    /// returns.
    final class MaintenanceCommit: @unchecked Sendable {
        var result: Result<VolumeCommitReport?, Error>?
        let finished = DispatchSemaphore(value: 0)

        init(_ fs: VolumeNamespace) {
            DispatchQueue.global().async { [self] in
                result = Result { try fs.commitIfChanged() }
                finished.signal()
            }
        }
    }

    /// A format 2 file system with no RAM pieces, and a file "a" of 64 KiB, open for
    /// writing, whose blocks the last commit holds.
    func fileWithCommittedBlocks() throws
        -> (CrashSimulatingStorage, VolumeFileSystem, [UInt8], Attributes, FileHandle) {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: disk, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 0))
        let fs = fileSystem.namespace
        let original = [UInt8](repeating: 0x41, count: 64 << 10)
        let (a, handle) = try fs.create(parent: .root, name: FileName("a"), mode: 0o644, flags: O_RDWR, context: caller)
        XCTAssertEqual(try original.withUnsafeBytes { try fs.write(inode: a.inode, handle: handle, offset: 0, data: $0) }, original.count)
        XCTAssertNotNil(try fs.commitIfChanged())
        return (disk, fileSystem, original, a, handle)
    }

    /// The process is killed (kill -9: every page written survives) while the
    /// maintenance's commit of generation g is at its sync, after a request of generation
    /// g + 1 ran (a mkdir). The journal chain the last durable slot (g - 1) names holds the
    /// frames of g and links to the chain switched to at the close, which holds the
    /// mkdir's frame, of g + 1. The image must open with both generations' changes.
    func testAnImageKilledWhileTheMaintenanceCommitSyncsWithANextGenerationRequestOpens() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: disk, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let before = try fs.mkdir(parent: .root, name: FileName("before"), mode: 0o755, context: caller)

        let gate = ChangeGate(disk, timeoutSeconds: 30, holding: ChangeGate.sync)
        let commit = MaintenanceCommit(fs)
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "the commit never synced")
        let during = try fs.mkdir(parent: .root, name: FileName("during"), mode: 0o755, context: caller)
        var random = SplitMix64(seed: 7)
        let killed = disk.crashImage(using: &random, keep: 1, torn: 0)
        gate.open()
        XCTAssertEqual(commit.finished.wait(timeout: .now() + 30), .success)
        try fileSystem.close(meter: nil)

        // fsck, read-only, on the image as the kill left it.
        let check = try VolumeCheck.run(CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: killed))
        XCTAssertTrue(check.isClean, "fsck of the killed image: \(check.problems.prefix(3))")
        let reopened: VolumeFileSystem
        do {
            reopened = try VolumeFileSystem.open(storage: CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: killed),
                                                 capacity: .kept(default: 0), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        } catch {
            return XCTFail("the image killed during the maintenance's commit does not open: \(error)")
        }
        XCTAssertEqual(try reopened.namespace.lookup(parent: .root, name: FileName("before")).inode, before.inode)
        XCTAssertEqual(try reopened.namespace.lookup(parent: .root, name: FileName("during")).inode, during.inode)
        try reopened.close(meter: nil)
    }

    /// `a` and `b` share a's blocks (copy_file_range, committed); b, closed and out of the
    /// cache, is unlinked with no kernel reference left, so it is dropped in the
    /// operation, and no block call sees it. The maintenance's commit of that drop counts
    /// the shared blocks once in its block tree, and lets go of the space lock for its
    /// sync: a write into a during the sync must not overwrite the block in place, since
    /// until the slot is durable a power cut brings back b (its unlink was never synced)
    /// with that block. The power cut here keeps the durable image and the page the write
    /// went to; b must read as it was.
    func testABlockTheHeldCommitNoLongerCountsTwiceIsNotOverwrittenInPlaceBeforeItsSlotIsDurable() throws {
        let (disk, fileSystem, original, a, aHandle) = try fileWithCommittedBlocks()
        let fs = fileSystem.namespace
        let (b, bHandle) = try fs.create(parent: .root, name: FileName("b"), mode: 0o644, flags: O_RDWR, context: caller)
        XCTAssertEqual(try fs.copyFileRange(from: a.inode, sourceHandle: aHandle, sourceOffset: 0, to: b.inode,
                                            destinationHandle: bHandle, destinationOffset: 0, length: UInt64(original.count)),
                       UInt64(original.count))
        let extents = { (number: InodeNumber) in fs.lock.withReadLock { fs.cachedFiles[number.rawValue]?.data.extentList.map(\.extent) } }
        XCTAssertEqual(extents(b.inode), extents(a.inode), "the copy does not share a's blocks (the test's premise)")
        fs.release(inode: b.inode, handle: bHandle)
        XCTAssertNotNil(try fs.commitIfChanged())
        XCTAssertNotNil(try fs.commitIfChanged())
        XCTAssertNil(extents(b.inode), "b is still cached (the test's premise)")
        fs.forget(inode: b.inode, lookups: 1)
        XCTAssertNil(fs.kernelReferences.withSnapshot { $0.counts[b.inode.rawValue] }, "the kernel still references b (the test's premise)")
        try fs.unlink(parent: .root, name: FileName("b"))
        XCTAssertNil(extents(b.inode), "the unlink loaded b (the test's premise)")

        let gate = ChangeGate(disk, timeoutSeconds: 30, holding: ChangeGate.sync)
        let commit = MaintenanceCommit(fs)
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "the commit never synced")
        var random = SplitMix64(seed: 3)
        var cut = disk.crashImage(using: &random, keep: 0, torn: 0)   // what is durable now
        let aBefore = try XCTUnwrap(extents(a.inode))
        final class Write: @unchecked Sendable { var result: Result<Int, Error>? }
        let write = Write(), written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            write.result = Result {
                try [UInt8](repeating: 0x5A, count: 4096).withUnsafeBytes { try fs.write(inode: a.inode, handle: aHandle, offset: 0, data: $0) }
            }
            written.signal()
        }
        let writtenWhileHeld = written.wait(timeout: .now() + 5) == .success
        if writtenWhileHeld {
            // The page the write went to reached the disk before the power cut.
            guard case .mmapOffload(let offset, _)? = try XCTUnwrap(extents(a.inode)).first else {
                return XCTFail("a's first extent is not in the image")
            }
            try cut.withUnsafeMutableBytes { raw in
                _ = try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset) + 4096]), at: offset)
            }
            print("written while the commit was held: in place \(try XCTUnwrap(extents(a.inode)) == aBefore)")
        }
        gate.open()
        XCTAssertEqual(commit.finished.wait(timeout: .now() + 30), .success)
        if !writtenWhileHeld { XCTAssertEqual(written.wait(timeout: .now() + 30), .success) }
        XCTAssertEqual(try XCTUnwrap(write.result).get(), 4096)
        fs.release(inode: a.inode, handle: aHandle)
        try fileSystem.close(meter: nil)

        let afterCut = try VolumeFileSystem.open(storage: CrashSimulatingStorage(maximumBytes: Int(Self.capacity), initial: cut),
                                                 capacity: .kept(default: 0), memoryLimiter: MemoryLimiter(limitBytes: 0))
        let namespace = afterCut.namespace
        let found = try namespace.lookup(parent: .root, name: FileName("b"))
        let handle = try namespace.open(inode: found.inode, flags: O_RDONLY)
        let bytes = try namespace.read(inode: found.inode, handle: handle, offset: 0, count: original.count)
        XCTAssertTrue(bytes == original,
                      "b, back after the power cut, reads a's later write: \(bytes.prefix(4096).filter { $0 == 0x5A }.count) bytes of it")
        namespace.release(inode: found.inode, handle: handle)
        try afterCut.close(meter: nil)
    }

    /// While the commit is held at its sync, a block the file wrote in place before it
    /// (verified against the published tree: counted once, the file's) is still written
    /// in place; a block not verified yet is copied, as the settled tree is not asked
    /// until the slot is durable. Before, every write in that window copied its block.
    func testABlockVerifiedBeforeTheHeldCommitIsStillWrittenInPlaceDuringItsSync() throws {
        let (disk, fileSystem, original, a, handle) = try fileWithCommittedBlocks()
        let fs = fileSystem.namespace
        let extents = { @Sendable in fs.lock.withReadLock { fs.cachedFiles[a.inode.rawValue]?.data.extentList.map(\.extent) } }
        let write = { @Sendable (byte: UInt8, offset: UInt64) throws in
            _ = try [UInt8](repeating: byte, count: 4096).withUnsafeBytes {
                try fs.write(inode: a.inode, handle: handle, offset: offset, data: $0)
            }
        }
        let laidOut = extents()
        try write(0x42, 0)
        XCTAssertEqual(extents(), laidOut, "a block a alone holds was copied (the test's premise)")

        let gate = ChangeGate(disk, timeoutSeconds: 30, holding: ChangeGate.sync)
        let commit = MaintenanceCommit(fs)
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "the commit never synced")
        final class Writes: @unchecked Sendable { var result: Result<Void, Error>?; var verified, other: [Extent]? }
        let writes = Writes(), written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            writes.result = Result {
                try write(0x43, 0)
                writes.verified = extents()
                try write(0x44, 8192)
                writes.other = extents()
            }
            written.signal()
        }
        XCTAssertEqual(written.wait(timeout: .now() + 10), .success, "the writes waited for the held commit")
        gate.open()
        XCTAssertEqual(commit.finished.wait(timeout: .now() + 30), .success)
        XCTAssertNoThrow(try XCTUnwrap(writes.result).get())
        XCTAssertEqual(writes.verified, laidOut, "the verified block was copied during the sync")
        XCTAssertNotEqual(writes.other, laidOut, "a block not verified was written in place while the settled tree was unpublished")
        let expected = [UInt8](repeating: 0x43, count: 4096) + original[4096..<8192] + [UInt8](repeating: 0x44, count: 4096)
            + original[12288...]
        XCTAssertTrue(try fs.read(inode: a.inode, handle: handle, offset: 0, count: original.count) == expected)
        fs.release(inode: a.inode, handle: handle)
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }
}
