import Dispatch
import XCTest
@testable import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Format 2's changes of one inode share the namespace lock and hold the inode's lock
/// (`VolumeNamespace.changingInodes`, docs/ARCHITECTURE.md, "Step 7, sixth part"): a
/// setattr without a size, setxattr, removexattr, link, open (with O_TRUNC too), the
/// create that opens an existing name, and release, on different files, run at once; on
/// one file they take turns. Also in scripts/tsan.
final class VolumeInodeChangesTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20
    let caller = RequestContext(uid: 0, gid: 0)

    /// File "f" in the root, made with `bytes` written and closed (its kernel reference kept).
    private func writtenFile(in fs: VolumeNamespace, bytes: [UInt8]) throws -> Attributes {
        let (file, handle) = try fs.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: caller)
        _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
        fs.release(inode: file.inode, handle: handle)
        return file
    }

    private func makeFileSystem(on storage: MemoryImageStorage = MemoryImageStorage(maximumBytes: Int(capacity))) throws -> VolumeFileSystem {
        try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    /// While the test holds file x's inode lock (as a change of x in progress holds it)
    /// and the namespace lock shared (as a read in progress holds it), the changes of file
    /// y answer on another thread: chmod, chown, utimensat, setxattr, removexattr, open,
    /// open with O_TRUNC, truncate, the create of its existing name, link, release. The same changes
    /// of x, each on a thread of its own and in any order, wait until the test lets go of
    /// x's lock. (Before, each held the namespace lock alone, and waited for the read.)
    func testChangesOfAnotherInodeAnswerWhileOneInodeIsLocked() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let caller = self.caller
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: caller).inode
        let links = try fs.mkdir(parent: .root, name: FileName("links"), mode: 0o755, context: caller).inode
        var files: [InodeNumber] = []
        for name in ["x", "y"] {
            let (file, handle) = try fs.create(parent: directory, name: FileName(name), mode: 0o644, flags: O_RDWR, context: caller)
            _ = try [UInt8](repeating: 9, count: 6000).withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
            fs.release(inode: file.inode, handle: handle)
            try fs.setxattr(inode: file.inode, name: Array("user.r".utf8), value: [2], mode: .createOrReplace)
            files.append(file.inode)
        }
        let (x, y) = (files[0], files[1])
        XCTAssertEqual(Set([directory, links, x, y].map { InodeLocks.stripe($0.rawValue) }).count, 4, "setup: the inodes share a stripe")

        /// The changes of one file, as a list of named steps.
        @Sendable func changes(of file: InodeNumber, named name: String) -> [(String, @Sendable () throws -> Void)] {
            [
                ("chmod", { _ = try fs.setattr(inode: file, changes: AttributeChanges(permissions: 0o600), context: caller) }),
                ("chown", { _ = try fs.setattr(inode: file, changes: AttributeChanges(uid: 7, gid: 8), context: caller) }),
                ("utimensat", {
                    var times = AttributeChanges()
                    times.modificationTime = .set(Timestamp(seconds: 5, nanoseconds: 0))
                    _ = try fs.setattr(inode: file, changes: times, context: caller)
                }),
                ("setxattr", { try fs.setxattr(inode: file, name: Array("user.k".utf8), value: [1], mode: .createOrReplace) }),
                ("removexattr", { try fs.removexattr(inode: file, name: Array("user.r".utf8)) }),
                ("open and release", { fs.release(inode: file, handle: try fs.open(inode: file, flags: O_RDONLY)) }),
                ("open with O_TRUNC", { fs.release(inode: file, handle: try fs.open(inode: file, flags: O_RDWR | O_TRUNC)) }),
                ("truncate", { _ = try fs.setattr(inode: file, changes: AttributeChanges(size: 0), context: caller) }),
                ("create of its name", {
                    let (opened, handle) = try fs.create(parent: directory, name: FileName(name), mode: 0o644, flags: O_RDWR,
                                                         context: caller)
                    XCTAssertEqual(opened.inode, file)
                    fs.release(inode: file, handle: handle)
                }),
                ("link", { _ = try fs.link(inode: file, newParent: links, newName: FileName(name)) }),
            ]
        }

        let outcome = StepOutcomes()
        let ofY = DispatchSemaphore(value: 0), ofX = DispatchGroup()
        var held = fs.inodeLocks.lock(x.rawValue)
        fs.lock.withReadLock {
            DispatchQueue.global().async {
                for (what, change) in changes(of: y, named: "y") {
                    do { try change() } catch { outcome.fail("y: \(what): \(error)") }
                }
                ofY.signal()
            }
            XCTAssertEqual(ofY.wait(timeout: .now() + 20), .success, "a change of y waited for x's lock or for the read")
            for (what, change) in changes(of: x, named: "x") {
                onThreadOfItsOwn(ofX) {
                    do { try change() } catch { outcome.fail("x: \(what): \(error)") }
                    outcome.finish(what)
                }
            }
            usleep(300_000)
            XCTAssertEqual(outcome.finished, [], "changes of x ran while its lock was held")
            fs.inodeLocks.unlock(held)
            XCTAssertEqual(ofX.wait(timeout: .now() + 20), .success)
        }
        XCTAssertEqual(outcome.failures, [])
        for file in [x, y] {
            let attributes = try fs.getattr(inode: file)
            XCTAssertEqual(attributes.size, 0, "O_TRUNC")
            XCTAssertEqual(attributes.linkCount, 2)
            XCTAssertEqual(attributes.uid, 7)
            XCTAssertEqual(attributes.permissions, 0o600)
            XCTAssertEqual(try fs.listxattr(inode: file), [Array("user.k".utf8)])
        }
        held = fs.inodeLocks.lock(x.rawValue)
        fs.inodeLocks.unlock(held)
        try fileSystem.close(meter: nil)
    }

    /// A closed clean file leaves the cache at its last close and is loaded again at the
    /// next open; both now hold only its inode's lock, so a getattr sharing the namespace
    /// lock may find the file in the cache just as the close unloads it (an unloaded file
    /// is empty). It answers from the inode's item then (`VolumeCachedFile.evicted`):
    /// every getattr shows the file's size and blocks. The interleaving is made step by
    /// step first; the threads after it seldom hit it (they are for ThreadSanitizer).
    func testAGetattrWhileTheFileLeavesTheCacheAnswersItsSize() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let file = try writtenFile(in: fs, bytes: [UInt8](repeating: 3, count: 50_000))
        _ = try fs.commitIfChanged()
        let expected = try fs.getattr(inode: file.inode)
        XCTAssertEqual(expected.size, 50_000)
        XCTAssertGreaterThan(expected.blocks, 0)

        // The interleaving, step by step: a reader holds the cached file while the last
        // close evicts and unloads it.
        let opened = try fs.open(inode: file.inode, flags: O_RDONLY)
        let held = try XCTUnwrap(fs.fileCache.file(file.inode.rawValue))
        XCTAssertEqual(held.sizesUnlessEvicted?.size, 50_000)
        fs.release(inode: file.inode, handle: opened)
        XCTAssertNil(fs.fileCache.file(file.inode.rawValue), "the last close of a clean file evicts it")
        XCTAssertEqual(held.data.size, 0, "an unloaded file is empty")
        XCTAssertNil(held.sizesUnlessEvicted, "a reader holding it is told to read the item")
        XCTAssertEqual(try fs.getattr(inode: file.inode).size, expected.size)
        // A getattr that found the evicted file in the cache (put back for the test, as if
        // found just before the eviction) answers from the item.
        fs.fileCache.changing(file.inode.rawValue) { $0.files[file.inode.rawValue] = held }
        let found = try fs.getattr(inode: file.inode)
        fs.fileCache.changing(file.inode.rawValue) { $0.files[file.inode.rawValue] = nil }
        XCTAssertEqual(found.size, expected.size, "a getattr answered from an unloaded file")
        XCTAssertEqual(found.blocks, expected.blocks)

        // And at once, on threads.

        final class Outcome: @unchecked Sendable {
            let lock = NSLock()
            var wrong: [String] = []
            var getattrs = 0
        }
        let outcome = Outcome()
        let stop = ManagedAtomicFlag(), group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            for _ in 0..<3000 {
                guard let opened = try? fs.open(inode: file.inode, flags: O_RDONLY) else {
                    outcome.lock.withLock { outcome.wrong.append("open failed") }
                    break
                }
                fs.release(inode: file.inode, handle: opened)
            }
            stop.set()
        }
        for _ in 0..<2 {
            DispatchQueue.global().async(group: group) {
                while !stop.isSet {
                    let answer = try? fs.getattr(inode: file.inode)
                    outcome.lock.withLock {
                        outcome.getattrs += 1
                        if answer?.size != expected.size || answer?.blocks != expected.blocks {
                            outcome.wrong.append("\(String(describing: answer?.size)) bytes, \(String(describing: answer?.blocks)) blocks")
                        }
                    }
                }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(Array(outcome.wrong.prefix(5)), [], "of \(outcome.getattrs) getattrs")
        XCTAssertTrue(fs.cachedFiles.isEmpty, "the last close left the clean file in the cache")
        try fileSystem.close(meter: nil)
    }

    /// Four threads open, write, truncate, chmod, set and remove xattrs, link and unlink
    /// their own files in one shared directory at once (each file's last close may evict
    /// it), beside a thread reading attributes and the maintenance's commits. Every file
    /// ends as its thread's model says; the same after the image is opened again without
    /// an unmount (the journal replayed), and the image then checks clean.
    func testOpensClosesAndAttributeChangesAtOnceAgreeWithEachThreadsModel() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: storage)
        let fs = fileSystem.namespace
        let caller = self.caller
        let shared = try fs.mkdir(parent: .root, name: FileName("shared"), mode: 0o755, context: caller).inode
        let threads = 4, filesPerThread = 6
        let own = try (0..<threads).map { try fs.mkdir(parent: .root, name: FileName("t\($0)"), mode: 0o755, context: caller).inode }

        struct FileModel {
            var inode: InodeNumber
            var bytes: [UInt8] = []
            var permissions: UInt32 = 0o644
            var xattr: [UInt8]?
            var links = 0
        }
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var failures: [String] = []
            var models: [[String: FileModel]] = []
            var inodes: [InodeNumber] = []
            func fail(_ message: String) { lock.withLock { failures.append(message) } }
        }
        let results = Results()
        results.models = Array(repeating: [:], count: threads)
        // Each thread's files exist before any thread runs, so the reader can look at all.
        for thread in 0..<threads {
            for index in 0..<filesPerThread {
                let name = "t\(thread)-f\(index)"
                let (file, handle) = try fs.create(parent: shared, name: FileName(name), mode: 0o644, flags: O_RDWR | O_EXCL,
                                                   context: caller)
                fs.release(inode: file.inode, handle: handle)
                results.models[thread][name] = FileModel(inode: file.inode)
                results.inodes.append(file.inode)
            }
        }
        let stop = ManagedAtomicFlag()
        let workers = DispatchGroup(), background = DispatchGroup()
        for thread in 0..<threads {
            DispatchQueue.global().async(group: workers) {
                var random = SplitMix64(seed: UInt64(70 + thread))
                var model = results.lock.withLock { results.models[thread] }
                let names = model.keys.sorted()
                do {
                    for step in 0..<300 {
                        let name = names[Int(random.next() % UInt64(names.count))]
                        var file = model[name]!
                        switch random.next() % 8 {
                        case 0, 1:
                            // Open (by inode, or by its name through create), maybe truncating, write, close.
                            let truncating = random.next() % 3 == 0
                            let flags = O_RDWR | (truncating ? O_TRUNC : 0)
                            let handle: FileHandle
                            if random.next() % 2 == 0 {
                                handle = try fs.open(inode: file.inode, flags: flags)
                            } else {
                                let (opened, made) = try fs.create(parent: shared, name: FileName(name), mode: 0o600, flags: flags,
                                                                   context: caller)
                                handle = made
                                if opened.inode != file.inode { results.fail("\(name): create opened \(opened.inode)") }
                                fs.forget(inode: file.inode, lookups: 1)
                            }
                            if truncating { file.bytes = [] }
                            if random.next() % 2 == 0 {
                                let offset = Int(random.next() % 5000)
                                let bytes = (0..<Int(1 + random.next() % 7000)).map { UInt8(truncatingIfNeeded: $0 &+ step &+ thread) }
                                _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: UInt64(offset), data: $0) }
                                if file.bytes.count < offset + bytes.count {
                                    file.bytes += [UInt8](repeating: 0, count: offset + bytes.count - file.bytes.count)
                                }
                                file.bytes.replaceSubrange(offset..<offset + bytes.count, with: bytes)
                            }
                            fs.release(inode: file.inode, handle: handle)
                        case 2:
                            file.permissions = UInt32(random.next() % 0o1000)
                            let answer = try fs.setattr(inode: file.inode, changes: AttributeChanges(permissions: file.permissions),
                                                        context: caller)
                            if answer.permissions != file.permissions { results.fail("\(name): chmod answered \(answer.permissions)") }
                        case 3:
                            let value = (0..<Int(random.next() % 40)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                            try fs.setxattr(inode: file.inode, name: Array("user.v".utf8), value: value, mode: .createOrReplace)
                            file.xattr = value
                        case 4:
                            guard file.xattr != nil else { continue }
                            try fs.removexattr(inode: file.inode, name: Array("user.v".utf8))
                            file.xattr = nil
                        case 5:
                            let linked = try fs.link(inode: file.inode, newParent: own[thread], newName: FileName("\(name)-\(file.links)"))
                            fs.forget(inode: file.inode, lookups: 1)
                            file.links += 1
                            if linked.linkCount != UInt32(1 + file.links) { results.fail("\(name): link answered \(linked.linkCount) links") }
                        case 6:
                            guard file.links > 0 else { continue }
                            file.links -= 1
                            try fs.unlink(parent: own[thread], name: FileName("\(name)-\(file.links)"))
                        default:
                            let attributes = try fs.getattr(inode: file.inode)
                            if attributes.size != UInt64(file.bytes.count) {
                                results.fail("\(name): getattr answered \(attributes.size) bytes, the model has \(file.bytes.count)")
                            }
                        }
                        model[name] = file
                    }
                } catch {
                    results.fail("thread \(thread): \(error)")
                }
                results.lock.withLock { results.models[thread] = model }
            }
        }
        DispatchQueue.global().async(group: background) {
            while !stop.isSet {
                _ = try? fs.commitIfChanged()
                usleep(2000)
            }
        }
        let inodes = results.inodes
        DispatchQueue.global().async(group: background) {
            while !stop.isSet {
                for inode in inodes {
                    do {
                        _ = try fs.getattr(inode: inode)
                        _ = try fs.listxattr(inode: inode)
                    } catch {
                        results.fail("reader: inode \(inode): \(error)")
                    }
                }
            }
        }
        XCTAssertEqual(workers.wait(timeout: .now() + 120), .success)
        stop.set()
        XCTAssertEqual(background.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(Array(results.failures.prefix(5)), [])

        func check(_ fs: VolumeNamespace, _ when: String) throws {
            for thread in 0..<threads {
                for (name, file) in results.models[thread] {
                    let attributes = try fs.getattr(inode: file.inode)
                    XCTAssertEqual(attributes.size, UInt64(file.bytes.count), "\(when): \(name)'s size")
                    XCTAssertEqual(attributes.permissions, file.permissions, "\(when): \(name)'s mode")
                    XCTAssertEqual(attributes.linkCount, UInt32(1 + file.links), "\(when): \(name)'s links")
                    XCTAssertEqual(try? fs.getxattr(inode: file.inode, name: Array("user.v".utf8)), file.xattr, "\(when): \(name)'s xattr")
                    let handle = try fs.open(inode: file.inode, flags: O_RDONLY)
                    XCTAssertTrue(try fs.read(inode: file.inode, handle: handle, offset: 0, count: 20_000) == file.bytes,
                                  "\(when): \(name)'s bytes")
                    fs.release(inode: file.inode, handle: handle)
                }
            }
        }
        try check(fs, "mounted")
        XCTAssertEqual(fs.fileHandles.count, 0, "a handle was left open")

        // No unmount: the next open replays the journal.
        try fs.volume.sync()
        let reopened = try TreeVolume.open(storage)
        let again = try VolumeNamespace(volume: reopened, memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        try check(again, "replayed")
        try reopened.commit()
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
    }

    /// An unlinked file only the kernel references keeps its data until the last FORGET:
    /// the kernel may open it again (a path looked up before an unlink or a rename that
    /// replaced it, which the open then names; `/proc/PID/fd` of an `O_PATH` descriptor).
    /// Before, the unlink emptied it, and a reader racing a `rename` that replaced a file
    /// read it empty, or as zeros up to the size it had stat'ed (found through a mount).
    func testAnUnlinkedFileTheKernelReferencesKeepsItsDataUntilTheLastForget() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: storage)
        let fs = fileSystem.namespace
        let old = [UInt8](repeating: 1, count: 80_000), new = [UInt8](repeating: 2, count: 5000)
        let file = try writtenFile(in: fs, bytes: old)
        let (replacement, handle) = try fs.create(parent: .root, name: FileName("g"), mode: 0o644, flags: O_RDWR, context: caller)
        _ = try new.withUnsafeBytes { try fs.write(inode: replacement.inode, handle: handle, offset: 0, data: $0) }
        fs.release(inode: replacement.inode, handle: handle)
        for committed in [false, true] {
            if committed { try fs.volume.commit() }
            // f replaced by a rename, as an editor or a package manager saves a file.
            if !committed {
                try fs.rename(parent: .root, name: FileName("g"), newParent: .root, newName: FileName("f"), flags: [])
            }
            XCTAssertEqual(try fs.getattr(inode: file.inode).linkCount, 0)
            XCTAssertEqual(try fs.getattr(inode: file.inode).size, UInt64(old.count), "committed: \(committed)")
            // The open the kernel sends for the path it looked up before the rename.
            let reader = try fs.open(inode: file.inode, flags: O_RDONLY)
            XCTAssertTrue(try fs.read(inode: file.inode, handle: reader, offset: 0, count: 100_000) == old,
                          "committed: \(committed): the replaced file's bytes are gone")
            fs.release(inode: file.inode, handle: reader)
            XCTAssertEqual(try fs.getattr(inode: file.inode).size, UInt64(old.count), "its last close emptied it")
        }
        fs.forget(inode: file.inode, lookups: 1)
        try fs.writeFrameHoldingTheLockAlone()
        XCTAssertThrowsError(try fs.getattr(inode: file.inode), "the last FORGET drops it")
        try fs.volume.commit()
        XCTAssertEqual(try fs.volume.reader().orphans().count, 0)
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
        try fileSystem.close(meter: nil)
    }

    /// An open with O_TRUNC whose truncation fails fails whole: its handle is released and
    /// the file is as it was. Before, the handle stayed open with the error answered.
    func testAnOpenWhoseTruncationFailsLeavesNoHandle() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let file = try writtenFile(in: fs, bytes: [UInt8](repeating: 5, count: 3000))
        fs.volume.failure = .io("a journal write failed")
        XCTAssertThrowsError(try fs.open(inode: file.inode, flags: O_RDWR | O_TRUNC))
        XCTAssertThrowsError(try fs.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR | O_TRUNC, context: caller))
        XCTAssertEqual(fs.fileHandles.count, 0, "a failed open left its handle")
        XCTAssertEqual(fs.cachedFiles[file.inode.rawValue]?.openCount ?? 0, 0)
        fs.volume.failure = nil
        XCTAssertEqual(try fs.getattr(inode: file.inode).size, 3000)
        try fileSystem.close(meter: nil)
    }

    /// A last close that drops the file (unlinked, forgotten) whose frame fails keeps the
    /// file's data: the cached file goes back to the cache (its blocks are not released
    /// in memory for a drop the journal lacks), and the next close or FORGET frame drops it.
    func testADropWhoseFrameFailsKeepsTheCachedFile() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: storage)
        let fs = fileSystem.namespace
        let (file, handle) = try fs.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: caller)
        _ = try [UInt8](repeating: 5, count: 30_000).withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
        try fs.unlink(parent: .root, name: FileName("f"))
        fs.forget(inode: file.inode, lookups: 1)
        fs.volume.failure = .io("a journal write failed")
        fs.release(inode: file.inode, handle: handle)
        fs.volume.failure = nil
        XCTAssertEqual(fs.fileHandles.count, 0)
        XCTAssertNotNil(fs.cachedFiles[file.inode.rawValue], "the failed drop's file left the cache")
        XCTAssertEqual(try fs.getattr(inode: file.inode).size, 30_000)
        try fs.writeFrameHoldingTheLockAlone()
        XCTAssertThrowsError(try fs.getattr(inode: file.inode), "the next frame drops it")
        try fs.volume.commit()
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
    }

    /// A truncate holds the file open by a handle of its own (so no eviction takes the
    /// file meanwhile), whose close is not a close of the user's: a file only the kernel
    /// references (unlinked) truncated to a new size keeps
    /// that size, as before the truncate shared the lock and as format 1 does; a truncate
    /// to the size a file has marks its mtime; a truncate that fails leaves no handle.
    func testATruncateClosesItsOwnHandleLeavingWhatItMade() throws {
        let fileSystem = try makeFileSystem()
        let fs = fileSystem.namespace
        let file = try writtenFile(in: fs, bytes: [UInt8](repeating: 4, count: 6000))
        let before = try fs.getattr(inode: file.inode).modificationTime
        usleep(2000)
        XCTAssertEqual(try fs.setattr(inode: file.inode, changes: AttributeChanges(size: 6000), context: caller).size, 6000)
        XCTAssertGreaterThan(try fs.getattr(inode: file.inode).modificationTime, before, "a truncate to the same size marks mtime")
        try fs.unlink(parent: .root, name: FileName("f"))
        XCTAssertEqual(try fs.getattr(inode: file.inode).size, 6000, "setup: an unlinked file only the kernel references keeps its data")
        XCTAssertEqual(try fs.setattr(inode: file.inode, changes: AttributeChanges(size: 9000), context: caller).size, 9000)
        XCTAssertEqual(try fs.getattr(inode: file.inode).size, 9000, "the truncate's own close emptied the file")
        XCTAssertEqual(fs.fileHandles.count, 0, "the truncate's handle was left open")
        fs.volume.failure = .io("a journal write failed")
        XCTAssertThrowsError(try fs.setattr(inode: file.inode, changes: AttributeChanges(size: 100), context: caller))
        fs.volume.failure = nil
        XCTAssertEqual(fs.fileHandles.count, 0, "a failed truncate left its handle")
        fs.forget(inode: file.inode, lookups: 1)
        try fs.writeFrameHoldingTheLockAlone()
        XCTAssertThrowsError(try fs.getattr(inode: file.inode), "the last FORGET drops it")
        try fileSystem.close(meter: nil)
    }
}
