import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace

/// The maintenance's commit runs outside the namespace lock (docs/ARCHITECTURE.md, "Step 7,
/// first part"): while it is held at its sync, requests on another thread look names up,
/// read attributes, list directories, create directories and write a file's new blocks,
/// and what they did is in the
/// image after the commit, the next one and a reopening. Before, every commit of a mount
/// held the namespace lock from start to end: each request waited for the whole commit
/// (the stat p99.9 under commits in docs/BENCHMARKS.md), and file writes waited for the
/// commit's sync, which holds the space lock no longer.
final class VolumeCommitOffTheLockTests: XCTestCase {
    static let capacity: UInt64 = 32 << 20

    private func makeFileSystem(on disk: CrashSimulatingStorage) throws -> VolumeFileSystem {
        try VolumeFileSystem.create(storage: disk, capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    /// Unmounts `fileSystem` and checks the image clean.
    private func closeAndCheck(_ fileSystem: VolumeFileSystem, _ disk: CrashSimulatingStorage) throws {
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }

    private func reopen(_ disk: CrashSimulatingStorage) throws -> VolumeFileSystem {
        try VolumeFileSystem.open(storage: disk, capacity: .kept(default: 0), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    func testRequestsGoOnWhileTheMaintenanceCommitIsHeldAtItsSync() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: disk)
        let fs = fileSystem.namespace
        let caller = RequestContext(uid: 0, gid: 0)
        let before = try fs.mkdir(parent: .root, name: FileName("before"), mode: 0o755, context: caller)
        let (file, handle) = try fs.create(parent: .root, name: FileName("file"), mode: 0o644, flags: O_RDWR, context: caller)
        let first = [UInt8](repeating: 0x31, count: 256 << 10), second = [UInt8](repeating: 0x32, count: 256 << 10)
        XCTAssertEqual(try first.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }, first.count)
        let generation = fileSystem.volume.current.generation

        // The maintenance's commit, held at its first sync until released.
        let gate = ChangeGate(disk, holding: ChangeGate.sync)
        final class Outcome: @unchecked Sendable { var report: Result<VolumeCommitReport?, Error>? }
        let outcome = Outcome(), committed = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            outcome.report = Result { try fs.commitIfChanged() }
            committed.signal()
        }
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "the commit never synced")

        // Held: these would wait for the whole commit if it held the namespace lock (the
        // gate then times out, and `timedOut` says so).
        let started = DispatchTime.now()
        XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("before")).inode, before.inode)
        XCTAssertEqual(try fs.getattr(inode: before.inode).kind, .directory)
        let during = try fs.mkdir(parent: .root, name: FileName("during"), mode: 0o700, context: caller)
        XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("during")).inode, during.inode)
        let directory = try fs.opendir(inode: .root)
        let names = try fs.readdir(inode: .root, handle: directory, offset: 0, limit: 100).map { String(decoding: $0.name, as: UTF8.self) }
        fs.releasedir(inode: .root, handle: directory)
        // A write that takes new blocks: the commit's sync runs without the space lock.
        XCTAssertEqual(try second.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: UInt64(first.count), data: $0) },
                       second.count)
        let waited = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        XCTAssertTrue(Set(names).isSuperset(of: ["before", "during"]), "\(names)")
        XCTAssertEqual(committed.wait(timeout: .now()), .timedOut, "the commit finished before the requests ran")

        gate.open()
        XCTAssertEqual(committed.wait(timeout: .now() + 20), .success)
        XCTAssertFalse(gate.timedOut, "the requests waited for the held commit (\(waited) s)")
        let report = try XCTUnwrap(try XCTUnwrap(outcome.report).get(), "the maintenance committed nothing")
        XCTAssertEqual(report.generation, generation + 1)
        // The directory made during the commit is in the next generation: still there.
        XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("during")).inode, during.inode)
        XCTAssertNotNil(try fs.commitIfChanged())
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)

        let reopened = try reopen(disk)
        XCTAssertEqual(try reopened.namespace.lookup(parent: .root, name: FileName("during")).inode, during.inode)
        XCTAssertEqual(try reopened.namespace.lookup(parent: .root, name: FileName("before")).inode, before.inode)
        let readBack = try reopened.namespace.open(inode: file.inode, flags: O_RDONLY)
        let bytes = try reopened.namespace.read(inode: file.inode, handle: readBack, offset: 0, count: first.count + second.count)
        XCTAssertTrue(bytes == first + second, "the file written during the commit reads back otherwise")
        reopened.namespace.release(inode: file.inode, handle: readBack)
        try closeAndCheck(reopened, disk)
    }

    /// An operation's own commit, when its change brought the open generation to the
    /// volume's limits, closes the generation with the namespace lock held alone and
    /// commits outside it (docs/ARCHITECTURE.md, "Step 7, eighth part"): while that commit
    /// is held at its sync, a chmod and a setxattr on another thread answer, in the next
    /// generation, and both are in the image after a reopening. Before, the whole commit
    /// ran with the lock held alone, and every change waited for it.
    func testChangesGoOnWhileAnOperationsOwnCommitIsHeldAtItsSync() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: disk)
        let fs = fileSystem.namespace
        let caller = RequestContext(uid: 0, gid: 0)
        let kept = try fs.mkdir(parent: .root, name: FileName("kept"), mode: 0o755, context: caller)
        while try fs.commitIfChanged() != nil {}
        let generation = fileSystem.volume.current.generation
        // A mkdir changes two objects (the root and the new directory): it reaches the limit.
        fileSystem.volume.limits = TreeVolume.Limits(journalBytes: 64 << 20, dirtyObjects: 2)

        let gate = ChangeGate(disk, holding: ChangeGate.sync)
        final class Outcome: @unchecked Sendable { var made: Result<Attributes, Error>? }
        let outcome = Outcome(), answered = DispatchSemaphore(value: 0)
        let thread = Thread {
            outcome.made = Result { try fs.mkdir(parent: .root, name: FileName("over"), mode: 0o755, context: caller) }
            answered.signal()
        }
        thread.start()
        XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "the mkdir's own commit never synced")

        // One object each in the next generation: under the limit, so neither commits.
        let started = DispatchTime.now()
        _ = try fs.setattr(inode: kept.inode, changes: AttributeChanges(permissions: 0o700), context: caller)
        try fs.setxattr(inode: kept.inode, name: Array("user.during".utf8), value: Array("held".utf8), mode: .createOrReplace)
        let waited = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        XCTAssertEqual(answered.wait(timeout: .now()), .timedOut, "the mkdir's commit finished before the changes ran")

        gate.open()
        XCTAssertEqual(answered.wait(timeout: .now() + 20), .success)
        XCTAssertFalse(gate.timedOut, "the changes waited for the held commit (\(waited) s)")
        let over = try XCTUnwrap(outcome.made).get()
        XCTAssertEqual(fileSystem.volume.current.generation, generation + 1, "the mkdir's change did not commit")
        fileSystem.volume.limits = TreeVolume.Limits()
        try fileSystem.close(meter: nil)

        let reopened = try reopen(disk)
        XCTAssertEqual(try reopened.namespace.lookup(parent: .root, name: FileName("over")).inode, over.inode)
        XCTAssertEqual(try reopened.namespace.getattr(inode: kept.inode).permissions, 0o700)
        XCTAssertEqual(try reopened.namespace.getxattr(inode: kept.inode, name: Array("user.during".utf8)),
                       Array("held".utf8))
        try closeAndCheck(reopened, disk)
    }

    /// That commit's close still waits for the changes in flight: while the test holds the
    /// namespace lock shared (as a file's change holds it between its block calls and its
    /// frame), a mkdir that reaches the limits writes its frame but closes no generation,
    /// and the close and commit follow once the test lets go. A close made without the
    /// lock would let a change's block calls and its frame fall in different generations
    /// (the touched marks' rule, "Files on format 2").
    func testAnOperationsOwnCloseWaitsForTheChangesInFlight() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: disk)
        defer { try? fileSystem.close(meter: nil) }
        let fs = fileSystem.namespace, volume = fileSystem.volume
        let caller = RequestContext(uid: 0, gid: 0)
        while try fs.commitIfChanged() != nil {}
        let generation = volume.current.generation, open = volume.delta.openNumber
        volume.limits = TreeVolume.Limits(journalBytes: 64 << 20, dirtyObjects: 2)
        let answered = DispatchSemaphore(value: 0)
        fs.lock.withReadLock { () -> Void in
            Thread {
                _ = try? fs.mkdir(parent: .root, name: FileName("over"), mode: 0o755, context: caller)
                answered.signal()
            }.start()
            let deadline = DispatchTime.now() + 10
            while !fs.lock.isHeldExclusively && DispatchTime.now() < deadline { usleep(100) }
            XCTAssertTrue(fs.lock.isHeldExclusively, "the mkdir's commit never asked for the lock alone")
            usleep(100_000)
            XCTAssertEqual(answered.wait(timeout: .now()), .timedOut, "the mkdir answered before its commit")
            XCTAssertEqual(volume.delta.openNumber, open, "a generation closed while a change was in flight")
            XCTAssertEqual(volume.current.generation, generation)
        }
        XCTAssertEqual(answered.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(volume.current.generation, generation + 1, "the mkdir's change did not commit")
        volume.limits = TreeVolume.Limits()
        XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("over")).kind, .directory)
    }
}
