import Foundation
import XCTest
import OffloadCore
@testable import OffloadNamespace
import SplitMix
import Synchronization

/// The namespace written to its image and read back, in-process: random operations, then
/// a "crash" (the filesystem objects are dropped without `close`, which is what kill -9
/// leaves: the journal frames are in the image file's page cache, nothing else), then a
/// reopen that must show exactly the tree that was there, and a clean analysis.
final class PersistenceTests: XCTestCase {
    private var directory: URL!
    private var image: String { directory.appendingPathComponent("image.bin").path }

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-persist-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    private func open(fresh: Bool = false, memory: Int = 4096) throws -> ImageFileSystem {
        try ImageFileSystem.open(path: image, capacityBytes: 256 << 20, fresh: fresh,
                                 memoryLimiter: MemoryLimiter(limitBytes: memory))
    }

    func testRandomOperationsSurviveCrashesAndCheckpoints() throws {
        let seeds: [UInt64] = ProcessInfo.processInfo.environment["OFFLOADFS_PERSIST_SEED"].flatMap { UInt64($0) }.map { [$0] } ?? Array(1...3)
        for seed in seeds {
            try? FileManager.default.removeItem(atPath: image)
            var random = SplitMix64(seed: seed)
            var expected: TreeSnapshot? = nil
            for round in 0..<4 {
                let fileSystem = try open()
                let fs = fileSystem.namespace
                if let expected {
                    XCTAssertEqual(try TreeSnapshot(fs), expected, "seed \(seed) round \(round): the reopened tree differs")
                }
                try assertClean(seed: seed, round: round, fileSystem)
                var workload = Workload(fs: fs, random: random)
                // Round 1: one checkpoint in the middle of the work. Round 2: checkpoints
                // back to back on another thread while the work runs, so objects change
                // while the checkpoint captures them (the fuzzy case).
                let concurrent = round == 2 ? ConcurrentCheckpoints(fileSystem) : nil
                for step in 0..<300 {
                    try workload.step()
                    if step == 150 && round == 1 { try fileSystem.journal!.checkpoint(fs) }
                }
                if let concurrent {
                    let taken = try concurrent.stop()
                    XCTAssertGreaterThan(taken, 0, "seed \(seed): no checkpoint ran during the work")
                }
                random = workload.random
                workload.closeAll()
                expected = try TreeSnapshot(fs)
                if round == 3 {
                    try fileSystem.close()
                }
                // Otherwise: dropped without close, like a daemon killed with SIGKILL.
            }
            let reopened = try open()
            XCTAssertEqual(try TreeSnapshot(reopened.namespace), expected, "seed \(seed): after the clean close")
            try reopened.close()
        }
    }

    func testFreshStartsEmptyAndBlocksAreReclaimedAfterSync() throws {
        do {
            let fileSystem = try open()
            let fs = fileSystem.namespace
            let (attributes, handle) = try fs.create(parent: .root, name: FileName(Array("big".utf8)), mode: 0o100644,
                                                     flags: O_RDWR, context: RequestContext(uid: 0, gid: 0))
            let data = [UInt8](repeating: 7, count: 8 << 20)
            _ = try data.withUnsafeBytes { try fs.write(inode: attributes.inode, handle: handle, offset: 0, data: $0) }
            fs.release(inode: attributes.inode, handle: handle)
            try fs.unlink(parent: .root, name: FileName(Array("big".utf8)))
            fs.forget(inode: attributes.inode, lookups: 1)
            let quarantined = fileSystem.store.statistics.quarantinedBytes
            XCTAssertGreaterThanOrEqual(quarantined, 8 << 20, "freed blocks wait for a sync")
            try fileSystem.journal!.sync()
            XCTAssertLessThan(fileSystem.store.statistics.diskBytes, 6 << 20, "the freed blocks were punched")
            XCTAssertGreaterThanOrEqual(fileSystem.store.statistics.quarantinedBytes, 8 << 20,
                                        "punched blocks wait for their punch to be durable")
            try fileSystem.journal!.sync()
            XCTAssertEqual(fileSystem.store.statistics.quarantinedBytes, 0, "the second sync frees them")
            try fileSystem.close()
        }
        let fileSystem = try open(fresh: true)
        XCTAssertEqual(try TreeSnapshot(fileSystem.namespace).nodes.keys.sorted(), ["/"])
        try fileSystem.close()
    }

    /// A failed final checkpoint is recorded in the superblocks (errno), the next open
    /// reports it, and that open's own checkpoint clears it.
    func testAnUnmountFailureIsRecordedUntilTheNextOpen() throws {
        do {
            let fileSystem = try open()
            _ = try fileSystem.namespace.mkdir(parent: .root, name: FileName(Array("d".utf8)), mode: 0o755,
                                               context: RequestContext(uid: 0, gid: 0))
            try fileSystem.journal!.recordUnmountFailure(errno: ENOSPC)
            // Dropped without close: what a daemon whose final checkpoint failed leaves.
        }
        let identity = try readIdentity()
        guard case .image(let superblock, let agree) = identity else { return XCTFail("\(identity)") }
        XCTAssertTrue(agree, "both copies hold the failure")
        XCTAssertEqual(superblock.unmountError, UInt32(ENOSPC))
        XCTAssertFalse(superblock.cleanlyUnmounted)
        do {
            let reopened = try open()
            XCTAssertEqual(reopened.report.previousUnmountError, UInt32(ENOSPC))
            XCTAssertNoThrow(try reopened.namespace.lookup(parent: .root, name: FileName(Array("d".utf8))),
                             "the journal held the change the failed checkpoint missed")
            try reopened.close()
        }
        XCTAssertEqual(try open().report.previousUnmountError, 0)
    }

    /// A set capacity too small for what the image holds is refused before anything is
    /// written; a default one that falls short (a full host disk) is a plain ENOSPC.
    func testACapacityTooSmallIsRefusedOnlyWhenItWasSet() throws {
        for set in [true, false] {
            try? FileManager.default.removeItem(atPath: image)
            do {
                let fileSystem = try ImageFileSystem.open(path: image, capacity: set ? .set(64 << 20) : .kept(default: 64 << 20),
                                                          memoryLimiter: MemoryLimiter(limitBytes: 0))
                let (attributes, handle) = try fileSystem.namespace.create(
                    parent: .root, name: FileName("f"), mode: 0o100644, flags: O_RDWR, context: RequestContext(uid: 0, gid: 0))
                _ = try [UInt8](repeating: 1, count: 4 << 20).withUnsafeBytes {
                    try fileSystem.namespace.write(inode: attributes.inode, handle: handle, offset: 0, data: $0)
                }
                fileSystem.namespace.release(inode: attributes.inode, handle: handle)
                try fileSystem.close()
            }
            let before = try Data(contentsOf: URL(fileURLWithPath: image))
            let request: CapacityRequest = set ? .set(1 << 20) : .kept(default: 1 << 20)
            XCTAssertThrowsError(try ImageFileSystem.open(path: image, capacity: request,
                                                          memoryLimiter: MemoryLimiter(limitBytes: 0))) { error in
                guard let error = error as? FSError else { return XCTFail("\(error)") }
                if set {
                    guard case .capacityTooSmall(let capacity, let needed, let live) = error else { return XCTFail("\(error)") }
                    XCTAssertEqual(capacity, 1 << 20)
                    XCTAssertGreaterThan(live, 4 << 20)
                    XCTAssertGreaterThan(needed, live)
                } else {
                    XCTAssertEqual(error, .noSpace)
                }
            }
            if set { XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image)), before, "refused before writing") }
        }
    }

    private func readIdentity() throws -> ImageIdentity {
        let fd = Glibc.open(image, O_RDONLY)
        defer { Glibc.close(fd) }
        return try ImageIdentity.read(fd: fd)
    }

    private func assertClean(seed: UInt64, round: Int, _ fileSystem: ImageFileSystem) throws {
        try fileSystem.store.checkInvariants()
    }

    /// Takes checkpoints in a loop on a background thread until stopped.
    final class ConcurrentCheckpoints: @unchecked Sendable {
        private let stopFlag = Atomic<Bool>(false)
        private let group = DispatchGroup()
        // Written by the background thread, read after `group.wait()`.
        private var count = 0
        private var failure: Error?

        init(_ fileSystem: ImageFileSystem) {
            group.enter()
            // The file system weakly: the block is let go of after `leave`, and one that
            // held it then kept the image's lock past `stop` (the next round's open of the
            // image, as after kill -9, found it "busy" once in a suite's run).
            DispatchQueue.global().async { [self, weak fileSystem] in
                defer { group.leave() }
                while !stopFlag.load(ordering: .acquiring) {
                    guard let fileSystem else { return }
                    do {
                        try fileSystem.journal!.checkpoint(fileSystem.namespace)
                        count += 1
                    } catch {
                        failure = error
                        return
                    }
                }
            }
        }

        func stop() throws -> Int {
            stopFlag.store(true, ordering: .releasing)
            group.wait()
            if let failure { throw failure }
            return count
        }
    }

    // MARK: - Workload

    /// Random operations on a few names in two directories, every kind of change the
    /// journal records: create, write (small RAM pieces and image pieces), truncate,
    /// punch, clone, rename over names, link, unlink, symlink, mkdir/rmdir, chmod,
    /// xattrs, and files unlinked while still open.
    struct Workload {
        let fs: Namespace
        var random: SplitMix64
        var open: [(InodeNumber, FileHandle)] = []
        let context = RequestContext(uid: 0, gid: 0)

        init(fs: Namespace, random: SplitMix64) {
            self.fs = fs
            self.random = random
        }

        mutating func name() -> FileName { try! FileName(Array("n\(random.next() % 12)".utf8)) }

        mutating func directory() -> InodeNumber {
            if random.next() % 2 == 0, let d = try? fs.lookup(parent: .root, name: FileName(Array("d".utf8))), d.kind == .directory {
                return d.inode
            }
            return .root
        }

        mutating func bytes(_ count: Int) -> [UInt8] {
            let seed = random.next()
            return (0..<count).map { UInt8(truncatingIfNeeded: (UInt64($0) &* 31 &+ seed) >> 3) }
        }

        mutating func step() throws {
            let parent = directory()
            let n = name()
            let choice = random.next() % 16
            do {
                switch choice {
                case 0, 1, 2:
                    let (a, h) = try fs.create(parent: parent, name: n, mode: 0o100644, flags: O_RDWR, context: context)
                    open.append((a.inode, h))
                case 3, 4, 5, 6:
                    guard !open.isEmpty else { return }
                    let (inode, handle) = open[Int(random.next() % UInt64(open.count))]
                    let size = [100, 3000, 4096, 20000, 300_000][Int(random.next() % 5)]
                    let offset = random.next() % 200_000
                    let data = bytes(size)
                    _ = try data.withUnsafeBytes { try fs.write(inode: inode, handle: handle, offset: offset, data: $0) }
                case 7:
                    guard !open.isEmpty else { return }
                    let (inode, _) = open[Int(random.next() % UInt64(open.count))]
                    _ = try fs.setattr(inode: inode, changes: AttributeChanges(size: random.next() % 100_000), context: context)
                case 8:
                    guard !open.isEmpty else { return }
                    let (inode, handle) = open[Int(random.next() % UInt64(open.count))]
                    try fs.fallocate(inode: inode, handle: handle, offset: random.next() % 100_000,
                                     length: 1 + random.next() % 50_000, mode: .punchHole)
                case 9:
                    guard open.count >= 2 else { return }
                    let a = open[Int(random.next() % UInt64(open.count))], b = open[Int(random.next() % UInt64(open.count))]
                    guard a.0 != b.0 else { return }
                    _ = try fs.copyFileRange(from: a.0, sourceHandle: a.1, sourceOffset: 0, to: b.0, destinationHandle: b.1,
                                             destinationOffset: random.next() % 50_000, length: 1 + random.next() % 100_000)
                case 10:
                    try fs.rename(parent: parent, name: n, newParent: directory(), newName: name(), flags: [])
                case 11:
                    try fs.unlink(parent: parent, name: n)
                case 12:
                    _ = try fs.symlink(parent: parent, name: n, target: bytes(1 + Int(random.next() % 40)).map { $0 | 1 }, context: context)
                case 13:
                    if random.next() % 2 == 0 {
                        _ = try fs.mkdir(parent: .root, name: FileName(Array("d".utf8)), mode: 0o755, context: context)
                    } else {
                        try fs.rmdir(parent: .root, name: FileName(Array("d".utf8)))
                    }
                case 14:
                    let target = try fs.lookup(parent: parent, name: n)
                    if random.next() % 2 == 0 {
                        try fs.setxattr(inode: target.inode, name: Array("user.k\(random.next() % 3)".utf8), value: bytes(Int(random.next() % 100)), mode: .createOrReplace)
                    } else {
                        _ = try fs.setattr(inode: target.inode, changes: AttributeChanges(permissions: UInt32(random.next() % 0o7777)), context: context)
                    }
                default:
                    let target = try fs.lookup(parent: parent, name: n)
                    _ = try fs.link(inode: target.inode, newParent: directory(), newName: name())
                }
            } catch let error as FSError {
                // Expected refusals of random operations (names that exist or not, etc.).
                switch error {
                case .notFound, .exists, .notEmpty, .isDirectory, .notDirectory, .notPermitted, .invalidArgument,
                     .noAttribute, .symlinkLoop, .notSupported: break
                default: throw error
                }
            }
            // Close some handles: files unlinked while open then die.
            if open.count > 6 || random.next() % 8 == 0, !open.isEmpty {
                let (inode, handle) = open.remove(at: Int(random.next() % UInt64(open.count)))
                fs.release(inode: inode, handle: handle)
            }
        }

        mutating func closeAll() {
            for (inode, handle) in open { fs.release(inode: inode, handle: handle) }
            open = []
        }
    }
}

/// Changes over very many extents are journaled in several bounded frames (a frame a
/// reader would refuse is never written), and read back whole.
final class LargeChangePersistenceTests: XCTestCase {
    func testAFileOfManyExtentsSurvivesACloneACrashAndACheckpoint() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-large-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let image = directory.appendingPathComponent("image.bin").path
        let context = RequestContext(uid: 0, gid: 0)
        var expected: [UInt8] = []
        do {
            let fileSystem = try ImageFileSystem.open(path: image, capacityBytes: 256 << 20,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
            let fs = fileSystem.namespace
            let (a, ha) = try fs.create(parent: .root, name: FileName(Array("a".utf8)), mode: 0o100644,
                                        flags: O_RDWR, context: context)
            // One byte every other offset: 5,000 RAM extents separated by holes.
            for i in 0..<5000 {
                _ = try [UInt8(truncatingIfNeeded: i | 1)].withUnsafeBytes {
                    try fs.write(inode: a.inode, handle: ha, offset: UInt64(2 * i), data: $0)
                }
            }
            let (b, hb) = try fs.create(parent: .root, name: FileName(Array("b".utf8)), mode: 0o100644,
                                        flags: O_RDWR, context: context)
            // One change that covers all of them: more pieces than one record holds.
            XCTAssertEqual(try fs.copyFileRange(from: a.inode, sourceHandle: ha, sourceOffset: 0, to: b.inode,
                                                destinationHandle: hb, destinationOffset: 0, length: 10_000), 9_999)
            expected = try fs.read(inode: b.inode, handle: hb, offset: 0, count: 10_000)
            fs.release(inode: a.inode, handle: ha)
            fs.release(inode: b.inode, handle: hb)
            XCTAssertFalse(fileSystem.journal!.hasFailed)
            // Dropped without close: recovery replays the split records.
        }
        do {
            let fileSystem = try ImageFileSystem.open(path: image, capacityBytes: 256 << 20,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
            let fs = fileSystem.namespace
            let b = try fs.lookup(parent: .root, name: FileName(Array("b".utf8)))
            let handle = try fs.open(inode: b.inode, flags: O_RDONLY)
            XCTAssertEqual(try fs.read(inode: b.inode, handle: handle, offset: 0, count: 10_000), expected)
            fs.release(inode: b.inode, handle: handle)
            try fileSystem.close()  // a checkpoint of 5,000-extent files, in bounded frames
        }
        let fileSystem = try ImageFileSystem.open(path: image, capacityBytes: 256 << 20,
                                                  memoryLimiter: MemoryLimiter(limitBytes: 64 << 20))
        let fs = fileSystem.namespace
        for name in ["a", "b"] {
            let file = try fs.lookup(parent: .root, name: FileName(Array(name.utf8)))
            let handle = try fs.open(inode: file.inode, flags: O_RDONLY)
            XCTAssertEqual(try fs.read(inode: file.inode, handle: handle, offset: 0, count: 10_000), expected, name)
            fs.release(inode: file.inode, handle: handle)
        }
        try fileSystem.close()
    }
}

/// A frame that cannot be written holds every reclaim (a block whose free the journal
/// missed must not be reused) until a checkpoint that began afterwards has made the image
/// whole again; fsync reports the failure meanwhile.
final class JournalFailureTests: XCTestCase {
    func testReclaimsWaitForTheCheckpointAfterAFailedAppend() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-fail-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fileSystem = try ImageFileSystem.open(path: directory.appendingPathComponent("image.bin").path,
                                                  capacityBytes: 256 << 20, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let fs = fileSystem.namespace
        let name = try FileName(Array("f".utf8))
        let (file, handle) = try fs.create(parent: .root, name: name, mode: 0o100644, flags: O_RDWR,
                                           context: RequestContext(uid: 0, gid: 0))
        _ = try [UInt8](repeating: 1, count: 4 << 20).withUnsafeBytes {
            try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0)
        }
        // A record no reader would accept (over the 64 MiB frame limit) is refused.
        fileSystem.journal!.record([.fileRange(inode: 99, size: 1, range: 0..<1,
                                              pieces: [FilePiece(offset: 0, extent: .inMemory([UInt8](repeating: 0, count: 65 << 20)))])])
        XCTAssertTrue(fileSystem.journal!.hasFailed)
        XCTAssertThrowsError(try fs.fsync(inode: file.inode, handle: handle, dataOnly: false))

        fs.release(inode: file.inode, handle: handle)
        try fs.unlink(parent: .root, name: name)
        fs.forget(inode: file.inode, lookups: 1)
        try fileSystem.store.syncAndReclaim()
        XCTAssertGreaterThanOrEqual(fileSystem.store.statistics.quarantinedBytes, 4 << 20,
                                    "nothing is reclaimed while the journal misses a change")

        try fileSystem.journal!.checkpoint(fs)
        XCTAssertFalse(fileSystem.journal!.hasFailed)
        try fileSystem.store.syncAndReclaim()  // punches (the frees are durable)
        try fileSystem.store.syncAndReclaim()  // frees (the punches are durable)
        XCTAssertEqual(fileSystem.store.statistics.quarantinedBytes, 0, "the checkpoint lets reclaims go on")
        try fileSystem.close()
    }
}
