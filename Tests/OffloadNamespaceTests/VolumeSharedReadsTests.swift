import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace

/// Operations that only read shared format 2's namespace lock (docs/ARCHITECTURE.md,
/// "Step 7, second part"; since the seventh part they take none, `VolumeLockFreeReadsTests`):
/// while the lock is held shared (a change in progress), lookups, attributes, listings,
/// xattrs and reads of an open file on another thread answer, and so does a mkdir, while
/// a frame held alone waits; fsync and fsyncdir sync outside the lock, so requests go on
/// while the disk is slow. Before, every operation held one exclusive lock: a lookup preempted
/// while holding it stalled every request behind it, and an fsync held it for its whole
/// fdatasync. Under ThreadSanitizer (scripts/tsan), reads, changes and maintenance
/// commits run at once and agree with what the writer did.
final class VolumeSharedReadsTests: XCTestCase {
    static let capacity: UInt64 = 32 << 20
    let caller = RequestContext(uid: 0, gid: 0)

    func testReadsAnswerWhileTheLockIsSharedAndAFrameHeldAloneWaits() throws {
        let fileSystem = try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(Self.capacity)),
                                                     capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: caller)
        let (file, handle) = try fs.create(parent: directory.inode, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: caller)
        let bytes = [UInt8](repeating: 0x5A, count: 10_000)
        _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
        try fs.setxattr(inode: file.inode, name: Array("user.k".utf8), value: [1, 2, 3], mode: .createOrReplace)

        final class Answers: @unchecked Sendable {
            var failure: Error?
            var listed: [String] = []
            var read: [UInt8] = []
            var made: Attributes?
            var renamed = false
        }
        let answers = Answers()
        let readsDone = DispatchSemaphore(value: 0), madeDone = DispatchSemaphore(value: 0)
        let changeDone = DispatchSemaphore(value: 0)
        let caller = self.caller
        fs.lock.withReadLock {
            // This thread holds the lock shared, as a read in progress does.
            DispatchQueue.global().async {
                do {
                    XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("d")).inode, directory.inode)
                    XCTAssertEqual(try fs.getattr(inode: file.inode).size, UInt64(bytes.count))
                    let listing = try fs.opendir(inode: directory.inode)
                    answers.listed = try fs.readdirplus(inode: directory.inode, handle: listing, offset: 0, limit: 10)
                        .map { String(decoding: $0.entry.name, as: UTF8.self) }
                    fs.releasedir(inode: directory.inode, handle: listing)
                    XCTAssertEqual(try fs.getxattr(inode: file.inode, name: Array("user.k".utf8)), [1, 2, 3])
                    XCTAssertEqual(try fs.listxattr(inode: file.inode), [Array("user.k".utf8)])
                    answers.read = try fs.read(inode: file.inode, handle: handle, offset: 0, count: 20_000)
                    XCTAssertEqual(try fs.lseek(inode: file.inode, handle: handle, offset: 0, target: .data), 0)
                    try fs.flush(inode: file.inode, handle: handle)
                } catch {
                    answers.failure = error
                }
                readsDone.signal()
            }
            XCTAssertEqual(readsDone.wait(timeout: .now() + 20), .success, "a read waited for the read in progress")
            // A change of names in one directory shares the lock (`changingNames`).
            DispatchQueue.global().async {
                answers.made = try? fs.mkdir(parent: directory.inode, name: FileName("e"), mode: 0o755, context: caller)
                madeDone.signal()
            }
            XCTAssertEqual(madeDone.wait(timeout: .now() + 20), .success, "a mkdir waited for the read in progress")
            // A frame of drops holds it alone.
            DispatchQueue.global().async {
                answers.renamed = (try? fs.writeFrameHoldingTheLockAlone()) != nil
                changeDone.signal()
            }
            XCTAssertEqual(changeDone.wait(timeout: .now() + 0.3), .timedOut, "a frame held alone was written while the lock was shared")
        }
        XCTAssertEqual(changeDone.wait(timeout: .now() + 20), .success, "the frame was not written once the lock was let go")
        XCTAssertNil(answers.failure)
        XCTAssertEqual(answers.listed, [".", "..", "f"])
        XCTAssertTrue(answers.read == bytes)
        XCTAssertTrue(answers.renamed)
        XCTAssertEqual(try fs.lookup(parent: directory.inode, name: FileName("e")).inode, try XCTUnwrap(answers.made).inode)
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)
    }

    /// fsync and fsyncdir hold the namespace lock only to check their handle: while one is
    /// held at its sync, requests on another thread look up, change names and write. Before,
    /// fsync held the lock through its fdatasync and every request waited (the gate's
    /// timeout then fails the test).
    func testRequestsGoOnWhileAnFsyncWaitsForTheDisk() throws {
        let disk = CrashSimulatingStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: disk, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let (file, handle) = try fs.create(parent: .root, name: FileName("file"), mode: 0o644, flags: O_RDWR, context: caller)
        let first = [UInt8](repeating: 0x31, count: 64 << 10)
        _ = try first.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
        for syncing in ["fsync", "fsyncdir"] {
            let gate = ChangeGate(disk, holding: ChangeGate.sync)
            final class Outcome: @unchecked Sendable { var result: Result<Void, FSError>? }
            let outcome = Outcome(), synced = DispatchSemaphore(value: 0)
            let listing = try fs.opendir(inode: .root)
            DispatchQueue.global().async {
                outcome.result = Result { () throws(FSError) in
                    if syncing == "fsync" {
                        try fs.fsync(inode: file.inode, handle: handle, dataOnly: true)
                    } else {
                        try fs.fsyncdir(inode: .root, handle: listing, dataOnly: false)
                    }
                }
                synced.signal()
            }
            XCTAssertEqual(gate.reached.wait(timeout: .now() + 20), .success, "\(syncing) never synced")
            let made = try fs.mkdir(parent: .root, name: FileName("during-\(syncing)"), mode: 0o755, context: caller)
            XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("during-\(syncing)")).inode, made.inode)
            XCTAssertEqual(try [UInt8](repeating: 0x32, count: 4096).withUnsafeBytes {
                try fs.write(inode: file.inode, handle: handle, offset: 4096, data: $0)
            }, 4096)
            XCTAssertEqual(synced.wait(timeout: .now()), .timedOut, "\(syncing) finished before the requests ran")
            gate.open()
            XCTAssertEqual(synced.wait(timeout: .now() + 20), .success)
            XCTAssertFalse(gate.timedOut, "the requests waited for the held \(syncing)")
            XCTAssertNoThrow(try XCTUnwrap(outcome.result).get())
            fs.releasedir(inode: .root, handle: listing)
        }
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }

    /// Readers on two threads look up, stat, list and read xattrs of a directory nobody
    /// changes and of one a writer fills, renames in and empties, while a third thread
    /// runs the maintenance's commits: the stable answers never change, the changing
    /// directory's answers are each a state the writer passed through (a name found has
    /// the writer's size), and the end state is the writer's.
    func testReadsChangesAndCommitsAtOnceAgreeWithTheWriter() throws {
        let disk = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: disk, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let stable = try fs.mkdir(parent: .root, name: FileName("stable"), mode: 0o755, context: caller)
        let changing = try fs.mkdir(parent: .root, name: FileName("changing"), mode: 0o755, context: caller)
        var stableInodes: [InodeNumber] = []
        for i in 0..<40 {
            let (made, handle) = try fs.create(parent: stable.inode, name: FileName("s\(i)"), mode: 0o644, flags: O_RDWR,
                                               context: caller)
            _ = try [UInt8](repeating: UInt8(i), count: i * 10).withUnsafeBytes {
                try fs.write(inode: made.inode, handle: handle, offset: 0, data: $0)
            }
            fs.release(inode: made.inode, handle: handle)
            try fs.setxattr(inode: made.inode, name: Array("user.i".utf8), value: [UInt8(i)], mode: .createOrReplace)
            fs.forget(inode: made.inode, lookups: 1)
            stableInodes.append(made.inode)
        }
        let writes = 240, stableInodesKnown = stableInodes
        final class Flags: @unchecked Sendable {
            let done = PthreadMutex(false)
            let problems = PthreadMutex([String]())
            func note(_ problem: String) { problems.withLock { $0.append(problem) } }
            var isDone: Bool { done.withLock { $0 } }
        }
        let flags = Flags()
        let caller = self.caller
        let group = DispatchGroup()
        // The writer: creates with a size that names the file, renames every third one,
        // unlinks every fifth.
        DispatchQueue.global().async(group: group) {
            defer { flags.done.withLock { $0 = true } }
            do {
                for i in 0..<writes {
                    let (made, handle) = try fs.create(parent: changing.inode, name: FileName("w\(i)"), mode: 0o644,
                                                       flags: O_RDWR, context: caller)
                    _ = try [UInt8](repeating: 7, count: i + 1).withUnsafeBytes {
                        try fs.write(inode: made.inode, handle: handle, offset: 0, data: $0)
                    }
                    fs.release(inode: made.inode, handle: handle)
                    fs.forget(inode: made.inode, lookups: 1)
                    if i % 3 == 0 {
                        try fs.rename(parent: changing.inode, name: FileName("w\(i)"), newParent: changing.inode,
                                      newName: FileName("r\(i)"), flags: [])
                    }
                    if i % 5 == 0 { try fs.unlink(parent: changing.inode, name: FileName(i % 3 == 0 ? "r\(i)" : "w\(i)")) }
                }
            } catch {
                flags.note("writer: \(error)")
            }
        }
        DispatchQueue.global().async(group: group) {
            while !flags.isDone {
                do { _ = try fs.commitIfChanged() } catch { flags.note("commit: \(error)") }
                usleep(2_000)
            }
        }
        for reader in 0..<2 {
            DispatchQueue.global().async(group: group) {
                var round = 0
                while !flags.isDone || round < 2 {
                    round += 1
                    do {
                        for i in stride(from: reader, to: 40, by: 2) {
                            let found = try fs.lookup(parent: stable.inode, name: FileName("s\(i)"))
                            if found.inode != stableInodesKnown[i] || found.size != UInt64(i * 10) {
                                flags.note("s\(i): \(found.inode) of \(found.size) bytes")
                            }
                            if try fs.getxattr(inode: found.inode, name: Array("user.i".utf8)) != [UInt8(i)] {
                                flags.note("s\(i): its xattr changed")
                            }
                            fs.forget(inode: found.inode, lookups: 1)
                        }
                        let listing = try fs.opendir(inode: stable.inode)
                        let listed = try fs.readdir(inode: stable.inode, handle: listing, offset: 0, limit: 100)
                        fs.releasedir(inode: stable.inode, handle: listing)
                        if listed.count != 42 { flags.note("stable lists \(listed.count) entries") }
                        for i in stride(from: round % 7, to: writes, by: 7) {
                            for name in ["w\(i)", "r\(i)"] {
                                do throws(FSError) {
                                    let found = try fs.lookup(parent: changing.inode, name: FileName(name))
                                    // The lookup's reference goes back whatever the getattr
                                    // answers, as the kernel's FORGET would.
                                    defer { fs.forget(inode: found.inode, lookups: 1) }
                                    let size = try fs.getattr(inode: found.inode).size
                                    if size != UInt64(i + 1) && size != 0 { flags.note("\(name): \(size) bytes") }
                                } catch .notFound {
                                } catch .staleInode {
                                    // Unlinked and dropped between the lookup and the getattr.
                                } catch {
                                    flags.note("\(name): \(error)")
                                }
                            }
                        }
                    } catch {
                        flags.note("reader \(reader): \(error)")
                    }
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success, "the threads did not finish")
        XCTAssertEqual(flags.problems.withLock { $0 }, [])
        // The end state is the writer's.
        var expected = Set<String>()
        for i in 0..<writes where i % 5 != 0 { expected.insert(i % 3 == 0 ? "r\(i)" : "w\(i)") }
        let listing = try fs.opendir(inode: changing.inode)
        let names = try fs.readdir(inode: changing.inode, handle: listing, offset: 0, limit: 1000)
            .map { String(decoding: $0.name, as: UTF8.self) }.filter { $0 != "." && $0 != ".." }
        fs.releasedir(inode: changing.inode, handle: listing)
        XCTAssertEqual(Set(names), expected)
        XCTAssertEqual(fs.kernelReferences.withSnapshot { $0.counts.keys.filter { $0 != InodeNumber.root.rawValue }.count }, 2,
                       "only the two directories made by the test are still referenced")
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }
}
