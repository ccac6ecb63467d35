import Foundation
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import XCTest

/// Files made and removed between two commits (a build's temporary files, bench-mount's
/// create and remove phases): they leave the open generation altogether, so they neither
/// bring the next commit forward (the dirty cap counts objects) nor give it work, and the
/// image after the commit is as if they never were.
final class VolumeShortLivedInodesTests: XCTestCase {
    func testFilesMadeAndRemovedInOneGenerationLeaveIt() throws {
        let storage = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 64 << 20, imageID: 7, nameHashKey: SipHash24(key0: 5, key1: 6))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let kept = try namespace.mkdir(parent: .root, name: FileName("kept"), mode: 0o755, context: .root)
        try volume.commit()
        let before = volume.delta.openLoad.objects

        // In a new directory: files written, closed, removed and forgotten, then the
        // directory itself. Half the files are removed while the kernel still references
        // them (an orphan item until their FORGET), half after it let go.
        let scratch = try namespace.mkdir(parent: .root, name: FileName("scratch"), mode: 0o755, context: .root)
        let bytes = [UInt8](repeating: 0x5a, count: 3000)
        for index in 0..<500 {
            let name = try FileName("f\(index)")
            let (file, handle) = try namespace.create(parent: scratch.inode, name: name, mode: 0o100644, flags: O_RDWR,
                                                      context: .root)
            _ = try bytes.withUnsafeBytes { try namespace.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
            namespace.release(inode: file.inode, handle: handle)
            if index % 2 == 0 {
                try namespace.unlink(parent: scratch.inode, name: name)
                namespace.forget(inode: file.inode, lookups: 1)
            } else {
                namespace.forget(inode: file.inode, lookups: 1)
                try namespace.unlink(parent: scratch.inode, name: name)
            }
        }
        // And in a directory older than the generation.
        for index in 0..<100 {
            let made = try namespace.mkdir(parent: kept.inode, name: FileName("d\(index)"), mode: 0o755, context: .root)
            try namespace.rmdir(parent: kept.inode, name: FileName("d\(index)"))
            namespace.forget(inode: made.inode, lookups: 1)
        }
        try namespace.rmdir(parent: .root, name: FileName("scratch"))
        namespace.forget(inode: scratch.inode, lookups: 1)
        // The last FORGETs' drops go with the next frame of an operation holding the lock
        // alone (a mkdir shares the lock, and carries no drops).
        _ = try namespace.mkdir(parent: .root, name: FileName("last"), mode: 0o755, context: .root)
        try namespace.writeFrameHoldingTheLockAlone()

        // What is left: the root (its names and times), "kept" (its removed names and
        // times) and "last".
        XCTAssertLessThanOrEqual(volume.delta.openLoad.objects - before, 3,
                                 "600 inodes made and dropped in the generation still count against the dirty cap")
        let generation = volume.delta.layers()[0]
        XCTAssertEqual(generation.allOrphanChanges().count, 0)
        XCTAssertLessThanOrEqual(generation.allChanges().count, 3)

        // Read before the commit, through the generation: nothing of them is left.
        try assertOnly(["kept", "last"], in: namespace)
        XCTAssertThrowsError(try namespace.lookup(parent: kept.inode, name: FileName("d7"))) { XCTAssertEqual($0 as? FSError, .notFound) }
        XCTAssertThrowsError(try namespace.lookup(parent: .root, name: FileName("scratch"))) { XCTAssertEqual($0 as? FSError, .notFound) }
        XCTAssertEqual(try namespace.getattr(inode: kept.inode).linkCount, 2)

        try volume.commit()
        XCTAssertEqual(namespace.statfs().totalInodes - namespace.statfs().freeInodes, 3, "root, kept and last")
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
        XCTAssertEqual(report.inodes, 3)
        try assertOnly(["kept", "last"], in: namespace)
    }

    /// A crash after files were made and dropped in the open generation: the journal's
    /// frames replay them as made and dropped (replay keeps them as dropped entries), and
    /// the image opens as the namespace answered.
    func testACrashAfterShortLivedFilesReplaysToTheSameTree() throws {
        let storage = MemoryImageStorage(maximumBytes: 64 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 64 << 20, imageID: 8, nameHashKey: SipHash24(key0: 7, key1: 8))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let bytes = [UInt8](repeating: 0x33, count: 5000)
        for index in 0..<50 {
            let name = try FileName("t\(index)")
            let (file, handle) = try namespace.create(parent: .root, name: name, mode: 0o100644, flags: O_RDWR, context: .root)
            _ = try bytes.withUnsafeBytes { try namespace.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
            namespace.release(inode: file.inode, handle: handle)
            if index % 5 != 0 {
                try namespace.unlink(parent: .root, name: name)
                namespace.forget(inode: file.inode, lookups: 1)
            }
        }
        _ = try namespace.mkdir(parent: .root, name: FileName("end"), mode: 0o755, context: .root)
        try volume.sync()
        let kept = ["end"] + stride(from: 0, to: 50, by: 5).map { "t\($0)" }
        try assertOnly(kept, in: namespace)

        // No commit, no unmount: the next open replays the journal.
        let reopened = try TreeVolume.open(storage)
        let again = try VolumeNamespace(volume: reopened, memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        try assertOnly(kept, in: again)
        for name in kept where name != "end" {
            let file = try again.lookup(parent: .root, name: FileName(name))
            XCTAssertEqual(file.size, 5000)
        }
        XCTAssertEqual(again.statfs().totalInodes - again.statfs().freeInodes, UInt64(kept.count + 1))
        try reopened.commit()
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
        XCTAssertEqual(report.inodes, kept.count + 1)
    }

    private func assertOnly(_ names: [String], in namespace: VolumeNamespace, file: StaticString = #filePath, line: UInt = #line) throws {
        let listing = try namespace.readdir(inode: .root, handle: try namespace.opendir(inode: .root), offset: 0, limit: 100)
        XCTAssertEqual(listing.map { String(decoding: $0.name, as: UTF8.self) }.sorted(), ([".", ".."] + names).sorted(),
                       file: file, line: line)
    }
}
