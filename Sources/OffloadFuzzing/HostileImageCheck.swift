import OffloadCore
import OffloadNamespace
import OffloadSimulation
#if canImport(Glibc)
import Glibc
#endif

/// What must hold for ANY bytes handed to offloadfs as an image, checked on one image:
/// by the fuzzer on each of its inputs, and by the tests on damaged real images.
///
/// 1. Mounting it (`ImageFileSystem.open`: identity, checkpoint and journal replay,
///    analysis, which is also all `fsck` does) either succeeds, and then the allocator's
///    invariants hold, it closes, and the closed image opens again with nothing to repair;
///    or it refuses with a clear error: `.damagedImage` or `.invalidArgument` (not an
///    offloadfs image, a newer version).
/// 2. Repairing it (`open(repair: true)`, what `fsck --repair` runs) either succeeds, and
///    then the repaired image closes and opens again with nothing to repair; or it
///    refuses with a clear error. An image that mounts as it is must also repair.
///
/// A trap anywhere in these is a crash the fuzzer reports; a broken property is a
/// `Violation`, which the fuzzer turns into a crash too.
public enum HostileImageCheck {
    /// The capacity every open uses: far above any `FuzzInput` image, so that running
    /// out of space is never the reason an image is refused.
    public static let capacityBytes: UInt64 = 32 << 20
    /// Small, so that journaled RAM pieces go both to memory and to image blocks on restore.
    static let memoryLimitBytes = 64 << 10

    public struct Violation: Error, CustomStringConvertible {
        public let description: String
    }

    /// What happened to one image (for the tests' tallies).
    public struct Outcome: Sendable, Equatable {
        /// nil: it opened as it was; else why it was refused.
        public var refusal: FSError?
        /// nil: `open(repair: true)` gave an image that opens cleanly; else why it refused.
        public var repairRefusal: FSError?
        /// Fixes the repair reported.
        public var repairs: Int
    }

    @discardableResult
    public static func check(_ image: [UInt8]) throws(Violation) -> Outcome {
        try check(MemoryImageStorage(maximumBytes: max(image.count, 1), initial: image))
    }

    /// `check` of the image `original` holds (it is only read: every open works on a copy).
    @discardableResult
    public static func check(_ original: MemoryImageStorage) throws(Violation) -> Outcome {
        var outcome = Outcome(refusal: nil, repairRefusal: nil, repairs: 0)
        do {
            _ = try openCloseAndReopen(original, repair: false)
        } catch let error as Violation {
            throw error
        } catch let error as FSError {
            try requireClear(error, "open")
            outcome.refusal = error
        } catch {
            throw Violation(description: "open threw \(error)")
        }
        do {
            outcome.repairs = try openCloseAndReopen(original, repair: true)
        } catch let error as Violation {
            throw error
        } catch let error as FSError {
            try requireClear(error, "open(repair: true)")
            guard outcome.refusal != nil else {
                throw Violation(description: "the image opens as it is, but open(repair: true) refuses it: \(error)")
            }
            outcome.repairRefusal = error
        } catch {
            throw Violation(description: "open(repair: true) threw \(error)")
        }
        return outcome
    }

    /// Opens `image` (the only step whose `FSError` is a refusal), checks the store, uses
    /// the filesystem, closes it (a clean checkpoint), and opens the result again, which
    /// must need no repair. Returns the repairs the first open made.
    private static func openCloseAndReopen(_ original: MemoryImageStorage, repair: Bool) throws -> Int {
        let first = try open(original, repair: repair)
        let what = "open(repair: \(repair))"
        do {
            try first.fileSystem.store.checkInvariants()
            try probe(first.fileSystem.namespace, after: what)
            try first.fileSystem.close()
        } catch let error as FSError {
            throw Violation(description: "after \(what): \(error)")
        }
        do {
            let second = try open(first.storage, repair: false)
            guard second.fileSystem.report.repairs.isEmpty else {
                throw Violation(description: "after \(what) and close, the image still needs repairs: \(second.fileSystem.report.repairs)")
            }
            try second.fileSystem.store.checkInvariants()
            try second.fileSystem.close()
        } catch let error as FSError {
            throw Violation(description: "after \(what) and close, the image does not open again: \(error)")
        }
        return first.fileSystem.report.repairs.count
    }

    /// What a user does first on a mounted image: create, write and read back a file, make
    /// a directory, move the file into it, remove both. Names the image already has are
    /// fine (`.exists`); anything else going wrong is a broken image.
    private static func probe(_ fs: Namespace, after what: String) throws {
        let context = RequestContext.root
        let name = try FileName("fuzz-probe"), directoryName = try FileName("fuzz-probe.d")
        let data = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        do {
            let (file, handle) = try fs.create(parent: .root, name: name, mode: 0o100644, flags: O_RDWR, context: context)
            _ = try data.withBytes { (buffer) throws(FSError) in
                try fs.write(inode: file.inode, handle: handle, offset: 0, data: buffer)
            }
            let back = try fs.read(inode: file.inode, handle: handle, offset: 0, count: data.count)
            fs.release(inode: file.inode, handle: handle)
            guard back == data else { throw Violation(description: "after \(what), a file written reads back wrong") }
            let directory = try fs.mkdir(parent: .root, name: directoryName, mode: 0o755, context: context)
            try fs.rename(parent: .root, name: name, newParent: directory.inode, newName: name, flags: [])
            try fs.unlink(parent: directory.inode, name: name)
            try fs.rmdir(parent: .root, name: directoryName)
        } catch FSError.exists {
            // The image has one of the names already.
        }
    }

    /// Opens a copy of `image` (room for the whole capacity), so `image` stays as it was.
    private static func open(_ image: MemoryImageStorage, repair: Bool) throws(FSError) -> (fileSystem: ImageFileSystem, storage: MemoryImageStorage) {
        let storage = MemoryImageStorage(copying: image,
                                         maximumBytes: Int(capacityBytes) + 2 * BackingStore.blockSize + Int(image.length))
        let fileSystem = try ImageFileSystem.open(storage: storage, capacityBytes: capacityBytes,
                                                  memoryLimiter: MemoryLimiter(limitBytes: memoryLimitBytes),
                                                  repair: repair)
        return (fileSystem, storage)
    }

    private static func requireClear(_ error: FSError, _ what: String) throws(Violation) {
        switch error {
        case .damagedImage, .invalidArgument: return
        default: throw Violation(description: "\(what) refused the image with an unclear error: \(error)")
        }
    }
}
