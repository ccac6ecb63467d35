import Dispatch
import XCTest
@testable import OffloadCore
@testable import OffloadNamespace
import OffloadSimulation
import SplitMix

/// Format 2's changes of names in one directory share the namespace lock and hold the
/// directory's inode lock (`VolumeNamespace.changingNames`, docs/ARCHITECTURE.md, "Step
/// 7, fifth part"): mkdir, mknod, symlink, the create of a new file, unlink and rmdir in
/// different directories run at once; two in one directory take turns. Also in
/// scripts/tsan.
final class VolumeNamesInDirectoriesTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20
    let caller = RequestContext(uid: 0, gid: 0)

    /// While the test holds directory a's inode lock (as a change of a's names in progress
    /// holds it), a create, mkdir, symlink, unlink and rmdir in directory b answer on
    /// another thread; a create in a waits until the test lets go, and so does an unlink in
    /// b of a file whose lock the test holds. (That these changes also answer while a read
    /// holds the namespace lock is `VolumeSharedReadsTests`'; a change that takes no inode
    /// lock fails here, the create in a answering at once.)
    func testChangesInAnotherDirectoryAnswerWhileOneDirectoryIsLocked() throws {
        let fileSystem = try makeFileSystem(on: MemoryImageStorage(maximumBytes: Int(Self.capacity)))
        let fs = fileSystem.namespace
        let a = try fs.mkdir(parent: .root, name: FileName("a"), mode: 0o755, context: caller).inode
        let b = try fs.mkdir(parent: .root, name: FileName("b"), mode: 0o755, context: caller).inode
        let old = try fs.mknod(parent: b, name: FileName("old"), mode: 0o100644, rdev: 0, context: caller).inode
        _ = try fs.mkdir(parent: b, name: FileName("sub"), mode: 0o755, context: caller)
        let held = try fs.mknod(parent: b, name: FileName("held"), mode: 0o100644, rdev: 0, context: caller).inode
        XCTAssertEqual(Set([a, b, held].map { InodeLocks.stripe($0.rawValue) }).count, 3, "setup: the inodes share a stripe")

        final class Outcome: @unchecked Sendable { var failure: Error?; var inA: Attributes?; var unlinkedHeld = false }
        let outcome = Outcome()
        let inB = DispatchSemaphore(value: 0), inADone = DispatchSemaphore(value: 0), heldDone = DispatchSemaphore(value: 0)
        let caller = self.caller
        var locked = fs.inodeLocks.lock(a.rawValue)
        fs.inodeLocks.extend(&locked, with: held.rawValue)
        DispatchQueue.global().async {
            do {
                let (file, handle) = try fs.create(parent: b, name: FileName("new"), mode: 0o644, flags: O_RDWR, context: caller)
                _ = try [UInt8](repeating: 7, count: 5000).withUnsafeBytes {
                    try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0)
                }
                fs.release(inode: file.inode, handle: handle)
                _ = try fs.mkdir(parent: b, name: FileName("dir"), mode: 0o755, context: caller)
                _ = try fs.symlink(parent: b, name: FileName("link"), target: Array("new".utf8), context: caller)
                try fs.unlink(parent: b, name: FileName("old"))
                try fs.rmdir(parent: b, name: FileName("sub"))
            } catch {
                outcome.failure = error
            }
            inB.signal()
        }
        XCTAssertEqual(inB.wait(timeout: .now() + 20), .success, "changes in b waited for a change in a")
        DispatchQueue.global().async {
            outcome.inA = try? fs.create(parent: a, name: FileName("f"), mode: 0o644, flags: O_RDWR, context: caller).0
            inADone.signal()
        }
        DispatchQueue.global().async {
            outcome.unlinkedHeld = (try? fs.unlink(parent: b, name: FileName("held"))) != nil
            heldDone.signal()
        }
        XCTAssertEqual(inADone.wait(timeout: .now() + 0.3), .timedOut, "a create in a ran while a's lock was held")
        XCTAssertEqual(heldDone.wait(timeout: .now() + 0.1), .timedOut, "an unlink ran while its inode's lock was held")
        fs.inodeLocks.unlock(locked)
        XCTAssertEqual(inADone.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(heldDone.wait(timeout: .now() + 20), .success)
        XCTAssertNil(outcome.failure)
        XCTAssertNotNil(outcome.inA)
        XCTAssertTrue(outcome.unlinkedHeld)
        XCTAssertEqual(try names(in: b, fs), ["dir", "link", "new"])
        XCTAssertEqual(try fs.getattr(inode: old).linkCount, 0, "the kernel's reference keeps the unlinked file")
        XCTAssertEqual(try fs.getattr(inode: b).linkCount, 3, "b: its name, '.', and dir's '..'")
        try fileSystem.close(meter: nil)
    }

    /// An unlink whose inode's stripe is below its directory's lets go of the directory's,
    /// takes both in ascending order and looks the name up again: while the test holds the
    /// inode's stripe the unlink waits, and a mkdir in the same directory answers meanwhile
    /// (the directory's stripe is free while the unlink waits for the lower one). An unlink
    /// whose inode shares its directory's stripe takes it once.
    func testAnUnlinkTakesAStripeBelowItsDirectorysInAscendingOrder() throws {
        let fileSystem = try makeFileSystem(on: MemoryImageStorage(maximumBytes: Int(Self.capacity)))
        let fs = fileSystem.namespace
        let caller = self.caller
        let file = try fs.mknod(parent: .root, name: FileName("x"), mode: 0o100644, rdev: 0, context: caller).inode
        let directory = try fs.mkdir(parent: .root, name: FileName("p"), mode: 0o755, context: caller).inode
        _ = try fs.link(inode: file, newParent: directory, newName: FileName("x"))
        XCTAssertLessThan(InodeLocks.stripe(file.rawValue), InodeLocks.stripe(directory.rawValue), "setup")

        final class Outcome: @unchecked Sendable { var unlinked = false; var made: Attributes? }
        let outcome = Outcome()
        let unlinkDone = DispatchSemaphore(value: 0), mkdirDone = DispatchSemaphore(value: 0)
        let held = fs.inodeLocks.lock(file.rawValue)
        DispatchQueue.global().async {
            outcome.unlinked = (try? fs.unlink(parent: directory, name: FileName("x"))) != nil
            unlinkDone.signal()
        }
        XCTAssertEqual(unlinkDone.wait(timeout: .now() + 0.3), .timedOut, "the unlink ran while its inode's stripe was held")
        DispatchQueue.global().async {
            outcome.made = try? fs.mkdir(parent: directory, name: FileName("d"), mode: 0o755, context: caller)
            mkdirDone.signal()
        }
        XCTAssertEqual(mkdirDone.wait(timeout: .now() + 20), .success, "the waiting unlink kept its directory's stripe")
        fs.inodeLocks.unlock(held)
        XCTAssertEqual(unlinkDone.wait(timeout: .now() + 20), .success)
        XCTAssertTrue(outcome.unlinked)
        XCTAssertNotNil(outcome.made)
        XCTAssertEqual(try names(in: directory, fs), ["d"])
        XCTAssertEqual(try fs.getattr(inode: file).linkCount, 1, "the other name is left")

        // An inode on its directory's stripe: numbers a stripe count apart.
        let sharing = try fs.mkdir(parent: .root, name: FileName("s"), mode: 0o755, context: caller).inode
        for index in 0..<(InodeLocks.stripeCount - 1) {
            _ = try fs.mknod(parent: .root, name: FileName("pad\(index)"), mode: 0o100644, rdev: 0, context: caller)
        }
        let same = try fs.mknod(parent: sharing, name: FileName("same"), mode: 0o100644, rdev: 0, context: caller).inode
        XCTAssertEqual(InodeLocks.stripe(same.rawValue), InodeLocks.stripe(sharing.rawValue), "setup")
        try fs.unlink(parent: sharing, name: FileName("same"))
        XCTAssertEqual(try names(in: sharing, fs), [])
        XCTAssertEqual(try fs.getattr(inode: same).linkCount, 0, "the kernel's reference keeps it")
        try fileSystem.close(meter: nil)
    }

    /// A rename holds its directories' locks and its two names' inodes'
    /// (`changingNamesOfARename`): while the test holds directory a's lock, file b/held's
    /// and file c/target's, and the namespace lock shared (as a change in progress),
    /// renames in directory b answer, to a new name, over a file, exchanging two names,
    /// and of a directory, and so does a rename from b to c; a rename in a, a rename of
    /// b/held, a rename in c over c/target and a rename from e into a each wait, for its
    /// own lock only, until the test lets go. While the test holds the lock of renames
    /// across directories, one across directories waits and one within a directory
    /// answers.
    func testRenamesAnswerWhileOtherDirectoriesAreLocked() throws {
        let fileSystem = try makeFileSystem(on: MemoryImageStorage(maximumBytes: Int(Self.capacity)))
        let fs = fileSystem.namespace
        let caller = self.caller
        let a = try fs.mkdir(parent: .root, name: FileName("a"), mode: 0o755, context: caller).inode
        let b = try fs.mkdir(parent: .root, name: FileName("b"), mode: 0o755, context: caller).inode
        let c = try fs.mkdir(parent: .root, name: FileName("c"), mode: 0o755, context: caller).inode
        let e = try fs.mkdir(parent: .root, name: FileName("e"), mode: 0o755, context: caller).inode
        _ = try fs.mknod(parent: a, name: FileName("a1"), mode: 0o100644, rdev: 0, context: caller)
        _ = try fs.mknod(parent: e, name: FileName("e1"), mode: 0o100644, rdev: 0, context: caller)
        var made: [String: InodeNumber] = [:]
        for name in ["x", "y", "z", "w", "held"] {
            made[name] = try fs.mknod(parent: b, name: FileName(name), mode: 0o100644, rdev: 0, context: caller).inode
        }
        for name in ["target", "over"] {
            made[name] = try fs.mknod(parent: c, name: FileName(name), mode: 0o100644, rdev: 0, context: caller).inode
        }
        _ = try fs.mkdir(parent: b, name: FileName("d"), mode: 0o755, context: caller)
        let held = made["held"]!, target = made["target"]!, over = made["over"]!
        XCTAssertEqual(Set([a, b, c, e, held, target, over].map { InodeLocks.stripe($0.rawValue) }).count, 7,
                       "setup: the inodes share a stripe")
        XCTAssertTrue(a.rawValue < e.rawValue && a.rawValue < held.rawValue && held.rawValue < target.rawValue,
                      "setup: the test's stripes ascend")

        let outcome = StepOutcomes()
        @Sendable func rename(_ what: String, _ parent: InodeNumber, _ from: String, _ newParent: InodeNumber, _ to: String,
                              _ flags: RenameFlags = []) -> @Sendable () -> Void {
            return {
                do {
                    try fs.rename(parent: parent, name: FileName(from), newParent: newParent, newName: FileName(to), flags: flags)
                } catch {
                    outcome.fail("\(what): \(error)")
                }
                outcome.finish(what)
            }
        }
        let answered = DispatchSemaphore(value: 0), waiting = DispatchGroup(), across = DispatchGroup()
        var locked = fs.inodeLocks.lock(a.rawValue)
        fs.inodeLocks.extend(&locked, with: held.rawValue)
        fs.inodeLocks.extend(&locked, with: target.rawValue)
        fs.lock.withReadLock {
            DispatchQueue.global().async {
                rename("to a new name", b, "x", b, "x2")()
                rename("over a file", b, "y", b, "z")()
                rename("exchanging", b, "w", b, "z", .exchange)()
                rename("a directory", b, "d", b, "d2")()
                rename("from b to c", b, "x2", c, "x3")()
                answered.signal()
            }
            XCTAssertEqual(answered.wait(timeout: .now() + 20), .success, "a rename in b or from b to c waited for a lock the test holds")
            // Each waits for a lock of its own (and none shares a directory with another),
            // so each is held back by that lock alone; they may run in any order after.
            for step in [rename("in a", a, "a1", a, "a2"), rename("of a held file", b, "held", b, "held2"),
                         rename("over a held file", c, "over", c, "target"), rename("from e into a", e, "e1", a, "e1")] {
                onThreadOfItsOwn(waiting, step)
            }
            usleep(300_000)
            XCTAssertEqual(outcome.finished, ["to a new name", "over a file", "exchanging", "a directory", "from b to c"],
                           "a rename ran while a lock it needs was held")
            fs.inodeLocks.unlock(locked)
            XCTAssertEqual(waiting.wait(timeout: .now() + 20), .success, "a rename waited once its lock was let go")
        }
        fs.renamesAcrossDirectories.lock()
        onThreadOfItsOwn(across, rename("from a to c", a, "a2", c, "a2"))
        rename("within b, beside", b, "z", b, "z2")()
        usleep(200_000)
        XCTAssertFalse(outcome.finished.contains("from a to c"), "a rename across directories ran beside another")
        fs.renamesAcrossDirectories.unlock()
        XCTAssertEqual(across.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(outcome.failures, [])
        XCTAssertEqual(try names(in: a, fs), ["e1"])
        XCTAssertEqual(try names(in: b, fs), ["d2", "held2", "w", "z2"])
        XCTAssertEqual(try names(in: c, fs), ["a2", "target", "x3"])
        XCTAssertEqual(try names(in: e, fs), [])
        XCTAssertEqual(try fs.lookup(parent: b, name: FileName("held2")).inode, held)
        XCTAssertEqual(try fs.lookup(parent: c, name: FileName("target")).inode, over)
        XCTAssertEqual(try fs.lookup(parent: c, name: FileName("x3")).inode, made["x"]!)
        XCTAssertEqual(try fs.lookup(parent: b, name: FileName("w")).inode, made["y"]!)
        XCTAssertEqual(try fs.lookup(parent: b, name: FileName("z2")).inode, made["w"]!)
        XCTAssertEqual(try fs.getattr(inode: made["z"]!).linkCount, 0, "the file renamed over")
        XCTAssertEqual(try fs.getattr(inode: target).linkCount, 0, "the held file renamed over")
        try fileSystem.close(meter: nil)
    }

    /// Two threads move directories across at once, each into the other's subtree:
    /// a/p into b/q/s, and b/q into a/p/r, then back. Their locks are disjoint (a, s, p
    /// against b, r, q), so only the rename mutex keeps their cycle checks apart: without
    /// it both checks pass, both moves land, and p and q hang below each other, cut off
    /// from the root (the test fails: a moved directory's parents do not reach the root).
    /// Each round the two try their moves at once; each walks its moved directory's
    /// parents after a move that landed, before either moves back; the image checks clean
    /// after.
    func testMovesIntoEachOthersSubtreesNeverMakeACycle() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: storage)
        let fs = fileSystem.namespace
        let caller = self.caller
        let a = try fs.mkdir(parent: .root, name: FileName("a"), mode: 0o755, context: caller).inode
        let b = try fs.mkdir(parent: .root, name: FileName("b"), mode: 0o755, context: caller).inode
        let p = try fs.mkdir(parent: a, name: FileName("p"), mode: 0o755, context: caller).inode
        let q = try fs.mkdir(parent: b, name: FileName("q"), mode: 0o755, context: caller).inode
        let r = try fs.mkdir(parent: p, name: FileName("r"), mode: 0o755, context: caller).inode
        let s = try fs.mkdir(parent: q, name: FileName("s"), mode: 0o755, context: caller).inode
        let outcome = StepOutcomes()
        let moved = PthreadMutex([0, 0])
        /// The parents of `directory` up to the root, or nil when they loop.
        @Sendable func reachesTheRoot(_ directory: InodeNumber) -> Bool {
            var cursor = directory.rawValue
            for _ in 0..<16 {
                if cursor == InodeNumber.root.rawValue { return true }
                guard let parent = try? fs.reading({ (reader) throws(FSError) -> UInt64? in try reader.inode(cursor)?.parent }) else {
                    return false
                }
                cursor = parent
            }
            return false
        }
        // Each round both threads try their move at once (a barrier), then move back what
        // moved: with the mutex one of them waits and finds the other's directory below
        // its own (EINVAL), or both run one after the other.
        let barrier = TwoPartyBarrier()
        @Sendable func mover(_ index: Int, _ name: String, _ from: InodeNumber, _ into: InodeNumber, _ directory: InodeNumber) -> @Sendable () -> Void {
            return {
                for round in 0..<1000 {
                    barrier.wait()
                    var done = true
                    do throws(FSError) {
                        try fs.rename(parent: from, name: FileName(name), newParent: into, newName: FileName(name), flags: [])
                    } catch {
                        // EINVAL: the other directory is below this one just now.
                        if case .invalidArgument = error { done = false } else { outcome.fail("\(name) round \(round): \(error)") }
                    }
                    if done {
                        moved.withLock { $0[index] += 1 }
                        if !reachesTheRoot(directory) { outcome.fail("\(name) round \(round): its parents do not reach the root") }
                    }
                    barrier.wait()
                    if done {
                        do {
                            try fs.rename(parent: into, name: FileName(name), newParent: from, newName: FileName(name), flags: [])
                        } catch {
                            outcome.fail("\(name) round \(round), back: \(error)")
                        }
                    }
                }
            }
        }
        let group = DispatchGroup()
        onThreadOfItsOwn(group, mover(0, "p", a, s, p))
        onThreadOfItsOwn(group, mover(1, "q", b, r, q))
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(outcome.failures.prefix(3), [])
        let counts = moved.withLock { $0 }
        XCTAssertGreaterThan(counts[0] + counts[1], 0, "setup: no directory ever moved")
        XCTAssertEqual(try names(in: a, fs), ["p"])
        XCTAssertEqual(try names(in: b, fs), ["q"])
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(storage)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }

    /// `InodeLocks.lock` of up to four inodes takes each distinct stripe once, in
    /// ascending order, whatever the order and sharing of its arguments (a stripe taken
    /// twice traps in debug builds, whose stripes are error-checking mutexes), covers
    /// each inode, and lets them all go.
    func testUpToFourInodeLocksAreTakenOnceEachInAscendingOrder() {
        let locks = InodeLocks()
        let count = UInt64(InodeLocks.stripeCount)
        let numbers: [UInt64] = [5, 9, 700, 5 + count, 9 + 2 * count, 1000]
        for x in numbers {
            for y in numbers {
                for z in numbers + [nil] as [UInt64?] {
                    for w in numbers + [nil] as [UInt64?] {
                        let held = locks.lock(x, y, z, w)
                        let stripes = [held.first, held.second, held.third, held.fourth].compactMap { $0 }
                        let expected = Array(Set([x, y, z ?? x, w ?? x].map(InodeLocks.stripe))).sorted()
                        XCTAssertEqual(stripes, expected, "\(x), \(y), \(String(describing: z)), \(String(describing: w))")
                        XCTAssertTrue(held.covers(x) && held.covers(y) && (z.map(held.covers) ?? true)
                                      && (w.map(held.covers) ?? true))
                        locks.unlock(held)
                    }
                }
            }
        }
        // All let go: each stripe can be taken again.
        for x in numbers { locks.unlock(locks.lock(x)) }
    }

    /// Four threads change names at once, each in a directory of its own and all in one
    /// shared directory (creates that write their file, unlinks of open and closed files,
    /// mkdirs and rmdirs, symlinks, renames within their own directory to a new name or
    /// over a file, renames from their own directory into the shared one, the kernel's
    /// FORGETs), beside a reader and the
    /// maintenance's commits; half the removes find their inode unreferenced (the drop is
    /// in the unlink's frame), half leave an orphan. Each thread's directory ends as its
    /// model says, the shared one as the union of theirs; statfs counts what is there;
    /// opened again without an unmount (the journal replayed), the image reads the same
    /// and checks clean.
    func testChangesInManyDirectoriesAtOnceAgreeWithEachThreadsModel() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try makeFileSystem(on: storage)
        let fs = fileSystem.namespace
        let caller = self.caller
        let shared = try fs.mkdir(parent: .root, name: FileName("shared"), mode: 0o755, context: caller).inode
        let threads = 4
        let own = try (0..<threads).map { try fs.mkdir(parent: .root, name: FileName("t\($0)"), mode: 0o755, context: caller).inode }

        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var failures: [String] = []
            var models: [[String: [UInt8]?]] = []   // per thread: name in its directory -> file bytes (nil: a directory or link)
            var sharedNames: [Set<String>] = []
            func fail(_ message: String) { lock.lock(); failures.append(message); lock.unlock() }
        }
        let results = Results()
        results.models = Array(repeating: [:], count: threads)
        results.sharedNames = Array(repeating: [], count: threads)
        let stop = ManagedAtomicFlag()
        let workers = DispatchGroup(), background = DispatchGroup()
        for thread in 0..<threads {
            DispatchQueue.global().async(group: workers) {
                var random = SplitMix64(seed: UInt64(40 + thread))
                var model: [String: [UInt8]?] = [:], mine = Set<String>()
                // The kernel's references each name's inode keeps (its make's, unless forgotten).
                var references: [String: UInt64] = [:]
                let directory = own[thread]
                do {
                    for step in 0..<400 {
                        let name = "n\(random.next() % 40)"
                        let where_ = random.next() % 4 == 0 ? shared : directory
                        let key = where_ == shared ? "t\(thread)-\(name)" : name
                        let exists = where_ == shared ? mine.contains(key) : model[key] != nil
                        switch random.next() % 8 {
                        case 0, 1:
                            guard !exists else { continue }
                            let bytes = (0..<Int(random.next() % 9000)).map { UInt8(truncatingIfNeeded: $0 &+ step) }
                            let (file, handle) = try fs.create(parent: where_, name: FileName(key), mode: 0o644,
                                                                flags: O_RDWR | O_EXCL, context: caller)
                            _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
                            if random.next() % 3 == 0 {
                                // Unlinked while open and referenced; written after, then closed.
                                try fs.unlink(parent: where_, name: FileName(key))
                                _ = try [1, 2, 3].withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
                                fs.release(inode: file.inode, handle: handle)
                                fs.forget(inode: file.inode, lookups: 1)
                                continue
                            }
                            fs.release(inode: file.inode, handle: handle)
                            if random.next() % 2 == 0 { fs.forget(inode: file.inode, lookups: 1) } else { references[key] = 1 }
                            if where_ == shared { mine.insert(key) } else { model[key] = bytes }
                        case 2:
                            guard !exists else { continue }
                            let made = try fs.mkdir(parent: where_, name: FileName(key), mode: 0o755, context: caller)
                            fs.forget(inode: made.inode, lookups: 1)
                            if where_ == shared { mine.insert(key) } else { model[key] = .some(nil) }
                        case 3:
                            guard !exists, where_ == directory else { continue }
                            _ = try fs.symlink(parent: where_, name: FileName(key), target: Array("x".utf8), context: caller)
                            references[key] = 1
                            model[key] = .some(nil)
                        case 5:
                            // A rename within its own directory, to a new name or over a file.
                            guard exists, where_ == directory else { continue }
                            let newKey = "n\(random.next() % 40)"
                            guard newKey != key, let moved = model[key] else { continue }
                            var replaced: InodeNumber?
                            if let target = model[newKey] {
                                guard moved != nil, target != nil else { continue }
                                replaced = try fs.lookup(parent: directory, name: FileName(newKey)).inode
                            }
                            try fs.rename(parent: directory, name: FileName(key), newParent: directory, newName: FileName(newKey),
                                          flags: [])
                            if let replaced {
                                // The replaced file's references go (the lookup's and its make's).
                                fs.forget(inode: replaced, lookups: 1 + (references.removeValue(forKey: newKey) ?? 0))
                            }
                            model[newKey] = moved
                            model[key] = nil
                            if let held = references.removeValue(forKey: key) { references[newKey] = held }
                        case 6:
                            // A rename across directories, from its own into the shared one
                            // (a directory's parent changes with it).
                            guard exists, where_ == directory else { continue }
                            let sharedKey = "t\(thread)-\(key)"
                            guard !mine.contains(sharedKey) else { continue }
                            try fs.rename(parent: directory, name: FileName(key), newParent: shared, newName: FileName(sharedKey),
                                          flags: [])
                            model[key] = nil
                            mine.insert(sharedKey)
                            if let held = references.removeValue(forKey: key) { references[sharedKey] = held }
                        default:
                            guard exists else { continue }
                            let kind = try fs.lookup(parent: where_, name: FileName(key))
                            let held = 1 + (references.removeValue(forKey: key) ?? 0)
                            // Half the removes find the inode unreferenced (its frame drops it),
                            // half leave an orphan until the FORGET after it.
                            let forgottenFirst = random.next() % 2 == 0
                            if forgottenFirst { fs.forget(inode: kind.inode, lookups: held) }
                            if kind.kind == .directory {
                                try fs.rmdir(parent: where_, name: FileName(key))
                            } else {
                                try fs.unlink(parent: where_, name: FileName(key))
                            }
                            if !forgottenFirst { fs.forget(inode: kind.inode, lookups: held) }
                            if where_ == shared { mine.remove(key) } else { model[key] = nil }
                        }
                    }
                } catch {
                    results.fail("thread \(thread): \(error)")
                }
                results.lock.lock()
                results.models[thread] = model
                results.sharedNames[thread] = mine
                results.lock.unlock()
            }
        }
        DispatchQueue.global().async(group: background) {
            while !stop.isSet {
                _ = try? fs.commitIfChanged()
                usleep(2000)
            }
        }
        DispatchQueue.global().async(group: background) {
            while !stop.isSet {
                for directory in own + [shared] {
                    guard let handle = try? fs.opendir(inode: directory) else { continue }
                    _ = try? fs.readdirplus(inode: directory, handle: handle, offset: 0, limit: 100)
                    fs.releasedir(inode: directory, handle: handle)
                }
            }
        }
        XCTAssertEqual(workers.wait(timeout: .now() + 120), .success)
        stop.set()
        XCTAssertEqual(background.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(results.failures, [])

        func check(_ fs: VolumeNamespace, _ when: String) throws {
            for thread in 0..<threads {
                let model = results.models[thread]
                XCTAssertEqual(Set(try names(in: own[thread], fs)), Set(model.keys), "\(when): thread \(thread)'s directory")
                for (name, bytes) in model {
                    guard let bytes else { continue }
                    let file = try fs.lookup(parent: own[thread], name: FileName(name))
                    let handle = try fs.open(inode: file.inode, flags: O_RDONLY)
                    XCTAssertTrue(try fs.read(inode: file.inode, handle: handle, offset: 0, count: 10_000) == bytes,
                                  "\(when): thread \(thread)'s \(name)")
                    fs.release(inode: file.inode, handle: handle)
                }
            }
            XCTAssertEqual(Set(try names(in: shared, fs)), results.sharedNames.reduce(into: Set<String>()) { $0.formUnion($1) },
                           "\(when): the shared directory")
        }
        try check(fs, "mounted")
        let present = 1 + 1 + threads + results.models.map(\.count).reduce(0, +) + results.sharedNames.map(\.count).reduce(0, +)
        let statistics = fs.statfs()
        XCTAssertGreaterThanOrEqual(statistics.totalInodes - statistics.freeInodes, UInt64(present), "statfs counts every inode there")

        // No unmount: the next open replays the journal the threads' frames went to, in the
        // order they were appended (the delta's order may differ between frames of
        // different objects).
        try fs.volume.sync()
        let reopened = try TreeVolume.open(storage)
        let again = try VolumeNamespace(volume: reopened, memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        try check(again, "replayed")
        let counted = again.statfs()
        XCTAssertEqual(counted.totalInodes - counted.freeInodes, UInt64(present), "after a new mount, only the inodes there")
        try reopened.commit()
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
        XCTAssertEqual(report.inodes, present)
    }

    private func makeFileSystem(on storage: MemoryImageStorage) throws -> VolumeFileSystem {
        try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    private func names(in directory: InodeNumber, _ fs: VolumeNamespace) throws -> [String] {
        let handle = try fs.opendir(inode: directory)
        defer { fs.releasedir(inode: directory, handle: handle) }
        return try fs.readdir(inode: directory, handle: handle, offset: 0, limit: 10_000)
            .map { String(decoding: $0.name, as: UTF8.self) }.filter { $0 != "." && $0 != ".." }.sorted()
    }
}
