import Dispatch
#if canImport(Glibc)
import Glibc
#endif
@testable import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import XCTest

/// A format 2 image that fills up, through its namespace (`VolumeFileSystem`), as the
/// review of the first mounted version (2026-12-02) found it failing: small writes held in
/// RAM must not overrun the metadata reserve when a large file then fills the image, and a
/// full image with an orphan must still open read-only.
final class VolumeFullImageTests: XCTestCase {
    static let capacity: UInt64 = 4 << 20

    static func write(_ fs: VolumeNamespace, _ inode: InodeNumber, _ handle: FileHandle, at offset: UInt64,
                      _ bytes: [UInt8]) throws -> Int {
        try bytes.withUnsafeBytes { try fs.write(inode: inode, handle: handle, offset: offset, data: $0) }
    }

    /// A new image filled by one file, `big`, with a one-block `tiny` beside it.
    private func fullImageOfOneBigFile() throws -> (VolumeFileSystem, MemoryImageStorage, big: InodeNumber, tiny: InodeNumber) {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 0))
        let fs = fileSystem.namespace
        let (tiny, tinyHandle) = try fs.create(parent: .root, name: FileName("tiny"), mode: 0o100644, flags: O_RDWR, context: .root)
        XCTAssertEqual(try Self.write(fs, tiny.inode, tinyHandle, at: 0, [UInt8](repeating: 1, count: 4096)), 4096)
        fs.release(inode: tiny.inode, handle: tinyHandle)
        let big = try fillWithOneFile(fs)
        return (fileSystem, storage, big, tiny.inode)
    }

    /// Runs `check` on the image as a kill now would leave it (a copy, its journal
    /// replayed at the opening), then as `fileSystem`'s unmount leaves it. A full image's
    /// unmount may find no room for its commit (`full`: the journal keeps the changes).
    private func afterAKillAndAfterTheUnmount(_ fileSystem: VolumeFileSystem, _ storage: MemoryImageStorage, capacity: UInt64,
                                              memoryLimit: Int, full: Bool = false,
                                              _ check: (String, VolumeFileSystem) throws -> Void) throws {
        let killed = try VolumeFileSystem.open(storage: MemoryImageStorage(copying: storage), capacity: .kept(default: capacity),
                                               memoryLimiter: MemoryLimiter(limitBytes: memoryLimit))
        try check("after a kill", killed)
        try? killed.close(meter: nil)
        do {
            try fileSystem.close(meter: nil)
        } catch .noSpace where full {
        }
        let reopened = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: capacity),
                                                 memoryLimiter: MemoryLimiter(limitBytes: memoryLimit))
        try check("after the unmount", reopened)
        try? reopened.close(meter: nil)
    }

    /// Writes a new file, `big`, until the image is full; returns its inode.
    private func fillWithOneFile(_ fs: VolumeNamespace) throws -> InodeNumber {
        let (big, bigHandle) = try fs.create(parent: .root, name: FileName("big"), mode: 0o100644, flags: O_RDWR, context: .root)
        var offset: UInt64 = 0
        while true {
            do {
                offset += UInt64(try Self.write(fs, big.inode, bigHandle, at: offset, [UInt8](repeating: 9, count: 64 << 10)))
            } catch FSError.noSpace {
                break
            }
        }
        XCTAssertGreaterThan(offset, 2 << 20)
        fs.release(inode: big.inode, handle: bigHandle)
        return big.inode
    }

    /// `fallocate` over bytes a file holds already (a RAM piece of 3,000 bytes here) on a
    /// full image: nothing to allocate, so it succeeds, and it sets mtime and ctime as
    /// ext4 and tmpfs do. Its journal frame states an empty range, which a kill's replay
    /// and the unmount's commit both take. Before, its record carried the piece again and
    /// promised it a block first: ENOSPC on a full image.
    func testAFallocateOfBytesTheFileHoldsSucceedsOnAFullImageAndSetsTheTimes() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let piece = [UInt8](repeating: 0x5A, count: 3_000)
        let (ram, ramHandle) = try fs.create(parent: .root, name: FileName("ram"), mode: 0o100644, flags: O_RDWR, context: .root)
        XCTAssertEqual(try Self.write(fs, ram.inode, ramHandle, at: 0, piece), piece.count)
        _ = try fillWithOneFile(fs)
        let before = try fs.getattr(inode: ram.inode)
        usleep(20_000)
        try fs.fallocate(inode: ram.inode, handle: ramHandle, offset: 0, length: UInt64(piece.count), mode: .allocate(keepSize: false))
        try fs.fallocate(inode: ram.inode, handle: ramHandle, offset: 100, length: 1 << 20, mode: .allocate(keepSize: true))
        let after = try fs.getattr(inode: ram.inode)
        XCTAssertGreaterThan(after.modificationTime, before.modificationTime)
        XCTAssertEqual(after.changeTime, after.modificationTime)
        XCTAssertEqual(after.size, UInt64(piece.count))
        fs.release(inode: ram.inode, handle: ramHandle)
        try afterAKillAndAfterTheUnmount(fileSystem, storage, capacity: Self.capacity, memoryLimit: 1 << 20, full: true) { name, opened in
            let found = try opened.namespace.lookup(parent: .root, name: FileName("ram"))
            XCTAssertEqual(found.modificationTime, after.modificationTime, name)
            XCTAssertEqual(found.size, UInt64(piece.count), name)
            let handle = try opened.namespace.open(inode: found.inode, flags: O_RDONLY)
            XCTAssertEqual(try opened.namespace.read(inode: found.inode, handle: handle, offset: 0, count: piece.count), piece, name)
            opened.namespace.release(inode: found.inode, handle: handle)
        }
    }

    /// The defect hunt's reproducer (thirty-fifth session): 16,400 writes of 4,095 bytes,
    /// each followed by a hole, held in RAM (67 MB under a memory limit of 96 MiB), then
    /// a fallocate over them all and a copy_file_range of them all. Each change's record
    /// carried every RAM byte of its range, past a journal frame's 64 MiB: the frame was
    /// refused after the file had changed, the namespace failed, and every later request
    /// answered EIO until a remount. Now the fallocate is made in parts and the copy is
    /// shorter than asked, as copy_file_range(2) may be; the bytes survive a kill and an
    /// unmount.
    func testAFallocateAndACopyOverMoreRamBytesThanAFrameHoldsLeaveTheNamespaceWorking() throws {
        let capacity: UInt64 = 512 << 20
        let storage = MemoryImageStorage(maximumBytes: Int(capacity))
        let limiter = MemoryLimiter(limitBytes: 96 << 20)
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(capacity), memoryLimiter: limiter)
        let fs = fileSystem.namespace
        let piece = [UInt8](repeating: 0x72, count: 4095)
        let count = 16_400
        let (file, handle) = try fs.create(parent: .root, name: FileName("f"), mode: 0o100644, flags: O_RDWR, context: .root)
        for i in 0..<count { XCTAssertEqual(try Self.write(fs, file.inode, handle, at: UInt64(i) * 8192, piece), piece.count) }
        XCTAssertGreaterThan(limiter.usedBytes, 64 << 20, "setup: the pieces are in RAM")
        let size = UInt64(count) * 8192
        try fs.fallocate(inode: file.inode, handle: handle, offset: 0, length: size, mode: .allocate(keepSize: false))
        let (copy, copyHandle) = try fs.create(parent: .root, name: FileName("copy"), mode: 0o100644, flags: O_RDWR, context: .root)
        var done: UInt64 = 0, calls = 0
        while done < size {
            let copied = try fs.copyFileRange(from: file.inode, sourceHandle: handle, sourceOffset: done, to: copy.inode,
                                              destinationHandle: copyHandle, destinationOffset: done, length: size - done)
            XCTAssertGreaterThan(copied, 0)
            done += copied
            calls += 1
        }
        XCTAssertGreaterThan(calls, 1)
        XCTAssertNil(fs.journalFailure, "the namespace failed")
        let (_, after) = try fs.create(parent: .root, name: FileName("after"), mode: 0o100644, flags: O_RDWR, context: .root)
        _ = after
        fs.release(inode: file.inode, handle: handle)
        fs.release(inode: copy.inode, handle: copyHandle)
        try afterAKillAndAfterTheUnmount(fileSystem, storage, capacity: capacity, memoryLimit: 96 << 20) { name, opened in
            for fileName in ["f", "copy"] {
                let found = try opened.namespace.lookup(parent: .root, name: FileName(fileName))
                XCTAssertEqual(found.size, size, "\(name): \(fileName)")
                let readHandle = try opened.namespace.open(inode: found.inode, flags: O_RDONLY)
                for i in [0, count / 3, count - 1] {
                    let read = try opened.namespace.read(inode: found.inode, handle: readHandle, offset: UInt64(i) * 8192, count: 8192)
                    XCTAssertTrue(read == piece + [UInt8](repeating: 0, count: 8192 - piece.count), "\(name): \(fileName) piece \(i)")
                }
                opened.namespace.release(inode: found.inode, handle: readHandle)
            }
        }
    }

    /// Numbers an image's bytes can bring to their end (the defect hunt of the
    /// thirty-fifth session): a directory whose next entry number is the last, 2^64 - 1,
    /// takes no new name (ENOSPC, as a full directory; an arithmetic overflow trapped the
    /// daemon); readdir from the last cookie lists nothing (it trapped too); inode numbers
    /// that reach the reserved objects give ENOSPC, as ext4 with no free inode, not an
    /// inode number no item may have. A directory whose next entry number is below 3 (a
    /// damaged item) answers EIO, not an entry no item may hold.
    func testNumbersAtTheirEndAreRefusedNotTrapped() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        var fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        _ = try fileSystem.namespace.mkdir(parent: .root, name: FileName("low"), mode: 0o755, context: .root)
        let ok = try fileSystem.namespace.mkdir(parent: .root, name: FileName("ok"), mode: 0o755, context: .root).inode
        try fileSystem.close(meter: nil)
        let volume = try TreeVolume.open(storage)
        var root = try XCTUnwrap(try volume.filesystem.inode(1))
        root.nextIndex = UInt64.max
        try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(1), root.encoded())
        let low = try XCTUnwrap(try volume.filesystem.lookup(directory: 1, name: Array("low".utf8))).child
        var lowItem = try XCTUnwrap(try volume.filesystem.inode(low))
        lowItem.nextIndex = 0
        try volume.filesystem.tree.upsert(FileSystemTree.inodeKey(low), lowItem.encoded())
        try volume.close()
        fileSystem = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: Self.capacity),
                                               memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        XCTAssertThrowsError(try fs.create(parent: .root, name: FileName("f"), mode: 0o100644, flags: O_RDWR, context: .root)) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertThrowsError(try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root)) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertThrowsError(try fs.create(parent: InodeNumber(low), name: FileName("f"), mode: 0o100644, flags: O_RDWR, context: .root)) {
            guard case .damagedImage? = $0 as? FSError else { return XCTFail("\($0)") }
        }
        let handle = try fs.opendir(inode: .root)
        XCTAssertEqual(try fs.readdir(inode: .root, handle: handle, offset: UInt64.max, limit: 10).count, 0)
        XCTAssertEqual(try fs.readdir(inode: .root, handle: handle, offset: 0, limit: 10).map { String(decoding: $0.name, as: UTF8.self) },
                       [".", "..", "low", "ok"])
        fs.releasedir(inode: .root, handle: handle)
        // Inode numbers at the reserved objects' door.
        fs.nextInode.store(ReservedObject.firstReserved - 1, ordering: .relaxed)
        XCTAssertThrowsError(try fs.symlink(parent: ok, name: FileName("s"), target: Array("t".utf8), context: .root)) {
            XCTAssertEqual($0 as? FSError, .noSpace)
        }
        XCTAssertEqual(fs.nextInode.load(ordering: .relaxed), ReservedObject.firstReserved - 1)
        try fileSystem.close(meter: nil)
        XCTAssertTrue(try VolumeCheck.run(storage).problems.contains { $0.contains("is below 3") })
    }

    /// `rm tiny big && echo > small` on a full image: each keeps its data until its last
    /// FORGET (the kernel may open it again), which the kernel sends as the unlink's
    /// syscall ends but the daemon's thread may handle after the write arrives. The
    /// refused write waits for big's (`awaitForgetsOfUnlinkedFiles`), though tiny's came
    /// already, and its reclaim writes their drops before the commits that make their
    /// blocks reusable.
    func testARefusedWriteWaitsForTheForgetOfAnUnlinkedFile() throws {
        let (fileSystem, storage, big, tiny) = try fullImageOfOneBigFile()
        let fs = fileSystem.namespace
        try fs.unlink(parent: .root, name: FileName("tiny"))
        try fs.unlink(parent: .root, name: FileName("big"))
        fs.forget(inode: tiny, lookups: 1)
        let (small, handle) = try fs.create(parent: .root, name: FileName("small"), mode: 0o100644, flags: O_RDWR, context: .root)
        let forget = Thread {
            usleep(30_000)
            fs.forget(inode: big, lookups: 1)
        }
        forget.start()
        XCTAssertEqual(try Self.write(fs, small.inode, handle, at: 0, [UInt8](repeating: 3, count: 1 << 20)), 1 << 20,
                       "the write did not wait for the FORGET that frees big's blocks")
        fs.release(inode: small.inode, handle: handle)
        XCTAssertThrowsError(try fs.getattr(inode: big))
        try fileSystem.close(meter: nil)
        XCTAssertTrue(try VolumeCheck.run(storage).isClean)
    }

    /// A file the kernel keeps referenced (an `O_PATH` descriptor, a working directory)
    /// keeps its blocks, as on ext4: the first refused write waits for its FORGET in vain
    /// (`FileDataRules.forgetWaitNanoseconds`), the next ones do not wait again.
    func testAFileTheKernelKeepsReferencedIsWaitedForOnce() throws {
        let (fileSystem, _, big, _) = try fullImageOfOneBigFile()
        let fs = fileSystem.namespace
        try fs.unlink(parent: .root, name: FileName("big"))
        XCTAssertEqual(try fs.getattr(inode: big).size > 0, true)
        let (small, handle) = try fs.create(parent: .root, name: FileName("small"), mode: 0o100644, flags: O_RDWR, context: .root)
        var waits: [Double] = []
        for _ in 0..<3 {
            let started = DispatchTime.now().uptimeNanoseconds
            XCTAssertThrowsError(try Self.write(fs, small.inode, handle, at: 0, [UInt8](repeating: 3, count: 1 << 20))) {
                XCTAssertEqual($0 as? FSError, .noSpace)
            }
            waits.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
        }
        XCTAssertGreaterThanOrEqual(waits[0], 0.2, "the first refusal did not wait for the FORGET: \(waits)")
        XCTAssertLessThan(waits[1], 0.2, "a refusal waited again for a FORGET waited for in vain: \(waits)")
        XCTAssertLessThan(waits[2], 0.2, "\(waits)")
        fs.release(inode: small.inode, handle: handle)
        try fileSystem.close(meter: nil)
    }

    /// Small writes (1 KiB < n < 4 KiB) stay in RAM whatever the free space; the commit
    /// places them in image blocks with `.commit` access to the metadata reserve. Written
    /// before a large write fills the free space (one maintenance interval of untar, then
    /// one big file), they outnumber the reserve: the commit that the ENOSPC path runs
    /// (`reclaimFreedSpace`) fails, and the volume is failed for good.
    func testSmallWritesThenAFullDiskDoNotFailTheVolume() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        let fs = fileSystem.namespace
        XCTAssertEqual(fileSystem.volume.space.reserveBlocks, 128)
        // An orphan: unlinked while open (a mount's usual state).
        let (orphan, orphanHandle) = try fs.create(parent: .root, name: FileName("o"), mode: 0o100644, flags: O_RDWR,
                                                   context: .root)
        try fs.unlink(parent: .root, name: FileName("o"))
        _ = orphan
        _ = orphanHandle
        // 300 small files of 2000 bytes: RAM pieces, no blocks taken.
        for i in 0..<300 {
            let (file, handle) = try fs.create(parent: .root, name: FileName("s\(i)"), mode: 0o100644, flags: O_RDWR,
                                               context: .root)
            XCTAssertEqual(try VolumeFullImageTests.write(fs, file.inode, handle, at: 0, [UInt8](repeating: UInt8(i & 0xff), count: 2000)), 2000)
            fs.release(inode: file.inode, handle: handle)
        }
        // A large file until the space is full.
        let (big, bigHandle) = try fs.create(parent: .root, name: FileName("big"), mode: 0o100644, flags: O_RDWR,
                                             context: .root)
        var offset: UInt64 = 0
        var refusal: FSError?
        while refusal == nil && offset < Self.capacity {
            do {
                offset += UInt64(try VolumeFullImageTests.write(fs, big.inode, bigHandle, at: offset, [UInt8](repeating: 9, count: 64 << 10)))
            } catch {
                refusal = error as? FSError
            }
        }
        XCTAssertEqual(refusal, .noSpace)
        XCTAssertNil(fileSystem.volume.failure, "ENOSPC of a write failed the volume (read-only until remount)")
        fs.release(inode: big.inode, handle: bigHandle)
        XCTAssertNoThrow(try fs.unlink(parent: .root, name: FileName("big")), "rm on the full image")

        // The image as it is now (the daemon killed): the next mount replays the same pieces.
        let reopened = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: 0),
                                                 memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        XCTAssertFalse(reopened.isReadOnly, "the next mount is read-only: \(reopened.report.warnings)")
    }

    /// Writes inside RAM pieces, then a file that fills the image (thirty-seventh
    /// session): a write strictly inside a RAM piece changes it in place, and its record's
    /// bytes, past an inline extent's, go to a block of their own at the commit, which
    /// must find them. (They are admitted as a new piece's bytes are, `admitsMemoryPiece`;
    /// the commit's load, which each operation's admission holds room for, covers them
    /// too: this passes without that call.)
    func testWritesInsideRamPiecesThenAFullImageDoNotFailTheVolume() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        let fs = fileSystem.namespace
        var files: [(InodeNumber, FileHandle)] = []
        for i in 0..<100 {
            let (file, handle) = try fs.create(parent: .root, name: FileName("s\(i)"), mode: 0o100644, flags: O_RDWR,
                                               context: .root)
            XCTAssertEqual(try Self.write(fs, file.inode, handle, at: 0, [UInt8](repeating: 1, count: 4000)), 4000)
            files.append((file.inode, handle))
        }
        _ = try fs.commitIfChanged()
        for (inode, handle) in files {
            XCTAssertEqual(try Self.write(fs, inode, handle, at: 1000, [UInt8](repeating: 2, count: 2000)), 2000)
        }
        let (big, bigHandle) = try fs.create(parent: .root, name: FileName("big"), mode: 0o100644, flags: O_RDWR,
                                             context: .root)
        var offset: UInt64 = 0
        while offset < Self.capacity {
            do {
                offset += UInt64(try Self.write(fs, big.inode, bigHandle, at: offset, [UInt8](repeating: 9, count: 4096)))
            } catch {
                XCTAssertEqual(error as? FSError, .noSpace)
                break
            }
        }
        XCTAssertNoThrow(try fs.commitIfChanged())
        XCTAssertNil(fileSystem.volume.failure, "the commit of the writes inside RAM pieces failed the volume")
        let expected = [UInt8](repeating: 1, count: 1000) + [UInt8](repeating: 2, count: 2000) + [UInt8](repeating: 1, count: 1000)
        for (index, (inode, handle)) in files.enumerated() {
            XCTAssertEqual(try fs.read(inode: inode, handle: handle, offset: 0, count: 4000), expected, "file \(index)")
            fs.release(inode: inode, handle: handle)
        }
        fs.release(inode: big.inode, handle: bigHandle)
    }

    /// When the opening commit found no room, `VolumeFileSystem` means to serve the image
    /// read-only; but `VolumeNamespace.init` drops orphans through `perform`, which
    /// throws the volume's failure: the mount fails altogether.
    func testAFullImageWithAnOrphanOpensReadOnly() throws {
        let capacity: UInt64 = 2 << 20
        let storage = MemoryImageStorage(maximumBytes: Int(capacity))
        let volume = try TreeVolume.format(storage, capacityBytes: capacity, imageID: 5,
                                           nameHashKey: SipHash24(key0: 3, key1: 4))
        volume.space.setReserveTarget(0)
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        let (file, handle) = try namespace.create(parent: .root, name: FileName("o"), mode: 0o100644, flags: O_RDWR,
                                                  context: .root)
        try namespace.unlink(parent: .root, name: FileName("o"))
        _ = (file, handle)
        try volume.commit()
        // Journal until refused, then file data takes the rest: the commit finds no room.
        var i = 0
        while true {
            do {
                try namespace.setxattr(inode: .root, name: Array("user.k\(i)".utf8),
                                       value: [UInt8](repeating: 7, count: 3000), mode: .createOrReplace)
                i += 1
            } catch {
                break
            }
        }
        let files = try volume.fileBlocks()
        while (try? files.allocate(byteCount: 4096)) != nil {}
        XCTAssertThrowsError(try volume.commit())
        XCTAssertNotNil(volume.failure)
        // The next mount: its opening commit needs the same room.
        let reopened = try TreeVolume.open(storage, reserveTarget: 0)
        XCTAssertNotNil(reopened.failure, "setup: the opening commit should have found no room")
        XCTAssertNoThrow(try VolumeNamespace(volume: reopened, memoryLimiter: MemoryLimiter(limitBytes: 64 << 20)),
                         "a full image with an orphan does not open read-only but not at all")
    }
}

/// Space an rm freed comes back while the mount is idle: the maintenance commits the rm
/// once nothing came for a second (`VolumeCommitPolicy`, the mount's default), and keeps
/// committing for a few ticks after it (the reuse rule needs commits after the one that
/// records a release); before, it committed only when the journal grew, and df never
/// followed an rm until something else changed.
final class VolumeIdleCommitTests: XCTestCase {
    /// A 1 GiB image (not low on free space: a smaller image commits at every tick, idle
    /// or not), its maintenance ticking every 10 ms.
    static func idleFileSystem(maintained: Bool = true) throws -> VolumeFileSystem {
        let capacity: UInt64 = 1 << 30
        let storage = MemoryImageStorage(maximumBytes: Int(capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 16 << 20))
        if maintained { fileSystem.startMaintenance(interval: 0.01, journalBytes: nil, onWrite: nil) { _ in } }
        return fileSystem
    }

    func testSpaceFreedByRmComesBackWhileIdle() throws {
        let fileSystem = try Self.idleFileSystem()
        let fs = fileSystem.namespace
        usleep(100_000)
        let empty = fileSystem.usage().availableBytes
        let (file, handle) = try fs.create(parent: .root, name: FileName("big"), mode: 0o100644, flags: O_RDWR, context: .root)
        let chunk = [UInt8](repeating: 3, count: 1 << 20)
        for i in 0..<16 {
            _ = try chunk.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: UInt64(i) << 20, data: $0) }
        }
        fs.release(inode: file.inode, handle: handle)
        usleep(200_000)
        let full = fileSystem.usage().availableBytes
        try fs.unlink(parent: .root, name: FileName("big"))
        fs.forget(inode: file.inode, lookups: 1)
        // Maintenance ticks every 10 ms: the rm is committed a second after it, and the
        // settling commits follow within tens of milliseconds.
        let started = DispatchTime.now()
        var after = fileSystem.usage().availableBytes
        while after <= empty - (2 << 20) && DispatchTime.now() < started + 5 {
            usleep(50_000)
            after = fileSystem.usage().availableBytes
        }
        let waited = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        print("idle: available \(empty >> 20) MiB empty, \(full >> 20) MiB with the file, \(after >> 20) MiB \(waited) s after rm")
        XCTAssertGreaterThan(after, empty - (2 << 20), "the 16 MiB freed by rm are still not available after 5 s idle")
        XCTAssertGreaterThanOrEqual(waited, 0.9, "the rm was committed before the mount was a second idle")
        try fileSystem.close(meter: nil)
    }
}

extension VolumeIdleCommitTests {
    /// The freed filesystem-tree nodes the volume keeps for the next commits' nodes
    /// (`ReusableNodes`) are pending, not free: idle, the first settling commit lets them
    /// go and the settling commits punch and free them, so `df` comes back to where it was.
    func testFreedNodesKeptForReuseGoBackWhileIdle() throws {
        // The maintenance starts after the busy part: its commits at rest would let the
        // kept nodes go between the rounds.
        let fileSystem = try Self.idleFileSystem(maintained: false)
        let fs = fileSystem.namespace
        let space = fileSystem.volume.space
        var keptAtMost = 0
        // Files made and removed in rounds, each round committed: the removes replace the
        // tree's leaves, whose old blocks are kept for reuse.
        for round in 0..<6 {
            var made: [(InodeNumber, FileName)] = []
            for i in 0..<400 {
                let name = try FileName("r\(round)-\(i)")
                let (file, handle) = try fs.create(parent: .root, name: name, mode: 0o100644, flags: O_RDWR, context: .root)
                fs.release(inode: file.inode, handle: handle)
                made.append((file.inode, name))
            }
            _ = try fs.commitIfChanged()
            for (inode, name) in made {
                try fs.unlink(parent: .root, name: name)
                fs.forget(inode: inode, lookups: 1)
            }
            _ = try fs.commitIfChanged()
            keptAtMost = max(keptAtMost, fileSystem.volume.spaceLock.withLock { space.reusableNodeCount })
        }
        XCTAssertGreaterThan(keptAtMost, 0, "setup: no freed node was kept")
        fileSystem.startMaintenance(interval: 0.01, journalBytes: nil, onWrite: nil) { _ in }
        let started = DispatchTime.now()
        var kept = keptAtMost
        while kept > 0 && DispatchTime.now() < started + 5 {
            usleep(50_000)
            kept = fileSystem.volume.spaceLock.withLock { space.reusableNodeCount }
        }
        print("idle: \(keptAtMost) freed nodes kept at most while busy, \(kept) after \(Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9) s idle")
        XCTAssertEqual(kept, 0, "freed nodes are still kept after 5 s idle")
        // And the settling commits free them: nothing but the block tree's runs and the
        // last commits' own frees stays used.
        usleep(300_000)
        let pending = try fileSystem.volume.spaceLock.withLock {
            try space.blockTree.pendingFrees(through: BlockReferenceTree.maximumPendingGeneration)
        }
        let oldest = fileSystem.volume.current.generation - 2
        XCTAssertEqual(pending.filter { $0.generation < oldest }.map(\.blocks), [],
                       "pending frees older than the last two commits stay after the settling")
        try fileSystem.close(meter: nil)
    }
}

/// A write after rm on a full image (`reclaimingWhenFull`): the commits run until the rm's
/// blocks are free space again. The first version stopped as soon as the free count grew
/// at all (an old journal chain's few blocks), one commit before the rm's blocks came back,
/// and the retried write failed with ENOSPC.
final class VolumeReclaimTests: XCTestCase {
    func testAWriteAfterRmOnAFullImageSucceeds() throws {
        let capacity: UInt64 = 16 << 20
        let storage = MemoryImageStorage(maximumBytes: Int(capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 16 << 20))
        let fs = fileSystem.namespace
        let chunk = [UInt8](repeating: 5, count: 256 << 10)
        // "b" is made before the image fills: a create right after the rm, on the full
        // image, is refused until commits give the rm's blocks back ("Commits that fit a
        // full image": its commit would not fit the room left).
        let (b, bHandle) = try fs.create(parent: .root, name: FileName("b"), mode: 0o100644, flags: O_RDWR, context: .root)
        let (a, aHandle) = try fs.create(parent: .root, name: FileName("a"), mode: 0o100644, flags: O_RDWR, context: .root)
        var offset: UInt64 = 0
        while let n = try? chunk.withUnsafeBytes({ try fs.write(inode: a.inode, handle: aHandle, offset: offset, data: $0) }) {
            offset += UInt64(n)
        }
        fs.release(inode: a.inode, handle: aHandle)
        try fs.unlink(parent: .root, name: FileName("a"))
        fs.forget(inode: a.inode, lookups: 1)
        let generation = fileSystem.volume.current.generation
        XCTAssertNoThrow(try chunk.withUnsafeBytes { try fs.write(inode: b.inode, handle: bHandle, offset: 0, data: $0) },
                         "a 256 KiB write after rm of \(offset >> 20) MiB (commits it ran: \(fileSystem.volume.current.generation - generation))")
        print("reclaim: wrote \(offset >> 20) MiB, rm, then \(fileSystem.volume.current.generation - generation) commits; available now \(fileSystem.usage().availableBytes >> 10) KiB")
        fs.release(inode: b.inode, handle: bHandle)
    }

    /// A 16 MiB image filled by file "a", which is then removed (its kernel reference
    /// given back), and file "b" open (made before the fill: a create after the rm is
    /// refused until commits give the rm's blocks back): a write to "b" needs the reclaim.
    private func fullImageAfterRm() throws -> (fileSystem: VolumeFileSystem, file: InodeNumber, handle: FileHandle) {
        let capacity: UInt64 = 16 << 20
        let fileSystem = try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(capacity)),
                                                     capacity: .set(capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 16 << 20))
        let fs = fileSystem.namespace
        let (b, bHandle) = try fs.create(parent: .root, name: FileName("b"), mode: 0o100644, flags: O_RDWR, context: .root)
        let (a, aHandle) = try fs.create(parent: .root, name: FileName("a"), mode: 0o100644, flags: O_RDWR, context: .root)
        var offset: UInt64 = 0
        while let n = try? Self.chunk.withUnsafeBytes({ try fs.write(inode: a.inode, handle: aHandle, offset: offset, data: $0) }) {
            offset += UInt64(n)
        }
        fs.release(inode: a.inode, handle: aHandle)
        try fs.unlink(parent: .root, name: FileName("a"))
        fs.forget(inode: a.inode, lookups: 1)
        return (fileSystem, b.inode, bHandle)
    }

    static let chunk = [UInt8](repeating: 5, count: 256 << 10)

    /// An xattr past its limits (the list of names, here) answers ENOSPC from its own
    /// checks: no reclaim can give it room, so none runs (found by the review: counted as
    /// a refusal for space, each such setxattr ran up to sixteen commits and answered
    /// ENOSPC all the same).
    func testAnXattrPastItsLimitsCommitsNothing() throws {
        let capacity: UInt64 = 64 << 20
        let fileSystem = try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(capacity)),
                                                     capacity: .set(capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let (file, handle) = try fs.create(parent: .root, name: FileName("f"), mode: 0o100644, flags: O_RDWR, context: .root)
        var refused: FSError?
        for index in 0..<100_000 where refused == nil {
            let name = Array(("user." + String(repeating: "n", count: 200) + "\(index)").utf8)
            do throws(FSError) {
                try fs.setxattr(inode: file.inode, name: name, value: [1], mode: .createOrReplace)
            } catch {
                refused = error
            }
        }
        guard case .noSpace = refused else { return XCTFail("the names never reached their limit: \(String(describing: refused))") }
        let generation = fileSystem.volume.current.generation
        let oneMore = Array(("user." + String(repeating: "n", count: 200) + "more").utf8)
        XCTAssertThrowsError(try fs.setxattr(inode: file.inode, name: oneMore, value: [1], mode: .createOrReplace))
        XCTAssertEqual(fileSystem.volume.current.generation, generation, "a setxattr past its limits committed")
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)
    }

    /// A reclaim that stops as soon as a block came back (a lowered `reclaimEnoughBlocks`:
    /// as an old journal chain of more than its megabyte comes back a commit before the
    /// rm's blocks) is followed by another while the write is still refused and space keeps
    /// coming back (`afterReclaim`). With one reclaim the write after rm fails with ENOSPC
    /// (a 64 MiB fallocate after its truncate on a full image did, beside chmods whose
    /// journal chains came back first).
    func testAWriteAfterRmRunsAfterAsManyReclaimsAsItNeeds() throws {
        let (fileSystem, file, handle) = try fullImageAfterRm()
        let fs = fileSystem.namespace
        fileSystem.volume.reclaimEnoughBlocks = 1
        let generation = fileSystem.volume.current.generation
        let big = [UInt8](repeating: 7, count: 8 << 20)
        XCTAssertNoThrow(try big.withUnsafeBytes { try fs.write(inode: file, handle: handle, offset: 0, data: $0) },
                         "an 8 MiB write after rm (commits it ran: \(fileSystem.volume.current.generation - generation))")
        XCTAssertGreaterThan(fileSystem.volume.current.generation, generation + 1, "one commit was enough: the test proves nothing")
        fs.release(inode: file, handle: handle)
        try fileSystem.close(meter: nil)
    }

    /// Reads take no namespace lock, so a getattr runs during the reclaim's commits (held
    /// alone), and its reader, given back to the pool, would hold back the punch of the
    /// rm's blocks through the later commits: the write failed with ENOSPC in 9 of 10
    /// rounds (found by the review of "Step 7, seventh part"). The pool is drained before
    /// each of the reclaim's commits.
    func testAWriteAfterRmOnAFullImageSucceedsWithAGetattrDuringTheReclaim() throws {
        for round in 0..<10 {
            let (fileSystem, file, handle) = try fullImageAfterRm()
            let fs = fileSystem.namespace
            // One getattr, as soon as the reclaim's first commit is published.
            let start = fileSystem.volume.committedGeneration
            let read = DispatchGroup()
            onThreadOfItsOwn(read) {
                let deadline = MonotonicClock.nanoseconds() + 20_000_000_000
                while fileSystem.volume.committedGeneration == start && MonotonicClock.nanoseconds() < deadline {}
                _ = try? fs.getattr(inode: .root)
            }
            XCTAssertNoThrow(try Self.chunk.withUnsafeBytes { try fs.write(inode: file, handle: handle, offset: 0, data: $0) },
                             "round \(round): a write after rm beside a getattr")
            XCTAssertGreaterThan(fileSystem.volume.committedGeneration, start, "setup: the write ran no reclaim")
            XCTAssertEqual(read.wait(timeout: .now() + 30), .success)
            fs.release(inode: file, handle: handle)
            try fileSystem.close(meter: nil)
        }
    }

    /// A read in flight when the reclaim starts, and for 30 ms after (a cold lookup): its
    /// reader's epoch would hold back the punch of the rm's blocks through the reclaim's
    /// commits, which take less than that, and the write failed with ENOSPC (a fallocate
    /// loop on a full image beside a stream of lookups, through a mount, did so once in
    /// about 2,500 reclaims). The reclaim waits for the readers older than its last
    /// commit, 100 ms at most, before each commit.
    func testAWriteAfterRmOnAFullImageSucceedsWithAReadInFlightDuringTheReclaim() throws {
        let (fileSystem, file, handle) = try fullImageAfterRm()
        let fs = fileSystem.namespace
        final class Pinned: @unchecked Sendable { var reader: (reader: VolumeReader, open: UInt64)? }
        let pinned = Pinned()
        pinned.reader = try fs.readers.take()
        let released = DispatchGroup()
        onThreadOfItsOwn(released) {
            usleep(30_000)
            pinned.reader = nil
        }
        XCTAssertNoThrow(try Self.chunk.withUnsafeBytes { try fs.write(inode: file, handle: handle, offset: 0, data: $0) },
                         "a write after rm beside a read in flight")
        XCTAssertEqual(released.wait(timeout: .now() + 30), .success)
        fs.release(inode: file, handle: handle)
        try fileSystem.close(meter: nil)
    }
}
