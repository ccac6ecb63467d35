import Glibc
import XCTest
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Faults of the disk under the image, injected at the storage seam: EIO and ENOSPC from
/// writes (whole or short), from fallocate and from fdatasync. Each time the operation
/// that met the fault gets the error, nothing else breaks (later operations work, the
/// namespace's invariants hold), and what was fsync'ed before is still there after a
/// power cut (the crash simulator's durable image, recovered).
final class FaultInjectionTests: XCTestCase {
    private let context = RequestContext(uid: 0, gid: 0)
    private let capacity: UInt64 = 32 << 20

    private struct Setup {
        let disk: CrashSimulatingStorage
        let faults: FaultInjectingStorage
        let fileSystem: ImageFileSystem
        var fs: Namespace { fileSystem.namespace }
    }

    private func makeSetup() throws -> Setup {
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity) + (64 << 20))
        let faults = FaultInjectingStorage(disk)
        let fileSystem = try ImageFileSystem.open(storage: faults, capacityBytes: capacity,
                                                  memoryLimiter: MemoryLimiter(limitBytes: 0))
        return Setup(disk: disk, faults: faults, fileSystem: fileSystem)
    }

    private func bytes(_ count: Int, _ value: UInt8) -> [UInt8] { [UInt8](repeating: value, count: count) }

    /// A file holding `contents`, fsync'ed.
    private func syncedFile(_ name: String, _ contents: [UInt8], in s: Setup) throws -> (InodeNumber, FileHandle) {
        let (a, h) = try s.fs.create(parent: .root, name: FileName(Array(name.utf8)), mode: 0o100644, flags: O_RDWR,
                                     context: context)
        _ = try contents.withUnsafeBytes { try s.fs.write(inode: a.inode, handle: h, offset: 0, data: $0) }
        try s.fs.fsync(inode: a.inode, handle: h, dataOnly: false)
        return (a.inode, h)
    }

    private func read(_ file: (InodeNumber, FileHandle), in s: Setup) throws -> [UInt8] {
        let size = try s.fs.getattr(inode: file.0).size
        return try s.fs.read(inode: file.0, handle: file.1, offset: 0, count: Int(size))
    }

    /// What a power cut now leaves, recovered: `name` must read `expected`.
    private func assertSurvivesPowerCut(_ s: Setup, _ name: String, _ expected: [UInt8],
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        var random = SplitMix64(seed: 1)
        let image = s.disk.crashImage(using: &random, keep: 0)  // only what was durable
        let recovered = try ImageFileSystem.open(storage: CrashSimulatingStorage(maximumBytes: Int(capacity) + (64 << 20),
                                                                                  initial: image),
                                                 capacityBytes: capacity, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let fs = recovered.namespace
        let a = try fs.lookup(parent: .root, name: FileName(Array(name.utf8)))
        let h = try fs.open(inode: a.inode, flags: O_RDONLY)
        XCTAssertTrue(try fs.read(inode: a.inode, handle: h, offset: 0, count: Int(a.size)) == expected,
                      "\(name) after a power cut", file: file, line: line)
        fs.release(inode: a.inode, handle: h)
    }

    func testWriteErrorsReachTheCallerAndLeaveTheFileAsItWas() throws {
        let cases: [(String, FaultInjectingStorage.Fault, FSError?)] = [
            ("EIO from pwrite", .init(.write, error: .system(errno: EIO, call: "write image")), nil),
            ("a short pwrite, then ENOSPC", .init(.write, error: .noSpace, partial: true), .noSpace),
            // Both the step-sized and the exact-sized reservation fail.
            ("ENOSPC from fallocate", .init(.reserve, error: .noSpace, times: 2), .noSpace),
            ("EIO from fallocate", .init(.reserve, error: .system(errno: EIO, call: "fallocate image")), nil),
        ]
        for (label, fault, expected) in cases {
            let s = try makeSetup()
            let synced = bytes(100_000, 7)
            let file = try syncedFile("f", synced, in: s)
            s.faults.inject(fault)
            // 6 MiB past the end: new blocks beyond the image's first 4 MiB reservation
            // (fallocate), written with pwrite.
            let big = bytes(6 << 20, 9)
            XCTAssertThrowsError(try big.withUnsafeBytes {
                try s.fs.write(inode: file.0, handle: file.1, offset: 4 << 20, data: $0)
            }, label) { error in
                if let expected { XCTAssertEqual(error as? FSError, expected, label) }
            }
            XCTAssertGreaterThan(s.faults.failures(of: fault.operation), 0, "\(label): the fault fired")
            XCTAssertTrue(try read(file, in: s) == synced, "\(label): a failed write changes nothing")
            // The fault is spent: the filesystem goes on serving.
            _ = try big.withUnsafeBytes { try s.fs.write(inode: file.0, handle: file.1, offset: 0, data: $0) }
            XCTAssertTrue(try read(file, in: s) == big, label)
            try s.fileSystem.store.checkInvariants()
            try assertSurvivesPowerCut(s, "f", synced)
        }
    }

    func testAnInPlaceWriteErrorReachesTheCaller() throws {
        let s = try makeSetup()
        let file = try syncedFile("f", bytes(64 << 10, 1), in: s)
        s.faults.inject(.init(.write, error: .system(errno: EIO, call: "write image")))
        XCTAssertThrowsError(try bytes(8192, 2).withUnsafeBytes {
            try s.fs.write(inode: file.0, handle: file.1, offset: 4096, data: $0)
        })
        _ = try bytes(8192, 3).withUnsafeBytes { try s.fs.write(inode: file.0, handle: file.1, offset: 4096, data: $0) }
        XCTAssertTrue(try read(file, in: s) == bytes(4096, 1) + bytes(8192, 3) + bytes((64 << 10) - 12288, 1))
    }

    /// fsyncgate: after an fdatasync error the kernel may have dropped the dirty pages,
    /// and the next fdatasync succeeds. The error must stick: every later fsync fails.
    func testAFailedSyncFailsEveryLaterSync() throws {
        let s = try makeSetup()
        let synced = bytes(20_000, 4)
        let file = try syncedFile("f", synced, in: s)
        _ = try bytes(5000, 5).withUnsafeBytes { try s.fs.write(inode: file.0, handle: file.1, offset: 0, data: $0) }
        s.faults.inject(.init(.sync, error: .system(errno: EIO, call: "fdatasync image")))
        XCTAssertThrowsError(try s.fs.fsync(inode: file.0, handle: file.1, dataOnly: false))
        XCTAssertEqual(s.faults.failures(of: .sync), 1)
        // The disk answers again, but what the failed sync should have written may be gone.
        for _ in 0..<3 {
            XCTAssertThrowsError(try s.fs.fsync(inode: file.0, handle: file.1, dataOnly: true)) { error in
                guard case .io(let why) = error as? FSError else { return XCTFail("\(error)") }
                XCTAssertTrue(why.contains("every later fsync fails"), why)
            }
        }
        XCTAssertThrowsError(try s.fileSystem.store.syncAndReclaim(), "the maintenance sync fails too")
        // Reads and writes still work; nothing fsync'ed before the failure was lost.
        XCTAssertEqual(try read(file, in: s).prefix(5000), ArraySlice(bytes(5000, 5)))
        try assertSurvivesPowerCut(s, "f", synced)
    }

    /// ENOSPC from fdatasync (thin provisioning, NFS) is latched like EIO.
    func testAFailedSyncWithENOSPCIsLatchedToo() throws {
        let s = try makeSetup()
        let file = try syncedFile("f", bytes(100, 1), in: s)
        s.faults.inject(.init(.sync, error: .noSpace))
        XCTAssertThrowsError(try s.fs.fsync(inode: file.0, handle: file.1, dataOnly: false))
        XCTAssertThrowsError(try s.fs.fsync(inode: file.0, handle: file.1, dataOnly: false))
    }

    /// Freed blocks that can be neither punched nor zeroed (a failing disk) are not handed
    /// out: a power cut could show their old bytes to a new owner. They wait, and a
    /// later reclaim tries again.
    func testBlocksThatCannotBeClearedAreNotReused() throws {
        let s = try makeSetup()
        let doomed = try syncedFile("doomed", bytes(256 << 10, 6), in: s)
        s.fs.release(inode: doomed.0, handle: doomed.1)
        try s.fs.unlink(parent: .root, name: FileName(Array("doomed".utf8)))
        s.fs.forget(inode: doomed.0, lookups: 1)
        s.faults.inject(.init(.punch, error: .system(errno: EIO, call: "punch hole in image"), times: .max))
        s.faults.inject(.init(.write, error: .system(errno: EIO, call: "write image"), times: .max))
        try s.fileSystem.store.syncAndReclaim()
        try s.fileSystem.store.syncAndReclaim()
        XCTAssertGreaterThanOrEqual(s.fileSystem.store.statistics.quarantinedBytes, 256 << 10, "still waiting")
        s.faults.clear()
        try s.fileSystem.store.syncAndReclaim()
        try s.fileSystem.store.syncAndReclaim()
        XCTAssertEqual(s.fileSystem.store.statistics.quarantinedBytes, 0, "cleared once the disk answers")
        try s.fileSystem.store.checkInvariants()
    }

    /// A punch that fails leaves the freed blocks zeroed by writes instead: they still
    /// read as zeros when reused, and nothing breaks.
    func testAFailedPunchFallsBackToZeroing() throws {
        let s = try makeSetup()
        let doomed = try syncedFile("doomed", bytes(256 << 10, 6), in: s)
        s.fs.release(inode: doomed.0, handle: doomed.1)
        try s.fs.unlink(parent: .root, name: FileName(Array("doomed".utf8)))
        s.fs.forget(inode: doomed.0, lookups: 1)
        s.faults.inject(.init(.punch, error: .system(errno: EIO, call: "punch hole in image"), times: 100))
        try s.fileSystem.store.syncAndReclaim()
        try s.fileSystem.store.syncAndReclaim()
        XCTAssertGreaterThan(s.faults.failures(of: .punch), 0)
        let file = try syncedFile("new", [], in: s)
        try s.fs.fallocate(inode: file.0, handle: file.1, offset: 0, length: 256 << 10, mode: .allocate(keepSize: false))
        XCTAssertTrue(try read(file, in: s) == bytes(256 << 10, 0), "reused blocks read as zeros")
        try s.fileSystem.store.checkInvariants()
    }
}
