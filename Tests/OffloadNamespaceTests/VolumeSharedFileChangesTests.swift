import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix
@testable import OffloadNamespace

/// Changes of an open file's data (write, fallocate, copy_file_range) share format 2's
/// namespace lock (docs/ARCHITECTURE.md, "Step 7, third part"): while another operation
/// holds it shared, they answer, so writes to different files run at once and stats do
/// not wait for them; under ThreadSanitizer (scripts/tsan), writers of several files,
/// readers, the maintenance's commits and commits at the journal's budget run at once,
/// and every file reads as its writer left it, before and after reopening the image.
final class VolumeSharedFileChangesTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20
    let caller = RequestContext(uid: 0, gid: 0)

    /// With the lock held shared by the test (as a change in progress holds it), a write,
    /// an fallocate, a copy_file_range and a truncate on another thread answer; a frame
    /// written holding the lock alone (as the drops of forgotten inodes are) waits. Before,
    /// each of the changes held the lock alone, and the test fails at the semaphore's
    /// timeout.
    func testFileChangesAnswerWhileAReadHoldsTheLock() throws {
        let fileSystem = try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(Self.capacity)),
                                                     capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let (source, sourceHandle) = try fs.create(parent: .root, name: FileName("source"), mode: 0o644, flags: O_RDWR,
                                                   context: caller)
        let (target, targetHandle) = try fs.create(parent: .root, name: FileName("target"), mode: 0o644, flags: O_RDWR,
                                                   context: caller)
        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        final class Outcome: @unchecked Sendable { var failure: Error?; var changed: Attributes? }
        let outcome = Outcome()
        let changesDone = DispatchSemaphore(value: 0), aloneDone = DispatchSemaphore(value: 0)
        let caller = self.caller
        fs.lock.withReadLock {
            DispatchQueue.global().async {
                do {
                    _ = try bytes.withUnsafeBytes { try fs.write(inode: source.inode, handle: sourceHandle, offset: 0, data: $0) }
                    try fs.fallocate(inode: target.inode, handle: targetHandle, offset: 0, length: 1 << 20, mode: .allocate(keepSize: true))
                    let copied = try fs.copyFileRange(from: source.inode, sourceHandle: sourceHandle, sourceOffset: 4096,
                                                      to: target.inode, destinationHandle: targetHandle,
                                                      destinationOffset: 8192, length: 100_000)
                    XCTAssertEqual(copied, 100_000)
                    // A truncate to the size the source has (it marks the times).
                    outcome.changed = try fs.setattr(inode: source.inode, changes: AttributeChanges(size: 200_000), context: caller)
                } catch {
                    outcome.failure = error
                }
                changesDone.signal()
            }
            XCTAssertEqual(changesDone.wait(timeout: .now() + 20), .success, "a file change waited for the read in progress")
            DispatchQueue.global().async {
                do { try fs.writeFrameHoldingTheLockAlone() } catch { outcome.failure = error }
                aloneDone.signal()
            }
            XCTAssertEqual(aloneDone.wait(timeout: .now() + 0.3), .timedOut, "a frame held alone was written while a change held the lock")
        }
        XCTAssertEqual(aloneDone.wait(timeout: .now() + 20), .success)
        XCTAssertNil(outcome.failure)
        XCTAssertEqual(outcome.changed?.size, 200_000, "a truncate to the size the file has")
        XCTAssertTrue(try fs.read(inode: source.inode, handle: sourceHandle, offset: 0, count: 300_000) == bytes)
        let copied = try fs.read(inode: target.inode, handle: targetHandle, offset: 0, count: 200_000)
        XCTAssertEqual(copied.count, 8192 + 100_000)
        XCTAssertTrue(copied[..<8192].allSatisfy { $0 == 0 })
        XCTAssertTrue(Array(copied[8192...]) == Array(bytes[4096..<104_096]))
        XCTAssertEqual(try fs.getattr(inode: target.inode).size, 108_192)
        fs.release(inode: source.inode, handle: sourceHandle)
        fs.release(inode: target.inode, handle: targetHandle)
        try fileSystem.close(meter: nil)
    }

    /// Two threads append to one file opened with O_APPEND while a third writes another
    /// file: each append lands after the one before, none over another (the size read and
    /// the write are one step under the file's append lock, since writes share the
    /// namespace lock).
    func testAppendsToOneFileFromTwoThreadsKeepEveryByte() throws {
        let fileSystem = try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(Self.capacity)),
                                                     capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace
        let (log, _) = try fs.create(parent: .root, name: FileName("log"), mode: 0o644, flags: O_RDWR, context: caller)
        let (other, otherHandle) = try fs.create(parent: .root, name: FileName("other"), mode: 0o644, flags: O_RDWR,
                                                 context: caller)
        let appends = 400, recordBytes = 1_000
        let handles = try (0..<2).map { _ in try fs.open(inode: log.inode, flags: O_WRONLY | O_APPEND) }
        let failures = PthreadMutex([String]())
        DispatchQueue.concurrentPerform(iterations: 3) { thread in
            do {
                for i in 0..<appends {
                    let record = [UInt8](repeating: UInt8(thread + 1), count: recordBytes)
                    if thread < 2 {
                        _ = try record.withUnsafeBytes {
                            try fs.write(inode: log.inode, handle: handles[thread], offset: 0, data: $0)
                        }
                    } else {
                        _ = try record.withUnsafeBytes {
                            try fs.write(inode: other.inode, handle: otherHandle, offset: UInt64(i * recordBytes), data: $0)
                        }
                    }
                }
            } catch {
                failures.withLock { $0.append("thread \(thread): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        let reader = try fs.open(inode: log.inode, flags: O_RDONLY)
        let bytes = try fs.read(inode: log.inode, handle: reader, offset: 0, count: 2 * appends * recordBytes + 1)
        XCTAssertEqual(bytes.count, 2 * appends * recordBytes, "appends landed over one another")
        for record in 0..<bytes.count / recordBytes {
            let slice = bytes[record * recordBytes..<(record + 1) * recordBytes]
            XCTAssertTrue(slice.allSatisfy { $0 == slice.first! } && (slice.first == 1 || slice.first == 2),
                          "record \(record) is torn")
        }
        XCTAssertEqual(bytes.filter { $0 == 1 }.count, appends * recordBytes)
        for handle in handles + [reader] { fs.release(inode: log.inode, handle: handle) }
        fs.release(inode: other.inode, handle: otherHandle)
        try fileSystem.close(meter: nil)
    }

    /// Three writers, each on a file of its own (overwrites, extensions, small writes kept
    /// in RAM, fallocate and copy_file_range from a shared source), a reader statting and
    /// reading the files, and the maintenance's commits, at once; the journal's budget is
    /// small, so writes also start commits of their own (`commitIfOverBudget`). Every
    /// file then reads as its writer's model, and again after the image is closed and
    /// opened, which checks clean.
    func testWritersOfDifferentFilesReadersAndCommitsAtOnce() throws {
        let disk = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: disk, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 256 << 10))
        fileSystem.volume.limits.journalBytes = 48 << 10
        let fs = fileSystem.namespace
        let (shared, sharedHandle) = try fs.create(parent: .root, name: FileName("shared"), mode: 0o644, flags: O_RDWR,
                                                   context: caller)
        let sharedBytes = (0..<65_536).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
        _ = try sharedBytes.withUnsafeBytes { try fs.write(inode: shared.inode, handle: sharedHandle, offset: 0, data: $0) }
        let writers = 3, steps = 150
        var files: [(inode: InodeNumber, handle: FileHandle)] = []
        for w in 0..<writers {
            let (made, handle) = try fs.create(parent: .root, name: FileName("w\(w)"), mode: 0o644, flags: O_RDWR,
                                               context: caller)
            files.append((made.inode, handle))
        }
        final class State: @unchecked Sendable {
            let done = PthreadMutex(0)
            let problems = PthreadMutex([String]())
            let models: PthreadMutex<[[UInt8]]>
            init(writers: Int) { models = PthreadMutex(Array(repeating: [], count: writers)) }
            func note(_ problem: String) { problems.withLock { $0.append(problem) } }
            var writersDone: Bool { done.withLock { $0 } == 3 }
        }
        let state = State(writers: writers)
        let group = DispatchGroup()
        let filesKnown = files
        for w in 0..<writers {
            DispatchQueue.global().async(group: group) {
                defer { state.done.withLock { $0 += 1 } }
                var rng = SplitMix64(seed: UInt64(40 + w))
                var model: [UInt8] = []
                let file = filesKnown[w]
                do {
                    for step in 0..<steps {
                        let choice = rng.next() % 10
                        if choice < 6 {
                            // A write: small ones stay in RAM, large ones go to the image.
                            let count = rng.next() % 3 == 0 ? Int(rng.next() % 200_000) + 1 : Int(rng.next() % 3_000) + 1
                            let offset = Int(rng.next() % UInt64(model.count + 50_000))
                            let value = UInt8(truncatingIfNeeded: step &* 13 &+ w)
                            let bytes = [UInt8](repeating: value, count: count)
                            _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: file.handle,
                                                                         offset: UInt64(offset), data: $0) }
                            if model.count < offset + count { model += [UInt8](repeating: 0, count: offset + count - model.count) }
                            model.replaceSubrange(offset..<offset + count, with: bytes)
                        } else if choice < 8 {
                            // A copy from the shared source.
                            let from = Int(rng.next() % 60_000), count = Int(rng.next() % 5_000) + 1
                            let to = Int(rng.next() % UInt64(model.count + 10_000))
                            let copied = try fs.copyFileRange(from: shared.inode, sourceHandle: sharedHandle,
                                                              sourceOffset: UInt64(from), to: file.inode,
                                                              destinationHandle: file.handle, destinationOffset: UInt64(to),
                                                              length: UInt64(count))
                            let taken = min(count, sharedBytes.count - from)
                            if copied != UInt64(taken) { state.note("w\(w): copied \(copied) of \(taken)") }
                            if model.count < to + taken { model += [UInt8](repeating: 0, count: to + taken - model.count) }
                            model.replaceSubrange(to..<to + taken, with: sharedBytes[from..<from + taken])
                        } else {
                            // Punch a hole, keeping the size.
                            guard !model.isEmpty else { continue }
                            let offset = Int(rng.next() % UInt64(model.count)), count = Int(rng.next() % 20_000) + 1
                            try fs.fallocate(inode: file.inode, handle: file.handle, offset: UInt64(offset),
                                             length: UInt64(count), mode: .punchHole)
                            let end = min(model.count, offset + count)
                            model.replaceSubrange(offset..<end, with: [UInt8](repeating: 0, count: end - offset))
                        }
                    }
                } catch {
                    state.note("writer \(w): \(error)")
                }
                state.models.withLock { $0[w] = model }
            }
        }
        DispatchQueue.global().async(group: group) {
            while !state.writersDone {
                do { _ = try fs.commitIfChanged() } catch { state.note("commit: \(error)") }
                usleep(3_000)
            }
        }
        DispatchQueue.global().async(group: group) {
            var round = 0
            while !state.writersDone {
                round += 1
                let file = filesKnown[round % writers]
                do {
                    let size = try fs.getattr(inode: file.inode).size
                    let read = try fs.read(inode: file.inode, handle: file.handle, offset: 0, count: 64 << 10)
                    if read.count > size { state.note("read \(read.count) bytes of a \(size)-byte file") }
                    _ = try fs.lookup(parent: .root, name: FileName("w\(round % writers)"))
                    fs.forget(inode: file.inode, lookups: 1)
                } catch {
                    state.note("reader: \(error)")
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 300), .success, "the threads did not finish")
        XCTAssertEqual(state.problems.withLock { $0 }, [])
        for w in 0..<writers {
            let model = state.models.withLock { $0[w] }
            XCTAssertEqual(try fs.getattr(inode: files[w].inode).size, UInt64(model.count), "w\(w)")
            XCTAssertTrue(try fs.read(inode: files[w].inode, handle: files[w].handle, offset: 0, count: model.count + 1) == model,
                          "w\(w) does not read as its writer wrote it")
            fs.release(inode: files[w].inode, handle: files[w].handle)
        }
        fs.release(inode: shared.inode, handle: sharedHandle)
        XCTAssertGreaterThan(fileSystem.volume.current.generation, 5, "too few commits ran to test anything")
        try fileSystem.close(meter: nil)

        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
        let reopened = try VolumeFileSystem.open(storage: disk, capacity: .set(Self.capacity),
                                                 memoryLimiter: MemoryLimiter(limitBytes: 256 << 10))
        let again = reopened.namespace
        for w in 0..<writers {
            let model = state.models.withLock { $0[w] }
            let found = try again.lookup(parent: .root, name: FileName("w\(w)"))
            let handle = try again.open(inode: found.inode, flags: O_RDONLY)
            XCTAssertTrue(try again.read(inode: found.inode, handle: handle, offset: 0, count: model.count + 1) == model,
                          "w\(w) reads differently after reopening")
            again.release(inode: found.inode, handle: handle)
        }
        try reopened.close(meter: nil)
    }
}
