#if canImport(Glibc)
import Glibc
#endif
@testable import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import XCTest
import Synchronization
import Foundation

/// Changes not yet committed when file data fills the image (docs/ARCHITECTURE.md,
/// "Commits that fit a full image"). Through a mount of a 16 MiB image, 2,000 empty files
/// made, then `dd` until ENOSPC: the first chmod after it answered ENOSPC, the
/// maintenance's commit of those files found no room and failed the volume, and `rm` of
/// the big file and the unmount's commit failed with it.
final class VolumeFullImageMetadataTests: XCTestCase {
    /// Writes file "big" 1 MiB at a time until a write is refused: the bytes written, and
    /// the refusal.
    static func fill(_ fs: VolumeNamespace) throws -> (bytes: UInt64, refusal: FSError) {
        let chunk = [UInt8](repeating: 5, count: 1 << 20)
        let (big, handle) = try fs.create(parent: .root, name: FileName("big"), mode: 0o100644, flags: O_RDWR, context: .root)
        defer { fs.release(inode: big.inode, handle: handle) }
        var offset: UInt64 = 0
        while true {
            do {
                offset += UInt64(try chunk.withUnsafeBytes { try fs.write(inode: big.inode, handle: handle, offset: offset, data: $0) })
            } catch let error as FSError {
                return (offset, error)
            }
        }
    }

    /// A new file system on a 16 MiB image in memory, and that image.
    static func sixteenMiBFileSystem() throws -> (VolumeFileSystem, MemoryImageStorage) {
        let capacity: UInt64 = 16 << 20
        let storage = MemoryImageStorage(maximumBytes: Int(capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 16 << 20))
        return (fileSystem, storage)
    }

    /// A 16 MiB file system with an empty file `name` open read-write, then filled by
    /// `fill` (file "big") until a write was refused.
    static func fullImage(withOpenFile name: String) throws
        -> (VolumeFileSystem, MemoryImageStorage, Attributes, FileHandle) {
        let (fileSystem, storage) = try sixteenMiBFileSystem()
        let (file, handle) = try fileSystem.namespace.create(parent: .root, name: FileName(name), mode: 0o100644,
                                                             flags: O_RDWR, context: .root)
        _ = try fill(fileSystem.namespace)
        return (fileSystem, storage, file, handle)
    }

    /// Creates and closes an empty file `name` in `directory`.
    static func create(_ fs: VolumeNamespace, in directory: InodeNumber, _ name: String) throws(FSError) {
        let (file, handle) = try fs.create(parent: directory, name: FileName(name), mode: 0o100644, flags: O_RDWR,
                                           context: .root)
        fs.release(inode: file.inode, handle: handle)
    }

    func testDataLeavesTheUncommittedChangesRoomForTheirCommit() throws {
        let (fileSystem, storage) = try Self.sixteenMiBFileSystem()
        let fs = fileSystem.namespace
        let directory = try fs.mkdir(parent: .root, name: FileName("s"), mode: 0o40755, context: .root)
        for i in 0..<2000 { try Self.create(fs, in: directory.inode, "f\(i)") }
        // No commit: the 2,000 files wait in the open generation while data fills the image.
        let (offset, refusal) = try Self.fill(fs)
        XCTAssertEqual(refusal, .noSpace)
        XCTAssertGreaterThan(offset, 8 << 20, "setup: the big file did not fill the image")
        XCTAssertNil(fileSystem.volume.failure, "the fill failed the volume")
        let file = try fs.lookup(parent: directory.inode, name: FileName("f1999"))
        XCTAssertNoThrow(try fs.setattr(inode: file.inode, changes: AttributeChanges(permissions: 0o600), context: .root),
                         "a chmod on the full image")
        XCTAssertNoThrow(try fileSystem.volume.commit(), "the commit of the changes made before the image filled")
        XCTAssertNil(fileSystem.volume.failure)
        XCTAssertNoThrow(try fs.unlink(parent: .root, name: FileName("big")), "rm on the full image")
        try fileSystem.close(meter: nil)
        let reopened = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: 0),
                                                 memoryLimiter: MemoryLimiter(limitBytes: 16 << 20))
        XCTAssertFalse(reopened.isReadOnly)
        let kept = try reopened.namespace.lookup(parent: directory.inode, name: FileName("f1999"))
        XCTAssertEqual(kept.permissions & 0o777, 0o600)
        XCTAssertThrowsError(try reopened.namespace.lookup(parent: .root, name: FileName("big")))
        try reopened.close(meter: nil)
    }

    /// Creates on a full image, with the maintenance committing as a mount's does: each
    /// commit's new journal chain came out of the reserve, so the frames went on past the
    /// journal's quarter, and the tree grew into the reserve until a commit found nothing:
    /// the volume failed after 165 creates on a 16 MiB image. Now creates are refused
    /// once their commit would not fit the room left (`TreeVolume.admit`), and the rm
    /// after them runs. (That creates are not refused on an image with room is the first
    /// test's: its 2,000 creates on an empty 16 MiB image would throw.)
    func testCreatesOnAFullImageAreRefusedBeforeTheirCommitCannotFit() throws {
        let (fileSystem, _) = try Self.sixteenMiBFileSystem()
        let fs = fileSystem.namespace
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o40755, context: .root)
        _ = try Self.fill(fs)
        let errors = PthreadMutex<[FSError]>([])
        fileSystem.startMaintenance(interval: 0.01, journalBytes: nil, onWrite: nil) { error in errors.withLock { $0.append(error) } }
        var made = 0, refused = 0
        for i in 0..<1_000 where fileSystem.volume.failure == nil {
            do {
                try Self.create(fs, in: directory.inode, "a-name-that-grows-the-tree-\(i)")
                made += 1
            } catch {
                XCTAssertEqual(error, .noSpace)
                refused += 1
                usleep(1000)
            }
        }
        XCTAssertNil(fileSystem.volume.failure, "after \(made) creates and \(refused) refusals")
        XCTAssertEqual(errors.withLock { $0 }, [], "the maintenance's commits")
        XCTAssertGreaterThan(refused, 0, "setup: the image was not full")
        XCTAssertNoThrow(try fs.unlink(parent: .root, name: FileName("big")), "rm on the full image")
        try fileSystem.close(meter: nil)
    }

    /// Writes refused on a full image (2 MiB each, more than the fill leaves) give their
    /// blocks back free at once and count as no release: after the first refusal's reclaim
    /// found nothing, the next refusals commit nothing, and the free space after each is
    /// what it was before it. Before, a refused write had written its first blocks before
    /// the allocation that failed, let them go as a release (free only after the commits of
    /// the reuse rule), and so every refusal ran a reclaim of up to sixteen commits
    /// (`scripts/full-image-probe`'s `write` case: 13-17 ms a refusal).
    func testWritesRefusedOnAFullImageGiveTheirBlocksBackAndCommitNothingAfterTheFirst() throws {
        let (fileSystem, storage, more, handle) = try Self.fullImage(withOpenFile: "more")
        let fs = fileSystem.namespace, volume = fileSystem.volume
        // More than the free space the fill leaves (under 1 MiB), whatever a commit gives.
        let chunk = [UInt8](repeating: 9, count: 2 << 20)
        let files = try volume.fileBlocks()
        var generations: [UInt64] = []
        for k in 0..<20 {
            let free = files.availableBytes
            // Free blocks the write takes before its refusal (else it would take none).
            XCTAssertGreaterThan(free, 0, "write \(k): no free block to take")
            do {
                _ = try chunk.withUnsafeBytes { try fs.write(inode: more.inode, handle: handle, offset: 0, data: $0) }
                return XCTFail("write \(k) was not refused (setup: the image is not full)")
            } catch let error as FSError {
                XCTAssertEqual(error, .noSpace)
            }
            generations.append(volume.committedGeneration)
            if k > 0 {
                XCTAssertEqual(files.availableBytes, free, "write \(k): its blocks are not free again")
            }
        }
        XCTAssertEqual(Set(generations.dropFirst()), [generations[0]], "a refused write after the first committed")
        XCTAssertEqual(try fs.getattr(inode: more.inode).size, 0, "a refused write changed the file")
        fs.release(inode: more.inode, handle: handle)
        // A release: the big file's rm (and the kernel's FORGET of it), and the write runs.
        let big = try fs.lookup(parent: .root, name: FileName("big")).inode
        try fs.unlink(parent: .root, name: FileName("big"))
        fs.forget(inode: big, lookups: 2)
        let reopened = try fs.open(inode: more.inode, flags: O_RDWR)
        XCTAssertEqual(try chunk.withUnsafeBytes { try fs.write(inode: more.inode, handle: reopened, offset: 0, data: $0) },
                       chunk.count)
        fs.release(inode: more.inode, handle: reopened)
        XCTAssertNil(volume.failure)
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(storage)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }

    /// Two writers on a full image: a larger one holds every free block (taken, none written
    /// yet) while a small write is refused; the larger one is refused in turn and gives
    /// its blocks back (not a release), and the small one, which waited for the namespace
    /// lock alone to reclaim after a reclaim that found nothing, runs once more and is
    /// answered (`FruitlessReclaim.blocksGivenBack`). Without that second try it answered
    /// ENOSPC with the room there. The larger writer is played by the test: the namespace
    /// lock shared, the blocks taken through the volume's file blocks, given back as a
    /// refused write gives them.
    func testASmallWriteRefusedWhileALargerOneHeldTheBlocksRunsOnceTheyAreGivenBack() throws {
        let (fileSystem, storage, small, handle) = try Self.fullImage(withOpenFile: "small")
        let fs = fileSystem.namespace, volume = fileSystem.volume
        // A refused write more than the free space: its reclaim finds nothing (or one
        // before it did), and nothing waits for a commit.
        let large = [UInt8](repeating: 9, count: 2 << 20)
        XCTAssertThrowsError(try large.withUnsafeBytes { try fs.write(inode: small.inode, handle: handle, offset: 0, data: $0) })
        XCTAssertTrue(volume.waitsForNoCommit, "setup: a commit would settle something")
        XCTAssertFalse(volume.holdsFreeBlocksForCommits, "setup: blocks held for commits")
        let files = try volume.fileBlocks()
        XCTAssertGreaterThanOrEqual(files.availableBytes, 8 << 10, "setup: no room for the small write")
        // The larger writer, mid-write.
        let hold = fs.lock.lockShared()
        var taken: [Range<UInt64>] = []
        for size in [64 << 10, 4 << 10] {
            while let blocks = try? files.allocate(byteCount: size, hint: nil) { taken.append(blocks) }
        }
        XCTAssertEqual(files.availableBytes, 0)
        let answer = Mutex<Result<Int, FSError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let writer = Thread {
            let bytes = [UInt8](repeating: 4, count: 4 << 10)
            let result: Result<Int, FSError>
            do {
                result = .success(try bytes.withUnsafeBytes { try fs.write(inode: small.inode, handle: handle, offset: 0, data: $0) })
            } catch let error as FSError {
                result = .failure(error)
            } catch {
                result = .failure(.io("\(error)"))
            }
            answer.withLock { $0 = result }
            done.signal()
        }
        writer.start()
        // The small write is refused and waits for the lock alone (to reclaim).
        let deadline = Date().addingTimeInterval(10)
        while !fs.lock.isHeldExclusively, answer.withLock({ $0 }) == nil, Date() < deadline { usleep(1_000) }
        XCTAssertTrue(fs.lock.isHeldExclusively, "the small write did not wait for the namespace lock alone")
        XCTAssertNil(answer.withLock { $0 }, "the small write was answered while the blocks were held")
        for blocks in taken { files.giveBackUnwritten(blocks) }
        fs.lock.unlockShared(hold)
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        switch answer.withLock({ $0 }) {
        case .success(let count): XCTAssertEqual(count, 4 << 10)
        case .failure(let error): XCTFail("the small write was refused: \(error)")
        case nil: XCTFail("no answer")
        }
        fs.release(inode: small.inode, handle: handle)
        XCTAssertNil(volume.failure)
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(storage)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }

    /// A change refused on a full image runs after a reclaim (`afterReclaim`: up to sixteen
    /// commits with the namespace lock held alone). Once one found nothing, the changes
    /// refused after it answer ENOSPC at once (twenty in a row here, none committing),
    /// until something is released (here an rm, after which a create works again) or a
    /// second has passed (`FruitlessReclaim`).
    func testChangesRefusedAfterAReclaimThatFoundNothingRunNoneUntilSomethingIsReleased() throws {
        let (fileSystem, _) = try Self.sixteenMiBFileSystem()
        let fs = fileSystem.namespace, volume = fileSystem.volume
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o40755, context: .root)
        XCTAssertFalse(volume.waitsForNoCommit, "the mkdir waits for a commit")
        _ = try Self.fill(fs)
        func create(_ name: String) throws(FSError) { try Self.create(fs, in: directory.inode, name) }
        // Creates until twenty are refused one after another: the first of those ran a
        // reclaim that found nothing (creates are admitted again for a while after the
        // first refusals: the reclaim's commits give back old journal chains).
        var consecutive: [UInt64] = []   // the committed generation after each refusal in a row
        var made = 0
        for i in 0..<5_000 where consecutive.count < 20 {
            do throws(FSError) {
                try create("f\(i)")
                made += 1
                consecutive = []
            } catch {
                XCTAssertEqual(error, .noSpace)
                consecutive.append(volume.committedGeneration)
            }
        }
        XCTAssertEqual(consecutive.count, 20, "setup: creates were not refused one after another (\(made) made)")
        let afterFirst = consecutive.first ?? 0
        XCTAssertEqual(Set(consecutive), [afterFirst], "a refusal after a reclaim that found nothing committed again")
        XCTAssertTrue(volume.waitsForNoCommit, "what those refusals found: nothing a commit would settle")
        // A second later, a refusal reclaims again (its commits may then let the create in).
        usleep(1_100_000)
        do throws(FSError) { try create("later") } catch { XCTAssertEqual(error, .noSpace) }
        XCTAssertGreaterThan(volume.committedGeneration, afterFirst, "no reclaim a second later")
        // A release (an rm, and the kernel's FORGET): the next refusal reclaims, and the
        // create runs.
        let big = try fs.lookup(parent: .root, name: FileName("big")).inode
        try fs.unlink(parent: .root, name: FileName("big"))
        fs.forget(inode: big, lookups: 2)
        XCTAssertNoThrow(try create("after-rm"), "a create after rm of the big file")
        XCTAssertNil(volume.failure)
        try fileSystem.close(meter: nil)
    }
}
