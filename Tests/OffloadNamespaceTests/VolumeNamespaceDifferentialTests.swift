import XCTest
import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix
import Synchronization

/// Format 2's namespace (`VolumeNamespace`) against format 1's (`Namespace`), the oracle
/// the POSIX suites check: the same random operations on both (names, links, renames with
/// their flags, removals with the kernel still referencing the inode, attributes, sizes,
/// xattrs and ACLs, listings, forgets, as root and as a user with a umask) must give the
/// same answers: equal attributes, equal listings (cookies included), equal errors, equal
/// xattr values (names as sets: format 2 lists them in hash order). Format 2's volume
/// commits now and then, which must change nothing anyone sees, and its image checks
/// clean at the end (`VolumeCheck`).
/// Replay one seed with `OFFLOADFS_VOLUME_NAMESPACE_SEED=N`.
final class VolumeNamespaceDifferentialTests: XCTestCase {
    func testFormatTwoAnswersAsFormatOne() throws {
        let replay: UInt64? = ProcessInfo.processInfo.environment["OFFLOADFS_VOLUME_NAMESPACE_SEED"].flatMap { UInt64($0) }
        let seeds: [UInt64] = replay.map { [$0] } ?? [1, 2, 3, 4]
        var totals = (operations: 0, errors: 0, commits: 0)
        var succeeded: [String: Int] = [:]
        for seed in seeds {
            do {
                let run = try Pair(seed: seed)
                for step in 0..<700 {
                    try run.step()
                    if step % 90 == 89 {
                        try run.volume.commit()
                        totals.commits += 1
                    }
                }
                totals.operations += run.operations
                totals.errors += run.errors
                succeeded.merge(run.succeeded, uniquingKeysWith: +)
                // What format 2's namespace wrote holds together (fsck's check).
                try run.volume.commit()
                let report = try VolumeCheck.run(run.volume.storage)
                guard report.isClean else { throw Mismatch(description: "the image does not check clean: \(report.problems.prefix(3))") }
            } catch {
                return XCTFail("seed \(seed): \(error)\nreplay with OFFLOADFS_VOLUME_NAMESPACE_SEED=\(seed)")
            }
        }
        print("volume namespace differential: \(totals.operations) operations (\(totals.errors) answered with errors), \(totals.commits) commits; successes: \(succeeded.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        if seeds.count > 1 {
            XCTAssertGreaterThan(totals.errors, 100, "too few operations failed to exercise the error paths")
            for operation in ["write", "read", "rename", "unlink", "copy_file_range", "setattr", "readdirplus"] {
                XCTAssertGreaterThan(succeeded[operation] ?? 0, 20, "too few \(operation)s succeeded")
            }
        }
    }

    struct Mismatch: Error, CustomStringConvertible {
        var description: String
    }

    /// Both namespaces, and what the test knows of the names they hold.
    final class Pair {
        let one: Namespace
        let two: VolumeNamespace
        let volume: TreeVolume
        let clock = ManualClock()
        var rng: SplitMix64
        /// Inode numbers of directories and of other inodes made so far (some may be gone).
        var directories: [InodeNumber] = [.root]
        var others: [InodeNumber] = []
        var handles: [(InodeNumber, FileHandle, FileHandle)] = []
        var operations = 0, errors = 0
        /// Successful answers by operation (the first word of its description).
        var succeeded: [String: Int] = [:]
        let names = ["a", "b", "c", "d", "e", "f", "g", "long-\(String(repeating: "n", count: 200))"]

        init(seed: UInt64) throws {
            rng = SplitMix64(seed: seed)
            let clock = self.clock
            let store = try BackingStore(storage: MemoryImageStorage(maximumBytes: 65 << 20), capacityBytes: 64 << 20)
            one = Namespace(store: store, memoryLimiter: MemoryLimiter(limitBytes: 0), clock: { clock.now })
            volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 64 << 20), capacityBytes: 64 << 20,
                                           imageID: seed + 1, nameHashKey: SipHash24(key0: seed, key1: 3))
            two = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0), clock: { clock.now })
        }

        func pick<T>(_ list: [T]) -> T { list[Int(rng.next() % UInt64(list.count))] }
        func name() throws -> FileName { try FileName(pick(names)) }
        var anyInode: InodeNumber { rng.next() % 2 == 0 || others.isEmpty ? pick(directories) : pick(others) }
        var context: RequestContext {
            rng.next() % 3 == 0 ? RequestContext(uid: 1000, gid: 1000, umask: 0o022) : RequestContext(uid: 0, gid: 0, umask: 0o002)
        }

        /// Runs one operation on both and compares the answers.
        func same<T>(_ what: String, _ first: () throws -> T, _ second: () throws -> T,
                     _ equal: (T, T) -> Bool) throws -> T? {
            try both(what, first, second, equal)?.0
        }

        /// `same`, with both answers.
        func both<T>(_ what: String, _ first: () throws -> T, _ second: () throws -> T,
                     _ equal: (T, T) -> Bool) throws -> (T, T)? {
            operations += 1
            let a = Result { try first() }, b = Result { try second() }
            switch (a, b) {
            case (.success(let x), .success(let y)):
                guard equal(x, y) else { throw Mismatch(description: "\(what): format 1 \(x), format 2 \(y)") }
                succeeded[String(what.prefix { $0 != " " }), default: 0] += 1
                return (x, y)
            case (.failure(let x), .failure(let y)):
                guard Self.kind(x) == Self.kind(y) else { throw Mismatch(description: "\(what): format 1 threw \(x), format 2 \(y)") }
                errors += 1
                return nil
            default:
                throw Mismatch(description: "\(what): format 1 \(a), format 2 \(b)")
            }
        }

        /// An error's case without its message.
        static func kind(_ error: Error) -> String {
            guard let error = error as? FSError else { return "\(error)" }
            if case .invalidArgument = error { return "invalidArgument" }
            if case .io = error { return "io" }
            return "\(error)"
        }

        func made(_ attributes: Attributes?) {
            guard let attributes else { return }
            if attributes.kind == .directory { directories.append(attributes.inode) } else { others.append(attributes.inode) }
        }

        func step() throws {
            clock.advance()
            let parent = pick(directories), context = self.context
            if rng.next() % 3 == 0 { return try fileStep(parent: parent, context: context) }
            switch rng.next() % 20 {
            case 0, 1:
                let name = try name(), mode = UInt32(rng.next() % 0o10000)
                made(try same("mkdir \(parent)/\(name)", { try one.mkdir(parent: parent, name: name, mode: mode, context: context) },
                              { try two.mkdir(parent: parent, name: name, mode: mode, context: context) }, ==))
            case 2, 3:
                let name = try name(), kind = pick([FileKind.regular, .fifo, .characterDevice]), mode = kind.modeBits | UInt32(rng.next() % 0o10000)
                made(try same("mknod \(parent)/\(name)", { try one.mknod(parent: parent, name: name, mode: mode, rdev: 0x0801, context: context) },
                              { try two.mknod(parent: parent, name: name, mode: mode, rdev: 0x0801, context: context) }, ==))
            case 4:
                let name = try name(), target = Array(String(repeating: "t", count: Int(1 + rng.next() % 300)).utf8)
                made(try same("symlink \(parent)/\(name)", { try one.symlink(parent: parent, name: name, target: target, context: context) },
                              { try two.symlink(parent: parent, name: name, target: target, context: context) }, ==))
            case 5:
                let inode = anyInode, name = try name()
                _ = try same("link \(inode) \(parent)/\(name)", { try one.link(inode: inode, newParent: parent, newName: name) },
                             { try two.link(inode: inode, newParent: parent, newName: name) }, ==)
            case 6, 7:
                let name = try name()
                _ = try same("unlink \(parent)/\(name)", { try one.unlink(parent: parent, name: name) },
                             { try two.unlink(parent: parent, name: name) }, { _, _ in true })
            case 8:
                let name = try name()
                _ = try same("rmdir \(parent)/\(name)", { try one.rmdir(parent: parent, name: name) },
                             { try two.rmdir(parent: parent, name: name) }, { _, _ in true })
            case 9, 10:
                let name = try name(), newParent = pick(directories), newName = try self.name()
                let flags = pick([RenameFlags(), RenameFlags(), .noReplace, .exchange])
                _ = try same("rename \(parent)/\(name) \(newParent)/\(newName) \(flags.rawValue)",
                             { try one.rename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags) },
                             { try two.rename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags) }, { _, _ in true })
            case 11:
                let name = try name()
                _ = try same("lookup \(parent)/\(name)", { try one.lookup(parent: parent, name: name) },
                             { try two.lookup(parent: parent, name: name) }, ==)
            case 12:
                let inode = anyInode
                // Format 1 drops an inode at its last FORGET; format 2 in the next frame
                // written with the lock held alone, within a batch of FORGETs or the
                // maintenance's tick (`dropForgotten`). The kernel sends nothing for an
                // inode it forgot; this test asks, so it writes those drops at once.
                _ = try same("forget \(inode)", { one.forget(inode: inode, lookups: 1) },
                             { two.forget(inode: inode, lookups: 1); two.dropForgottenNow() }, { _, _ in true })
            case 13:
                let inode = anyInode
                var changes = AttributeChanges()
                if rng.next() % 2 == 0 { changes.permissions = UInt32(rng.next() % 0o10000) }
                if rng.next() % 3 == 0 { changes.uid = UInt32(rng.next() % 3) * 1000; changes.gid = 1000 }
                if rng.next() % 3 == 0 { changes.size = rng.next() % 3 == 0 ? 0 : rng.next() % 100_000 }
                if rng.next() % 3 == 0 { changes.modificationTime = rng.next() % 2 == 0 ? .now : .set(Timestamp(seconds: 5, nanoseconds: 7)) }
                if rng.next() % 4 == 0 { changes.accessTime = .set(Timestamp(seconds: 9, nanoseconds: 0)) }
                _ = try same("setattr \(inode) \(changes)", { try one.setattr(inode: inode, changes: changes, context: context) },
                             { try two.setattr(inode: inode, changes: changes, context: context) }, ==)
            case 14:
                let inode = anyInode
                _ = try same("getattr \(inode)", { try one.getattr(inode: inode) }, { try two.getattr(inode: inode) }, ==)
                _ = try same("readlink \(inode)", { try one.readlink(inode: inode) }, { try two.readlink(inode: inode) }, ==)
            case 15:
                let directory = pick(directories), plus = rng.next() % 2 == 0
                guard let handles = try same("opendir \(directory)", { try one.opendir(inode: directory) }, { try two.opendir(inode: directory) }, { _, _ in true }),
                      let second = try? two.opendir(inode: directory) else { return }
                defer { one.releasedir(inode: directory, handle: handles); two.releasedir(inode: directory, handle: second) }
                var offset: UInt64 = 0
                while true {
                    let limit = Int(1 + rng.next() % 4)
                    let page: [DirectoryEntry]?
                    if plus {
                        page = try same("readdirplus \(directory) from \(offset)",
                                        { try one.readdirplus(inode: directory, handle: handles, offset: offset, limit: limit).map(\.entry) },
                                        { try two.readdirplus(inode: directory, handle: second, offset: offset, limit: limit).map(\.entry) }, ==)
                    } else {
                        page = try same("readdir \(directory) from \(offset)",
                                        { try one.readdir(inode: directory, handle: handles, offset: offset, limit: limit) },
                                        { try two.readdir(inode: directory, handle: second, offset: offset, limit: limit) }, ==)
                    }
                    guard let page, let last = page.last else { break }
                    offset = last.nextOffset
                }
            case 16, 17:
                let inode = anyInode
                let name = Array(pick(["user.x", "user.y", "trusted.z", "system.posix_acl_access", "system.posix_acl_default"]).utf8)
                let mode = pick([XattrSetMode.createOrReplace, .createOrReplace, .createOnly, .replaceOnly])
                let value: [UInt8] = name.starts(with: Array("system.".utf8))
                    ? Self.acl(user: rng.next() % 2 == 0, bits: UInt16(rng.next() % 8))
                    : Array(repeating: UInt8(truncatingIfNeeded: rng.next()), count: Int(rng.next() % 3000))
                _ = try same("setxattr \(inode) \(String(decoding: name, as: UTF8.self))",
                             { try one.setxattr(inode: inode, name: name, value: value, mode: mode) },
                             { try two.setxattr(inode: inode, name: name, value: value, mode: mode) }, { _, _ in true })
                _ = try same("getattr \(inode) after setxattr", { try one.getattr(inode: inode) }, { try two.getattr(inode: inode) }, ==)
            case 18:
                let inode = anyInode
                _ = try same("listxattr \(inode)", { Set(try one.listxattr(inode: inode)) }, { Set(try two.listxattr(inode: inode)) }, ==)
                for name in (try? one.listxattr(inode: inode)) ?? [] {
                    _ = try same("getxattr \(inode)", { try one.getxattr(inode: inode, name: name) }, { try two.getxattr(inode: inode, name: name) }, ==)
                }
            default:
                let inode = anyInode, name = Array(pick(["user.x", "user.y", "system.posix_acl_access"]).utf8)
                _ = try same("removexattr \(inode)", { try one.removexattr(inode: inode, name: name) },
                             { try two.removexattr(inode: inode, name: name) }, { _, _ in true })
            }
        }

        /// One operation on files' data: create, open, write, read, fallocate, lseek,
        /// copy_file_range, fsync, release.
        func fileStep(parent: InodeNumber, context: RequestContext) throws {
            let pickHandle = { () -> (InodeNumber, FileHandle, FileHandle)? in
                self.handles.isEmpty ? nil : self.handles[Int(self.rng.next() % UInt64(self.handles.count))]
            }
            switch rng.next() % 12 {
            case 0:
                let name = try name(), flags = pick([O_RDWR, O_RDWR | O_CREAT, O_RDWR | O_EXCL, O_WRONLY | O_APPEND, O_RDWR | O_TRUNC])
                let mode = UInt32(0o600 + rng.next() % 0o200)
                if let (first, second) = try both("create \(parent)/\(name)",
                                                  { try one.create(parent: parent, name: name, mode: mode, flags: flags, context: context) },
                                                  { try two.create(parent: parent, name: name, mode: mode, flags: flags, context: context) },
                                                  { $0.0 == $1.0 }) {
                    made(first.0)
                    handles.append((first.0.inode, first.1, second.1))
                }
            case 1:
                let inode = anyInode, flags = pick([O_RDONLY, O_RDWR, O_WRONLY | O_APPEND, O_RDWR | O_TRUNC])
                if let (first, second) = try both("open \(inode)", { try one.open(inode: inode, flags: flags) },
                                                  { try two.open(inode: inode, flags: flags) }, { _, _ in true }) {
                    handles.append((inode, first, second))
                }
            case 2, 3, 4:
                guard let (inode, a, b) = pickHandle() else { return }
                let offset = rng.next() % 60_000, bytes = (0..<Int(rng.next() % 20_000)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                _ = try same("write \(inode) at \(offset)", { try bytes.withUnsafeBytes { try one.write(inode: inode, handle: a, offset: offset, data: $0) } },
                             { try bytes.withUnsafeBytes { try two.write(inode: inode, handle: b, offset: offset, data: $0) } }, ==)
            case 5, 6:
                guard let (inode, a, b) = pickHandle() else { return }
                let offset = rng.next() % 70_000, count = Int(rng.next() % 30_000)
                _ = try same("read \(inode) at \(offset)", { try one.read(inode: inode, handle: a, offset: offset, count: count) },
                             { try two.read(inode: inode, handle: b, offset: offset, count: count) }, ==)
                _ = try same("getattr \(inode) of an open file", { try one.getattr(inode: inode) }, { try two.getattr(inode: inode) }, ==)
            case 7:
                guard let (inode, a, b) = pickHandle() else { return }
                let offset = rng.next() % 60_000, length = rng.next() % 30_000
                let mode = pick([AllocationMode.allocate(keepSize: false), .allocate(keepSize: true), .punchHole, .zeroRange(keepSize: rng.next() % 2 == 0)])
                _ = try same("fallocate \(inode) \(mode)", { try one.fallocate(inode: inode, handle: a, offset: offset, length: length, mode: mode) },
                             { try two.fallocate(inode: inode, handle: b, offset: offset, length: length, mode: mode) }, { _, _ in true })
                let target = pick([SeekTarget.data, .hole])
                _ = try same("lseek \(inode)", { try one.lseek(inode: inode, handle: a, offset: offset, target: target) },
                             { try two.lseek(inode: inode, handle: b, offset: offset, target: target) }, ==)
            case 8:
                guard let (from, fa, fb) = pickHandle(), let (to, ta, tb) = pickHandle() else { return }
                let sourceOffset = rng.next() % 50_000, destinationOffset = rng.next() % 50_000, length = rng.next() % 40_000
                _ = try same("copy_file_range \(from) -> \(to)",
                             { try one.copyFileRange(from: from, sourceHandle: fa, sourceOffset: sourceOffset, to: to, destinationHandle: ta,
                                                     destinationOffset: destinationOffset, length: length) },
                             { try two.copyFileRange(from: from, sourceHandle: fb, sourceOffset: sourceOffset, to: to, destinationHandle: tb,
                                                     destinationOffset: destinationOffset, length: length) }, ==)
            case 9:
                guard let (inode, a, b) = pickHandle() else { return }
                _ = try same("fsync \(inode)", { try one.fsync(inode: inode, handle: a, dataOnly: false) },
                             { try two.fsync(inode: inode, handle: b, dataOnly: false) }, { _, _ in true })
            default:
                guard !handles.isEmpty else { return }
                let (inode, a, b) = handles.remove(at: Int(rng.next() % UInt64(handles.count)))
                one.release(inode: inode, handle: a)
                two.release(inode: inode, handle: b)
            }
        }

        /// An access ACL (xattr form): owner, group and other entries of `bits`, with a named
        /// user entry and a mask when `user`.
        static func acl(user: Bool, bits: UInt16) -> [UInt8] {
            var entries: [(tag: UInt16, perm: UInt16, id: UInt32)] = [(0x01, bits, UInt32.max)]
            if user { entries.append((0x02, 0o6, 1000)) }
            entries.append((0x04, bits & 0o5, UInt32.max))
            if user { entries.append((0x10, 0o7, UInt32.max)) }
            entries.append((0x20, bits & 0o4, UInt32.max))
            var bytes: [UInt8] = [2, 0, 0, 0]
            for entry in entries {
                bytes += [UInt8(entry.tag & 0xFF), UInt8(entry.tag >> 8), UInt8(entry.perm & 0xFF), UInt8(entry.perm >> 8)]
                bytes += (0..<4).map { UInt8(truncatingIfNeeded: entry.id >> (8 * $0)) }
            }
            return bytes
        }
    }
}

/// Format 2's namespace across a new mount: a file unlinked while the kernel referenced it
/// is an orphan until the last FORGET; a new namespace on the volume (the next mount)
/// drops the orphans left, and the image checks clean.
final class VolumeNamespaceOrphanTests: XCTestCase {
    func testANewMountDropsTheOrphansTheLastOneLeft() throws {
        let storage = MemoryImageStorage(maximumBytes: 16 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 3, nameHashKey: SipHash24(key0: 1, key1: 2))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let kept = try namespace.mknod(parent: .root, name: FileName("kept"), mode: 0o100644, rdev: 0, context: .root)
        _ = try namespace.setattr(inode: kept.inode, changes: AttributeChanges(size: 5000), context: .root)
        try namespace.unlink(parent: .root, name: FileName("kept"))
        XCTAssertEqual(try namespace.getattr(inode: kept.inode).linkCount, 0, "the kernel's reference keeps it")
        XCTAssertEqual(try namespace.getattr(inode: kept.inode).size, 5000, "the kernel may open it again")
        XCTAssertEqual(try volume.reader().orphans().map(\.inode), [kept.inode.rawValue])
        let gone = try namespace.mkdir(parent: .root, name: FileName("gone"), mode: 0o755, context: .root)
        try namespace.rmdir(parent: .root, name: FileName("gone"))
        let journaled = volume.journalBytesSinceCommit
        namespace.forget(inode: gone.inode, lookups: 1)
        XCTAssertEqual(volume.journalBytesSinceCommit, journaled, "a FORGET writes no frame of its own")
        // The next frame of an operation holding the lock alone (a make of a name shares
        // it, and its frame carries no drops).
        try namespace.writeFrameHoldingTheLockAlone()
        XCTAssertThrowsError(try namespace.getattr(inode: gone.inode), "the next frame drops a forgotten removed directory")
        try volume.commit()
        XCTAssertTrue(try VolumeCheck.run(storage).isClean)

        let reopened = try TreeVolume.open(storage)
        let next = try VolumeNamespace(volume: reopened, memoryLimiter: MemoryLimiter(limitBytes: 0))
        XCTAssertEqual(try reopened.reader().orphans().count, 0)
        XCTAssertThrowsError(try next.getattr(inode: kept.inode))
        try reopened.commit()
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
    }

    /// An unlinked file only the kernel references, not cached (its data committed, its
    /// handle closed), keeps its data, which the kernel may open again (a path looked up
    /// before the unlink), and its unlink does not load it: one frame, whose changes a
    /// power cut keeps or loses together
    /// (`PowerCutScenarioTests.testAnUnlinkOfAClosedFileTheKernelStillReferencesIsWhole`).
    /// The last FORGET's drop frees its extents.
    func testAnUnlinkedFileNotCachedKeepsItsDataUntilItsLastForget() throws {
        let storage = MemoryImageStorage(maximumBytes: 16 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 3, nameHashKey: SipHash24(key0: 1, key1: 2))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let (file, handle) = try namespace.create(parent: .root, name: FileName("data"), mode: 0o644, flags: O_RDWR, context: .root)
        let bytes = [UInt8](repeating: 7, count: 256 << 10)
        XCTAssertEqual(try bytes.withUnsafeBytes { try namespace.write(inode: file.inode, handle: handle, offset: 0, data: $0) }, bytes.count)
        namespace.release(inode: file.inode, handle: handle)
        XCTAssertNotNil(try namespace.commitIfChanged())
        _ = try namespace.getattr(inode: .root)  // the first operation after the commit lets clean files go
        XCTAssertNil(namespace.cachedFiles[file.inode.rawValue], "setup: the closed, committed file is not cached")
        XCTAssertEqual(try namespace.getattr(inode: file.inode).blocks, UInt64(bytes.count / 512))

        try namespace.unlink(parent: .root, name: FileName("data"))
        XCTAssertNil(namespace.cachedFiles[file.inode.rawValue], "the unlink loaded the file")
        let unlinked = try namespace.getattr(inode: file.inode)
        XCTAssertEqual(unlinked.linkCount, 0)
        XCTAssertEqual(unlinked.size, UInt64(bytes.count), "the kernel may open it again")
        XCTAssertEqual(unlinked.blocks, UInt64(bytes.count / 512))
        XCTAssertNotNil(try namespace.commitIfChanged())
        XCTAssertEqual(try volume.reader().view.filePieces(file.inode.rawValue, size: UInt64(bytes.count)).count, 1)
        XCTAssertEqual(try volume.reader().orphans().map(\.inode), [file.inode.rawValue])
        namespace.forget(inode: file.inode, lookups: 1)
        try namespace.writeFrameHoldingTheLockAlone()
        XCTAssertNotNil(try namespace.commitIfChanged())
        XCTAssertThrowsError(try namespace.getattr(inode: file.inode), "the last FORGET drops it")
        XCTAssertEqual(try volume.reader().view.filePieces(file.inode.rawValue, size: UInt64(bytes.count)).count, 0,
                       "the commit left extents of the dropped file in the tree")
        XCTAssertEqual(try volume.reader().orphans().count, 0)
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
    }

    /// A lookup reads its parent only when the name is missing, and answers as before:
    /// ENOTDIR under a file, ESTALE under an inode that is gone, ENOENT in a removed
    /// directory the kernel still references.
    func testALookupsMissAnswersForItsParent() throws {
        let storage = MemoryImageStorage(maximumBytes: 16 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 3, nameHashKey: SipHash24(key0: 1, key1: 2))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let file = try namespace.mknod(parent: .root, name: FileName("f"), mode: 0o100644, rdev: 0, context: .root).inode
        let removed = try namespace.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root).inode
        try namespace.rmdir(parent: .root, name: FileName("d"))
        for committed in [false, true] {
            XCTAssertThrowsError(try namespace.lookup(parent: file, name: FileName("x"))) {
                XCTAssertEqual($0 as? FSError, .notDirectory, "committed: \(committed)")
            }
            XCTAssertThrowsError(try namespace.lookup(parent: InodeNumber(9_999), name: FileName("x"))) {
                XCTAssertEqual($0 as? FSError, .staleInode, "committed: \(committed)")
            }
            XCTAssertThrowsError(try namespace.lookup(parent: removed, name: FileName("x"))) {
                XCTAssertEqual($0 as? FSError, .notFound, "committed: \(committed)")
            }
            XCTAssertEqual(try namespace.lookup(parent: .root, name: FileName("f")).inode, file)
            try volume.commit()
        }
    }

    /// FORGET of an inode that still has a name reads nothing: after `drop_caches` the
    /// kernel forgets a cache's worth of inodes at once, and each look at an item was a
    /// read from the disk. The inodes that lost their names while referenced still go at
    /// their last FORGET (removed, renamed over, removed while open), and only then.
    func testForgetReadsNothingForANamedInodeAndDropsTheUnlinkedAtTheirLast() throws {
        let storage = MemoryImageStorage(maximumBytes: 16 << 20)
        let volume = try TreeVolume.format(storage, capacityBytes: 16 << 20, imageID: 3, nameHashKey: SipHash24(key0: 1, key1: 2))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        var files: [InodeNumber] = []
        for i in 0..<4 {
            files.append(try namespace.mknod(parent: .root, name: FileName("f\(i)"), mode: 0o100644, rdev: 0, context: .root).inode)
        }
        let directory = try namespace.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root).inode
        try volume.commit()
        for i in 0..<4 { _ = try namespace.lookup(parent: .root, name: FileName("f\(i)")) }  // two references each

        let before = volume.nodeCache.counts
        namespace.forget(inode: files[0], lookups: 2)
        namespace.forget(inode: files[1], lookups: 1)
        let after = volume.nodeCache.counts
        XCTAssertEqual(after.hits + after.misses, before.hits + before.misses, "FORGET of named inodes read the tree")
        XCTAssertEqual(try namespace.getattr(inode: files[0]).linkCount, 1)

        try namespace.unlink(parent: .root, name: FileName("f1"))  // one reference left
        try namespace.rename(parent: .root, name: FileName("f3"), newParent: .root, newName: FileName("f2"), flags: [])
        try namespace.rmdir(parent: .root, name: FileName("d"))
        let handle = try namespace.open(inode: files[0], flags: O_RDWR)
        try namespace.unlink(parent: .root, name: FileName("f0"))  // open; no reference left
        let both = try namespace.mknod(parent: .root, name: FileName("g"), mode: 0o100644, rdev: 0, context: .root).inode
        let bothHandle = try namespace.open(inode: both, flags: O_RDWR)
        try namespace.unlink(parent: .root, name: FileName("g"))  // open and referenced
        namespace.forget(inode: both, lookups: 1)
        XCTAssertEqual(try namespace.getattr(inode: both).linkCount, 0, "the last FORGET of an open file keeps it")
        namespace.release(inode: both, handle: bothHandle)
        XCTAssertThrowsError(try namespace.getattr(inode: both), "its last handle drops it")
        for (inode, what) in [(files[1], "removed"), (files[2], "renamed over"), (directory, "removed directory")] {
            XCTAssertEqual(try namespace.getattr(inode: inode).linkCount, 0, "\(what): kept while referenced")
        }
        XCTAssertEqual(Set(try volume.reader().orphans().map(\.inode)),
                       [files[0], files[1], files[2], directory].map(\.rawValue).reduce(into: Set<UInt64>()) { $0.insert($1) })
        namespace.forget(inode: files[2], lookups: 1)
        XCTAssertEqual(try namespace.getattr(inode: files[2]).linkCount, 0, "renamed over: one of two references left")
        for inode in [files[1], files[2], directory] { namespace.forget(inode: inode, lookups: 1) }
        XCTAssertTrue(Set(namespace.kernelReferences.withSnapshot { $0.forgotten })
                        .isSuperset(of: [files[1], files[2], directory].map(\.rawValue)), "dropped by the next frame")
        try namespace.writeFrameHoldingTheLockAlone()
        for inode in [files[1], files[2], directory] {
            XCTAssertThrowsError(try namespace.getattr(inode: inode), "the frame after the last FORGET drops an inode with no name")
        }
        XCTAssertEqual(try namespace.getattr(inode: files[0]).linkCount, 0, "open")
        namespace.release(inode: files[0], handle: handle)
        XCTAssertThrowsError(try namespace.getattr(inode: files[0]), "its last handle drops an open file nothing references")
        XCTAssertEqual(try volume.reader().orphans().count, 0)
        XCTAssertTrue(namespace.kernelReferences.withSnapshot { $0.unlinked.isEmpty }, "no mark outlives its inode")
        try volume.commit()
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
    }
}

/// Format 2's cache of file data holds open files and files changed since the last
/// commit, nothing more: a written file, closed, stays until a commit holds its changes,
/// and goes with the maintenance's commit that holds them (or the next change after an
/// operation's own commit), reading back the same.
final class VolumeNamespaceCacheTests: XCTestCase {
    func testAClosedFileLeavesTheCacheOnceACommitHoldsItsChanges() throws {
        let volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 16 << 20), capacityBytes: 16 << 20,
                                           imageID: 4, nameHashKey: SipHash24(key0: 5, key1: 6))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let bytes = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let (attributes, handle) = try namespace.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: .root)
        _ = try bytes.withUnsafeBytes { try namespace.write(inode: attributes.inode, handle: handle, offset: 0, data: $0) }
        namespace.release(inode: attributes.inode, handle: handle)
        XCTAssertEqual(namespace.lock.withReadLock { namespace.cachedFiles.count }, 1, "its changes wait for a commit")
        XCTAssertNotNil(try namespace.commitIfChanged())
        XCTAssertEqual(namespace.lock.withReadLock { namespace.cachedFiles.count }, 0, "a commit holds its changes")
        let again = try namespace.open(inode: attributes.inode, flags: O_RDONLY)
        XCTAssertTrue(try namespace.read(inode: attributes.inode, handle: again, offset: 0, count: 30_000) == bytes)
        namespace.release(inode: attributes.inode, handle: again)
        XCTAssertEqual(namespace.lock.withReadLock { namespace.cachedFiles.count }, 0)
    }

    /// Leaving the cache and coming back is not a change of the file's blocks: opened
    /// again, the file overwrites them in place at once. Before, unloading and loading
    /// marked every block touched, and each write copied its block until the next commit
    /// (random writes after an open ran at a third of format 1's rate).
    func testAFileOpenedAgainOverwritesItsBlocksInPlace() throws {
        let volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 16 << 20), capacityBytes: 16 << 20,
                                           imageID: 4, nameHashKey: SipHash24(key0: 5, key1: 6))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let (attributes, handle) = try namespace.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: .root)
        let number = attributes.inode
        _ = try [UInt8](repeating: 1, count: 64 << 10).withUnsafeBytes { try namespace.write(inode: number, handle: handle, offset: 0, data: $0) }
        namespace.release(inode: number, handle: handle)
        XCTAssertNotNil(try namespace.commitIfChanged())
        XCTAssertEqual(namespace.lock.withReadLock { namespace.cachedFiles.count }, 0, "a commit holds its changes")
        let again = try namespace.open(inode: number, flags: O_RDWR)
        let extents = { namespace.lock.withReadLock { namespace.cachedFiles[number.rawValue]?.data.extentList.map(\.extent) } }
        let before = extents()
        _ = try [UInt8](repeating: 2, count: 4096).withUnsafeBytes { try namespace.write(inode: number, handle: again, offset: 8192, data: $0) }
        XCTAssertEqual(extents(), before, "the write copied its block")
        XCTAssertTrue(try namespace.read(inode: number, handle: again, offset: 8192, count: 4096) == [UInt8](repeating: 2, count: 4096))
        namespace.release(inode: number, handle: again)
        try volume.commit()
        XCTAssertTrue(try VolumeCheck.run(volume.storage).isClean)
    }

    /// A directory's missing default ACL, remembered at its first create, is forgotten
    /// when one is set: the next file made there inherits it.
    func testADefaultACLSetAfterACreateIsInherited() throws {
        let volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 16 << 20), capacityBytes: 16 << 20,
                                           imageID: 4, nameHashKey: SipHash24(key0: 5, key1: 6))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let directory = try namespace.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root).inode
        let (first, handle) = try namespace.create(parent: directory, name: FileName("a"), mode: 0o644, flags: O_RDWR, context: .root)
        namespace.release(inode: first.inode, handle: handle)
        XCTAssertTrue(namespace.lock.withReadLock { namespace.directoriesWithoutDefaultACL.contains(directory.rawValue) },
                      "the absence is not remembered")
        // user::rwx group::r-x other::---, as a default ACL.
        let inherited: [UInt8] = [2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff,
                                  0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        try namespace.setxattr(inode: directory, name: PosixACL.defaultName, value: inherited, mode: .createOrReplace)
        let (second, again) = try namespace.create(parent: directory, name: FileName("b"), mode: 0o666, flags: O_RDWR, context: .root)
        namespace.release(inode: second.inode, handle: again)
        XCTAssertEqual(second.permissions, 0o640, "the new file's mode is not limited by the default ACL set after the first create")
        let sub = try namespace.mkdir(parent: directory, name: FileName("s"), mode: 0o777, context: .root)
        XCTAssertEqual(try namespace.getxattr(inode: sub.inode, name: PosixACL.defaultName), inherited)
    }

    /// An open file's missing "security.capability" (asked before every write) is
    /// answered from memory, and setting or removing the attribute is seen at once.
    func testAnOpenFilesCapabilityIsAnsweredFromMemoryAndFollowsItsChanges() throws {
        let volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 16 << 20), capacityBytes: 16 << 20,
                                           imageID: 4, nameHashKey: SipHash24(key0: 5, key1: 6))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let (attributes, handle) = try namespace.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: .root)
        let number = attributes.inode, name = Array("security.capability".utf8), value: [UInt8] = [1, 0, 0, 2, 9, 9, 9, 9]
        let cached = { namespace.lock.withReadLock { namespace.cachedFiles[number.rawValue]?.lacksCapability } }
        func absent(_ context: String) {
            XCTAssertThrowsError(try namespace.getxattr(inode: number, name: name), context) { XCTAssertEqual($0 as? FSError, .noAttribute) }
        }
        XCTAssertEqual(cached(), true, "a file create made is not known to lack the attribute")
        absent("a new file")
        XCTAssertEqual(cached(), true, "the absence is not remembered")
        absent("answered from memory")
        try namespace.setxattr(inode: number, name: name, value: value, mode: .createOrReplace)
        XCTAssertEqual(cached(), false)
        XCTAssertEqual(try namespace.getxattr(inode: number, name: name), value, "the attribute set is not seen")
        try namespace.removexattr(inode: number, name: name)
        absent("after removexattr")
        try namespace.setxattr(inode: number, name: name, value: value, mode: .createOnly)
        XCTAssertEqual(try namespace.getxattr(inode: number, name: name), value, "the attribute set again is not seen")
        namespace.release(inode: number, handle: handle)
        // Opened again once evicted: the file has the attribute, which the new cached
        // file must not take for absent.
        try volume.commit()
        namespace.lock.withWriteLock { namespace.evictCommittedFiles() }
        XCTAssertNil(cached(), "the closed file is still cached")
        let reopened = try namespace.open(inode: number, flags: O_RDWR)
        XCTAssertEqual(try namespace.getxattr(inode: number, name: name), value, "a file opened again lost its attribute")
        namespace.release(inode: number, handle: reopened)
    }
}

/// A file change whose journal frame cannot be written (an I/O error) is not answered as
/// done, and the namespace refuses what follows: its memory is ahead of the journal.
final class VolumeNamespaceJournalFailureTests: XCTestCase {
    func testAWriteWhoseFrameIsNotWrittenFailsAndSoDoesWhatFollows() throws {
        let disk = FaultInjectingStorage(MemoryImageStorage(maximumBytes: 16 << 20))
        let volume = try TreeVolume.format(disk, capacityBytes: 16 << 20, imageID: 8, nameHashKey: SipHash24(key0: 1, key1: 9))
        let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let (attributes, handle) = try namespace.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: .root)
        // The data's write goes through; the frame's, next, fails.
        disk.inject(FaultInjectingStorage.Fault(.write, error: .io("injected"), after: 1))
        XCTAssertThrowsError(try [UInt8](repeating: 7, count: 5000).withUnsafeBytes {
            try namespace.write(inode: attributes.inode, handle: handle, offset: 0, data: $0)
        })
        XCTAssertEqual(disk.failures(of: .write), 1)
        XCTAssertThrowsError(try namespace.getattr(inode: attributes.inode))
    }

    /// A new inode gets its kernel reference, and a created file its handle and data, only
    /// once its frame is written: before, mkdir counted the reference first, and a failed
    /// frame left it behind.
    func testANewInodeWhoseFrameIsNotWrittenLeavesNoReferenceNorHandle() throws {
        // A failed frame fails the volume, so each call gets a volume of its own.
        let calls: [(String, (VolumeNamespace) throws -> Void)] = [
            ("mkdir", { _ = try $0.mkdir(parent: .root, name: FileName("d"), mode: 0o755, context: .root) }),
            ("create", { _ = try $0.create(parent: .root, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: .root) }),
        ]
        for (name, call) in calls {
            let disk = FaultInjectingStorage(MemoryImageStorage(maximumBytes: 16 << 20))
            let volume = try TreeVolume.format(disk, capacityBytes: 16 << 20, imageID: 8, nameHashKey: SipHash24(key0: 1, key1: 9))
            let namespace = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
            let kept = try namespace.mkdir(parent: .root, name: FileName("kept"), mode: 0o755, context: .root)
            XCTAssertEqual(namespace.kernelReferences.withSnapshot { $0.counts }, [kept.inode.rawValue: 1])
            disk.inject(FaultInjectingStorage.Fault(.write, error: .io("injected")))
            XCTAssertThrowsError(try call(namespace), name)
            XCTAssertEqual(disk.failures(of: .write), 1, name)
            XCTAssertEqual(namespace.kernelReferences.withSnapshot { $0.counts }, [kept.inode.rawValue: 1], name)
            XCTAssertTrue(namespace.fileHandles.isEmpty, name)
            XCTAssertTrue(namespace.cachedFiles.isEmpty, name)
        }
    }
}
