import Foundation
import Glibc
import XCTest
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// An operation reserves its journal room before it changes anything: when even the
/// metadata reserve is used up, it fails with ENOSPC instead of being answered and then
/// lost by a crash (its frame unwritten).
final class JournalReservationTests: XCTestCase {
    func testOperationsFailWithENOSPCRatherThanGoUnjournaled() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-reserve-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let image = directory.appendingPathComponent("image.bin").path
        let context = RequestContext(uid: 0, gid: 0)
        var succeeded = 0
        do {
            let fileSystem = try ImageFileSystem.open(path: image, capacityBytes: 8 << 20,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 0))
            let fs = fileSystem.namespace
            let (file, handle) = try fs.create(parent: .root, name: FileName(Array("fill".utf8)), mode: 0o100644,
                                               flags: O_RDWR, context: context)
            // Files take everything but the metadata reserve.
            var offset: UInt64 = 0
            let chunk = [UInt8](repeating: 1, count: 256 << 10)
            while (try? chunk.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: offset, data: $0) }) != nil {
                offset += UInt64(chunk.count)
            }
            fs.release(inode: file.inode, handle: handle)
            // Each setxattr journals the inode with all its attributes: the journal grows
            // fast, with no checkpoint to shrink it, until the reserve is gone.
            let value = [UInt8](repeating: 7, count: 60 << 10)
            var refused: FSError?
            for i in 0..<200 {
                do {
                    try fs.setxattr(inode: file.inode, name: Array("user.k\(i)".utf8), value: value, mode: .createOrReplace)
                    succeeded += 1
                } catch {
                    refused = error
                    break
                }
            }
            XCTAssertEqual(refused, .noSpace, "the journal ran out of room after \(succeeded) attributes")
            XCTAssertFalse(fileSystem.journal?.hasFailed ?? true, "no answered operation went unjournaled")
            XCTAssertNoThrow(try fs.fsync(inode: file.inode, handle: nil, dataOnly: false), "the journal is whole")
            // Dropped without close: what kill -9 leaves.
        }
        // Recovery writes a checkpoint, which needs room the full image no longer has:
        // it is mounted again with a larger capacity (`--size`), as mount advises.
        XCTAssertThrowsError(try ImageFileSystem.open(path: image, capacityBytes: 8 << 20,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 0)))
        let reopened = try ImageFileSystem.open(path: image, capacityBytes: 16 << 20, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let file = try reopened.namespace.lookup(parent: .root, name: FileName(Array("fill".utf8)))
        XCTAssertEqual(try reopened.namespace.listxattr(inode: file.inode).count, succeeded,
                       "every attribute that was answered is there")
    }
}

/// Findings of a review of the durability work, each pinned by the sequence that showed it.
final class ReviewRegressionTests: XCTestCase {
    private let context = RequestContext(uid: 0, gid: 0)

    private func open(_ storage: any ImageStorage, capacity: UInt64 = 32 << 20, memory: Int = 0) throws -> ImageFileSystem {
        try ImageFileSystem.open(storage: storage, capacityBytes: capacity, memoryLimiter: MemoryLimiter(limitBytes: memory))
    }

    private func make(_ fs: Namespace, _ name: String, _ bytes: [UInt8]) throws -> (InodeNumber, FileHandle) {
        let (a, h) = try fs.create(parent: .root, name: FileName(Array(name.utf8)), mode: 0o100644, flags: O_RDWR,
                                   context: context)
        _ = try bytes.withUnsafeBytes { try fs.write(inode: a.inode, handle: h, offset: 0, data: $0) }
        return (a.inode, h)
    }

    /// A recovery that fails half-way (no room to move RAM-held pieces into the image)
    /// must not punch out the files it had restored: the image still holds them.
    func testARecoveryThatRunsOutOfRoomLosesNothing() throws {
        let disk = CrashSimulatingStorage(maximumBytes: 96 << 20)
        do {
            let fileSystem = try open(disk, memory: 8 << 20)
            let fs = fileSystem.namespace
            var last: (InodeNumber, FileHandle)?
            for i in 0..<20 { last = try make(fs, "big\(i)", [UInt8](repeating: UInt8(i + 1), count: 32 << 10)) }
            for i in 0..<400 { _ = try make(fs, "small\(i)", [UInt8](repeating: 7, count: 1000)) }
            try fs.fsync(inode: last!.0, handle: last!.1, dataOnly: false)
        }
        var random = SplitMix64(seed: 3)
        let image = disk.crashImage(using: &random, keep: 0)
        let cramped = CrashSimulatingStorage(maximumBytes: 96 << 20, initial: image)
        // No RAM, and a disk that refuses to grow: the 400 small files cannot move into
        // the image, and recovery fails half-way.
        let full = FaultInjectingStorage(cramped)
        full.inject(.init(.reserve, error: .noSpace, times: .max))
        XCTAssertThrowsError(try open(full, capacity: 64 << 20, memory: 0))
        XCTAssertGreaterThan(full.failures(of: .reserve), 0)
        let reopened = try open(cramped, capacity: 64 << 20, memory: 8 << 20)
        for i in 0..<20 {
            let a = try reopened.namespace.lookup(parent: .root, name: FileName(Array("big\(i)".utf8)))
            let h = try reopened.namespace.open(inode: a.inode, flags: O_RDONLY)
            XCTAssertTrue(try reopened.namespace.read(inode: a.inode, handle: h, offset: 0, count: 32 << 10)
                          == [UInt8](repeating: UInt8(i + 1), count: 32 << 10), "big\(i) after a failed recovery")
        }
    }

    /// fallocate of a hole inside a file of many extents journals the hole only, within
    /// its reservation (it named every extent up to the end of file: a debug build trapped).
    func testPreallocatingAHoleJournalsTheHoleOnly() throws {
        let fileSystem = try open(CrashSimulatingStorage(maximumBytes: 96 << 20))
        let fs = fileSystem.namespace
        let (file, handle) = try make(fs, "f", [])
        for i in 1...12 {
            _ = try [UInt8](repeating: 1, count: 4096).withUnsafeBytes {
                try fs.write(inode: file, handle: handle, offset: UInt64(i) * 8192, data: $0)
            }
        }
        try fs.fallocate(inode: file, handle: handle, offset: 0, length: 4096, mode: .allocate(keepSize: true))
        XCTAssertFalse(fileSystem.journal?.hasFailed ?? true)
    }

    /// An operation that reserved journal room and then failed left its reservation to
    /// the next frame that reserved nothing (a release), which then overran it.
    func testAFailedOperationsReservationIsNotSpentByALaterRelease() throws {
        let fileSystem = try open(CrashSimulatingStorage(maximumBytes: 96 << 20))
        let fs = fileSystem.namespace
        let (open, handle) = try make(fs, "open", [1])
        try fs.setxattr(inode: open, name: Array("user.big".utf8), value: [UInt8](repeating: 2, count: 400),
                        mode: .createOrReplace)
        try fs.unlink(parent: .root, name: FileName(Array("open".utf8)))
        // Reserves for a small inode and logs nothing (the resize journaled itself).
        let (other, _) = try make(fs, "other", [UInt8](repeating: 1, count: 100))
        _ = try fs.setattr(inode: other, changes: AttributeChanges(size: 10), context: context)
        XCTAssertThrowsError(try fs.removexattr(inode: other, name: Array("user.none".utf8)))  // reserves, fails
        fs.release(inode: open, handle: handle)  // journals the inode (with its xattr) unreserved
        fs.forget(inode: open, lookups: 1)
        XCTAssertFalse(fileSystem.journal?.hasFailed ?? true)
    }

    /// O_TRUNC that finds no journal room fails the open, leaves the file as it was, and
    /// gives the handle back.
    func testOTruncWithTheJournalFullFailsTheOpenAndKeepsNothingOpen() throws {
        let fileSystem = try ImageFileSystem.open(storage: CrashSimulatingStorage(maximumBytes: 40 << 20),
                                                  capacityBytes: 8 << 20, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let fs = fileSystem.namespace
        let (file, handle) = try make(fs, "f", [UInt8](repeating: 3, count: 4096))
        var offset: UInt64 = 4096
        let chunk = [UInt8](repeating: 1, count: 256 << 10)
        while (try? chunk.withUnsafeBytes { try fs.write(inode: file, handle: handle, offset: offset, data: $0) }) != nil {
            offset += UInt64(chunk.count)
        }
        let value = [UInt8](repeating: 7, count: 60 << 10)
        for i in 0..<200 {
            guard (try? fs.setxattr(inode: file, name: Array("user.k\(i)".utf8), value: value, mode: .createOrReplace)) != nil else { break }
        }
        // Take what room is left with operations that journal the same inode.
        while (try? fs.setattr(inode: file, changes: AttributeChanges(permissions: 0o644), context: context)) != nil {}
        let size = try fs.getattr(inode: file).size
        XCTAssertThrowsError(try fs.open(inode: file, flags: O_RDWR | O_TRUNC)) { error in
            XCTAssertEqual(error as? FSError, .noSpace)
        }
        XCTAssertEqual(try fs.getattr(inode: file).size, size, "the file keeps its bytes")
        fs.release(inode: file, handle: handle)
        let openCount = fs.state.withLock { (try? $0.table.inode(file))?.openCount }
        XCTAssertEqual(openCount, 0, "the failed open left no handle")
    }
}
