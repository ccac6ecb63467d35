import Foundation
import CLinuxShims
import OffloadCore
import XCTest

/// An image on a file system without `fallocate` (ext2 here; ext3 without extents and NFS
/// before 4.2 are the same): `FileImageStorage.reserveTaken` writes zeros into the range's
/// holes instead, so that a write through the mapping there cannot fault when the disk
/// fills. Before, `reserve` answered `.notSupported` and the image stayed sparse: a
/// journal frame copied into a hole of the full disk faulted, and the volume failed with
/// an I/O error (every later change refused until the next mount), where a disk with
/// `fallocate` answered ENOSPC and went on.
final class NoFallocateDiskTests: XCTestCase {
    private var root: String?
    private var mounted = false

    override func tearDown() {
        if let root {
            if mounted { _ = try? BoundedRun.program("/usr/bin/env", ["umount", root + "/disk"], timeout: 30) }
            try? FileManager.default.removeItem(atPath: root)
        }
        super.tearDown()
    }

    /// A fresh ext2 on a loop device, mounted at `root/disk`.
    private func makeExt2Disk(megabytes: Int) throws -> String {
        guard geteuid() == 0 else { throw XCTSkip("a loop mount needs root") }
        let root = try makeTemporaryDirectory()
        self.root = root
        try FileManager.default.createDirectory(atPath: root + "/disk", withIntermediateDirectories: true)
        let image = root + "/ext2.img"
        XCTAssertTrue(FileManager.default.createFile(atPath: image, contents: nil))
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: UInt64(megabytes) << 20)
        let mkfs = try BoundedRun.program("/usr/bin/env", ["mkfs.ext2", "-q", "-F", image], timeout: 60)
        let mount = mkfs.succeeded
            ? try BoundedRun.program("/usr/bin/env", ["mount", "-o", "loop", image, root + "/disk"], timeout: 60) : mkfs
        guard mount.succeeded else {
            if MountFixture.isCI { throw MountTestError("cannot make an ext2 loop disk: \(mount.transcript)") }
            throw XCTSkip("cannot make an ext2 loop disk: \(mount.transcript)")
        }
        mounted = true
        return root + "/disk"
    }

    func testReserveGivesHolesDiskSpaceAndKeepsData() throws {
        let disk = try makeExt2Disk(megabytes: 16)
        let probe = open(disk + "/probe", O_RDWR | O_CREAT, 0o600)
        XCTAssertGreaterThanOrEqual(probe, 0)
        XCTAssertTrue(offloadfs_fallocate(probe, 0, 0, 4096) != 0 && errno == EOPNOTSUPP,
                      "the disk refuses fallocate (the case under test)")
        close(probe)
        let storage = try FileImageStorage(path: disk + "/image")
        try storage.setLength(8 << 20)
        _ = try storage.map(byteCount: 8 << 20)
        // Bytes of a file in the middle of the range to reserve; holes around them.
        let data = [UInt8](repeating: 0xAB, count: 3_000)
        try data.withUnsafeBytes { try storage.write($0, at: 1 << 20) }
        let before = storage.diskBytes
        try storage.reserveTaken(0..<(2 << 20))
        XCTAssertGreaterThanOrEqual(storage.diskBytes - before, (2 << 20) - 8192,
                                    "the range has disk space (\(before) -> \(storage.diskBytes) bytes)")
        XCTAssertEqual(storage.readBytes(at: 1 << 20, count: data.count), data, "the bytes there are kept")
        XCTAssertEqual(storage.readBytes(at: (1 << 20) - 4096, count: 4096), [UInt8](repeating: 0, count: 4096))
        // `reserve` (the data path's steps ahead, over blocks files may use) leaves it sparse.
        XCTAssertThrowsError(try storage.reserve((3 << 20)..<(4 << 20))) { error in
            XCTAssertEqual(error as? FSError, .notSupported)
        }

        // Another program fills the disk: a write through the mapping (a copy shorter than
        // `pwriteThreshold`) inside the reserved range goes on; a reservation past it is
        // ENOSPC, not a fault at the write after it.
        let filler = try BoundedRun.program("/usr/bin/env", ["dd", "if=/dev/zero", "of=\(disk)/filler", "bs=1M"],
                                            timeout: 60)
        XCTAssertFalse(filler.succeeded, "dd filled the disk")
        let bytes = [UInt8](repeating: 0x5C, count: 8192)
        XCTAssertNoThrow(try bytes.withUnsafeBytes { try storage.write($0, at: 1536 << 10) },
                         "a write into a reserved hole of the full disk")
        XCTAssertEqual(storage.readBytes(at: 1536 << 10, count: bytes.count), bytes)
        XCTAssertThrowsError(try storage.reserveTaken((4 << 20)..<(6 << 20))) { error in
            XCTAssertEqual(error as? FSError, .noSpace)
        }
    }
}
