import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import XCTest
@testable import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation

/// Format 2's reads take no namespace lock (`VolumeNamespace.reading`, `readingOpenFile`;
/// docs/ARCHITECTURE.md, "Step 7, seventh part"): while the lock is held alone (as a
/// generation's close, a rename across directories or a frame of drops holds it), lookups,
/// attributes, listings, xattrs and reads of an open file answer, where before they
/// queued behind it. A getxattr of "security.capability" marks its absence only if no
/// change of it came since it began. Also in scripts/tsan.
final class VolumeLockFreeReadsTests: XCTestCase {
    static let capacity: UInt64 = 32 << 20
    let caller = RequestContext(uid: 0, gid: 0)
    static let capability = Array("security.capability".utf8)
    static let capabilityValue: [UInt8] = [1, 0, 0, 2, 9, 9, 9, 9]

    /// A new file system with file "f" in its root, created and open.
    private func openNewFile() throws -> (VolumeFileSystem, Attributes, FileHandle) {
        let fileSystem = try makeFileSystem()
        let (file, handle) = try fileSystem.namespace.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR,
                                                             context: caller)
        return (fileSystem, file, handle)
    }

    private func makeFileSystem() throws -> VolumeFileSystem {
        try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(Self.capacity)),
                                    capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    /// Directory handles live in shards by directory (`VolumeHandles`): a handle answers
    /// for the directory it was opened on and no other, a releasedir that names another
    /// directory leaves it open, and numbers are never given out twice, files' and
    /// directories' from one sequence.
    func testADirectoryHandleAnswersOnlyForItsDirectory() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let a = try fs.mkdir(parent: .root, name: FileName("a"), mode: 0o755, context: caller).inode
        let b = try fs.mkdir(parent: .root, name: FileName("b"), mode: 0o755, context: caller).inode
        let onA = try fs.opendir(inode: a)
        let (file, fileHandle) = try fs.create(parent: b, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: caller)
        let onB = try fs.opendir(inode: b)
        XCTAssertEqual(Set([onA.rawValue, fileHandle.rawValue, onB.rawValue]).count, 3, "a handle number given out twice")
        XCTAssertEqual(try fs.readdir(inode: a, handle: onA, offset: 0, limit: 10).count, 2)
        XCTAssertThrowsError(try fs.readdir(inode: b, handle: onA, offset: 0, limit: 10)) {
            XCTAssertEqual($0 as? FSError, .badHandle)
        }
        XCTAssertThrowsError(try fs.readdir(inode: a, handle: onB, offset: 0, limit: 10)) {
            XCTAssertEqual($0 as? FSError, .badHandle)
        }
        fs.releasedir(inode: b, handle: onA)
        XCTAssertEqual(try fs.readdir(inode: a, handle: onA, offset: 0, limit: 10).count, 2, "closed by another directory's release")
        XCTAssertEqual(try fs.readdir(inode: b, handle: onB, offset: 0, limit: 10).count, 3)
        fs.releasedir(inode: a, handle: onA)
        XCTAssertThrowsError(try fs.readdir(inode: a, handle: onA, offset: 0, limit: 10)) {
            XCTAssertEqual($0 as? FSError, .badHandle)
        }
        fs.releasedir(inode: b, handle: onB)
        fs.release(inode: file.inode, handle: fileHandle)
        try fileSystem.close(meter: nil)
    }

    /// With the namespace lock held alone by the test, every read answers on another
    /// thread; a chmod waits until the test lets go.
    func testReadsAnswerWhileTheLockIsHeldAlone() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let caller = self.caller
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: caller)
        let (file, handle) = try fs.create(parent: directory.inode, name: FileName("f"), mode: 0o644, flags: O_RDWR,
                                           context: caller)
        let bytes = [UInt8](repeating: 0x5A, count: 10_000)
        _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
        try fs.setxattr(inode: file.inode, name: Array("user.k".utf8), value: [1, 2, 3], mode: .createOrReplace)
        let link = try fs.symlink(parent: directory.inode, name: FileName("l"), target: Array("f".utf8), context: caller)
        // A closed file, not cached: its capability is read from the tree.
        let (closed, closedHandle) = try fs.create(parent: directory.inode, name: FileName("c"), mode: 0o644,
                                                   flags: O_RDWR, context: caller)
        fs.release(inode: closed.inode, handle: closedHandle)
        _ = try fs.commitIfChanged()
        fs.lock.withWriteLock { fs.evictCommittedFiles() }
        XCTAssertNil(fs.cachedFiles[closed.inode.rawValue], "setup: the closed file is still cached")

        let outcome = StepOutcomes()
        let readsDone = DispatchSemaphore(value: 0), chmodDone = DispatchSemaphore(value: 0)
        fs.lock.withWriteLock {
            DispatchQueue.global().async {
                let steps: [(String, () throws -> Void)] = [
                    ("lookup", { XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("d")).inode, directory.inode) }),
                    ("getattr", { XCTAssertEqual(try fs.getattr(inode: file.inode).size, UInt64(bytes.count)) }),
                    ("readlink", { XCTAssertEqual(try fs.readlink(inode: link.inode), Array("f".utf8)) }),
                    ("readdir and readdirplus", {
                        let listing = try fs.opendir(inode: directory.inode)
                        defer { fs.releasedir(inode: directory.inode, handle: listing) }
                        XCTAssertEqual(try fs.readdir(inode: directory.inode, handle: listing, offset: 0, limit: 10).count, 5)
                        let plus = try fs.readdirplus(inode: directory.inode, handle: listing, offset: 0, limit: 10)
                        XCTAssertEqual(plus.compactMap(\.attributes).count, 3)
                        for entry in plus where entry.attributes != nil { fs.forget(inode: entry.entry.inode, lookups: 1) }
                    }),
                    ("getxattr", { XCTAssertEqual(try fs.getxattr(inode: file.inode, name: Array("user.k".utf8)), [1, 2, 3]) }),
                    ("getxattr of a capability, from the mark", {
                        XCTAssertThrowsError(try fs.getxattr(inode: file.inode, name: Self.capability))
                    }),
                    ("getxattr of a capability, from the tree", {
                        XCTAssertThrowsError(try fs.getxattr(inode: closed.inode, name: Self.capability))
                    }),
                    ("listxattr", { XCTAssertEqual(try fs.listxattr(inode: file.inode), [Array("user.k".utf8)]) }),
                    ("read", { XCTAssertTrue(try fs.read(inode: file.inode, handle: handle, offset: 0, count: 20_000) == bytes) }),
                    ("lseek", { XCTAssertEqual(try fs.lseek(inode: file.inode, handle: handle, offset: 0, target: .data), 0) }),
                    ("flush", { try fs.flush(inode: file.inode, handle: handle) }),
                ]
                for (name, step) in steps {
                    do { try step() } catch { outcome.fail("\(name): \(error)") }
                    outcome.finish(name)
                }
                readsDone.signal()
            }
            XCTAssertEqual(readsDone.wait(timeout: .now() + 20), .success,
                           "a read waited for the lock held alone; answered: \(outcome.finished.sorted())")
            DispatchQueue.global().async {
                do {
                    _ = try fs.setattr(inode: file.inode, changes: AttributeChanges(permissions: 0o600), context: caller)
                } catch {
                    outcome.fail("chmod: \(error)")
                }
                chmodDone.signal()
            }
            XCTAssertEqual(chmodDone.wait(timeout: .now() + 0.3), .timedOut, "a chmod ran while the lock was held alone")
        }
        XCTAssertEqual(chmodDone.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(outcome.failures, [])
        XCTAssertEqual(try fs.getattr(inode: file.inode).permissions, 0o600)
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)
    }

    /// A getxattr that loaded the mark's word before a setxattr of the capability and
    /// found no attribute (its reader taken before the setxattr's frame) does not mark
    /// the attribute absent after the setxattr: the mark compares the word. (This checks
    /// the compare; that a change counts itself after its frame, not before, is checked
    /// by the next test, which fails when the count moves into the change's body.)
    func testACapabilityAbsenceReadBeforeItsSetIsNotMarked() throws {
        let (fileSystem, file, handle) = try openNewFile()
        let fs = fileSystem.namespace
        let cached = try XCTUnwrap(fs.cachedFiles[file.inode.rawValue])
        try fs.setxattr(inode: file.inode, name: Self.capability, value: Self.capabilityValue, mode: .createOrReplace)
        try fs.removexattr(inode: file.inode, name: Self.capability)
        XCTAssertFalse(cached.lacksCapability, "a removexattr marked the attribute absent")
        // The getxattr's first half: the word, then the tree without the attribute.
        let word = cached.capabilityWord
        XCTAssertNil(try fs.reading { (reader) throws(FSError) -> [UInt8]? in try reader.xattr(file.inode.rawValue, name: Self.capability) })
        // The setxattr answers in between.
        try fs.setxattr(inode: file.inode, name: Self.capability, value: Self.capabilityValue, mode: .createOrReplace)
        // The getxattr's second half.
        cached.markCapabilityAbsent(ifStill: word)
        XCTAssertFalse(cached.lacksCapability, "an absence read before the setxattr was marked after it")
        XCTAssertEqual(try fs.getxattr(inode: file.inode, name: Self.capability), Self.capabilityValue)
        // Read after the change, an absence is marked as before.
        try fs.removexattr(inode: file.inode, name: Self.capability)
        XCTAssertThrowsError(try fs.getxattr(inode: file.inode, name: Self.capability))
        XCTAssertTrue(cached.lacksCapability, "an absence read after the last change was not marked")
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)
    }

    /// One thread sets and removes an open file's capability, checking after each answer
    /// that a getxattr sees it; two threads ask for it all the while (marking its absence
    /// when they find none), and a fourth commits, closing generations between a reader's
    /// taking and its read. A set capability is never answered absent.
    func testASetCapabilityIsNeverAnsweredAbsentBesideReadsAndCommits() throws {
        let (fileSystem, file, handle) = try openNewFile()
        let fs = fileSystem.namespace
        let done = ManagedAtomicFlag()
        let problems = StepOutcomes()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            defer { done.set() }
            for round in 0..<400 {
                do {
                    try fs.setxattr(inode: file.inode, name: Self.capability, value: Self.capabilityValue, mode: .createOrReplace)
                    if try fs.getxattr(inode: file.inode, name: Self.capability) != Self.capabilityValue {
                        problems.fail("round \(round): another value")
                    }
                } catch {
                    problems.fail("round \(round): after the setxattr: \(error)")
                }
                do { try fs.removexattr(inode: file.inode, name: Self.capability) } catch { problems.fail("removexattr: \(error)") }
            }
        }
        for _ in 0..<2 {
            DispatchQueue.global().async(group: group) {
                while !done.isSet { _ = try? fs.getxattr(inode: file.inode, name: Self.capability) }
            }
        }
        DispatchQueue.global().async(group: group) {
            while !done.isSet {
                do { _ = try fs.commitIfChanged() } catch { problems.fail("commit: \(error)") }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success, "the threads did not finish")
        XCTAssertEqual(problems.failures, [])
        fs.release(inode: file.inode, handle: handle)
        try fileSystem.close(meter: nil)
    }
}
