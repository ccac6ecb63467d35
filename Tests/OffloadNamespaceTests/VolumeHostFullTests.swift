#if canImport(Glibc)
import Glibc
#endif
import Dispatch
@testable import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import XCTest

/// An image whose disk fills before its capacity does (`--size` larger than the disk, or
/// a disk other files fill): every change must be refused with ENOSPC while its commit
/// could not be written, never admitted and then failed by a commit, which failed the
/// volume (every later change, `rm` included, refused until the next mount, which then
/// served the image read-only for want of room: found by the twenty-eighth session's
/// defect hunt on ext4, reproduced on tmpfs). After the refusals, deleting gives the
/// space back and the image takes files again.
final class VolumeHostFullTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20

    private func makeFileSystem(hostBytes: UInt64) throws -> (VolumeFileSystem, HostLimitedStorage) {
        let storage = HostLimitedStorage(MemoryImageStorage(maximumBytes: Int(Self.capacity)), hostBytes: hostBytes)
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        return (fileSystem, storage)
    }

    /// Small files (their bytes held in RAM, placed by the commit) until the disk is full.
    func testSmallFilesFillingTheDiskAreRefusedAndRemovable() throws {
        let (fileSystem, storage) = try makeFileSystem(hostBytes: 12 << 20)
        let fs = fileSystem.namespace
        var made: [(name: String, inode: InodeNumber)] = []
        var refusal: FSError?
        let started = DispatchTime.now().uptimeNanoseconds
        for index in 0..<200_000 {
            let name = "f\(index)"
            do {
                let (file, handle) = try fs.create(parent: .root, name: FileName(name), mode: 0o100644, flags: O_RDWR,
                                                   context: .root)
                defer { fs.release(inode: file.inode, handle: handle) }
                made.append((name, file.inode))
                let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: 700 + index % 3000)
                _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
            } catch let error as FSError {
                refusal = error
                break
            }
            // The maintenance's commits, as a mount makes them.
            if index % 500 == 499 { _ = try fs.commitIfChanged() }
        }
        XCTAssertEqual(refusal, .noSpace, "the disk filled (\(made.count) files, \(storage.backedBytes) host bytes)")
        print("[host full] \(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9) s: \(made.count) files refused at \(storage.backedBytes) of \(storage.hostBytes) host bytes")
        XCTAssertNil(fileSystem.volume.failure, "no commit failed: changes were refused instead")
        _ = try fs.commitIfChanged()
        XCTAssertNil(fileSystem.volume.failure)
        // Unlinked and forgotten (the kernel's reference from the create), as `rm` does.
        for file in made {
            try fs.unlink(parent: .root, name: FileName(file.name))
            fs.forget(inode: file.inode, lookups: 1)
        }
        for _ in 0..<6 { _ = try fs.commitIfChanged() }
        XCTAssertNil(fileSystem.volume.failure)
        XCTAssertLessThan(storage.backedBytes, 8 << 20, "the deletions gave the disk its space back")
        let (again, handle) = try fs.create(parent: .root, name: FileName("again"), mode: 0o100644, flags: O_RDWR, context: .root)
        _ = try [UInt8](repeating: 7, count: 1 << 20).withUnsafeBytes { try fs.write(inode: again.inode, handle: handle, offset: 0, data: $0) }
        fs.release(inode: again.inode, handle: handle)
        try fileSystem.close(meter: nil)
        XCTAssertTrue(try VolumeCheck.run(storage).isClean)
    }

    /// Small files admitted while the disk had room, then another program fills the disk
    /// before their commit: the commit writes their bytes into blocks the admission gave
    /// disk space (`VolumeFileBlocks.promiseBacking`). Admitted against the disk's last
    /// figure alone, that commit found no disk space for them and failed the volume
    /// (found with `dd` filling an ext4 beside a mount making small files; every change,
    /// `rm` included, was then refused until the next mount).
    func testSmallFilesAdmittedBeforeAnotherProgramFillsTheDiskAreCommitted() throws {
        let (fileSystem, storage) = try makeFileSystem(hostBytes: 48 << 20)
        let fs = fileSystem.namespace
        _ = try fs.commitIfChanged()
        var files: [(name: String, bytes: [UInt8])] = []
        for index in 0..<3_000 {
            let name = "f\(index)"
            let (file, handle) = try fs.create(parent: .root, name: FileName(name), mode: 0o100644, flags: O_RDWR,
                                               context: .root)
            let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: 1_500 + index % 2_000)
            _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
            fs.release(inode: file.inode, handle: handle)
            fs.forget(inode: file.inode, lookups: 1)
            files.append((name, bytes))
        }
        storage.otherProgramFillsTheDisk()
        _ = try fs.commitIfChanged()
        XCTAssertNil(fileSystem.volume.failure, "the commit of the admitted pieces found their disk space")
        for (name, bytes) in files.prefix(50) {
            let file = try fs.lookup(parent: .root, name: FileName(name))
            let handle = try fs.open(inode: file.inode, flags: O_RDONLY)
            let read = try fs.read(inode: file.inode, handle: handle, offset: 0, count: bytes.count + 1)
            fs.release(inode: file.inode, handle: handle)
            fs.forget(inode: file.inode, lookups: 1)
            XCTAssertEqual(read, bytes, name)
        }
        // The full disk refuses new files' bytes, and the image still takes removals.
        for (name, _) in files { try fs.unlink(parent: .root, name: FileName(name)) }
        for _ in 0..<6 { _ = try fs.commitIfChanged() }
        XCTAssertNil(fileSystem.volume.failure)
        try fileSystem.close(meter: nil)
        XCTAssertTrue(try VolumeCheck.run(storage).isClean)
    }

    /// A disk that cannot punch keeps the disk space of what the image frees (zeros are
    /// written instead), so its free space never follows the image's: once a punch is
    /// refused, the room is the image's alone again. Capped by the disk's figure read
    /// when it was full, which never grew again, the room stayed 0 (the review of this
    /// change).
    func testADiskThatCannotPunchIsNotTheRoomOnceAPunchIsRefused() throws {
        let (fileSystem, storage) = try makeFileSystem(hostBytes: 24 << 20)
        let fs = fileSystem.namespace
        let (big, handle) = try fs.create(parent: .root, name: FileName("big"), mode: 0o100644, flags: O_RDWR, context: .root)
        var offset: UInt64 = 0
        do {
            while true {
                offset += UInt64(try [UInt8](repeating: 9, count: 256 << 10).withUnsafeBytes {
                    try fs.write(inode: big.inode, handle: handle, offset: offset, data: $0)
                })
            }
        } catch FSError.noSpace {}
        fs.release(inode: big.inode, handle: handle)
        XCTAssertGreaterThan(offset, 8 << 20, "the disk filled")
        // The first punch comes now, after the disk's figure was read full (the first
        // punch of a fresh image comes when something was freed).
        storage.refusePunches()
        try fs.unlink(parent: .root, name: FileName("big"))
        fs.forget(inode: big.inode, lookups: 1)
        for _ in 0..<6 { _ = try fs.commitIfChanged() }
        XCTAssertNil(storage.hostAvailableBytes, "a punch was refused")
        // What the image frees keeps its disk space now: the image's free blocks are the
        // room (`df`'s available), not the disk's figure read before, when it was full.
        // (A write may still be refused where the allocator takes blocks the disk never
        // gave space: the disk is full. That is a disk that cannot punch.)
        let statistics = fs.statfs()
        XCTAssertGreaterThan(statistics.freeBlocks, 2048, "big's blocks are free")
        XCTAssertEqual(statistics.availableBlocks, statistics.freeBlocks, "no stale cap")
        try fileSystem.close(meter: nil)
    }
}
