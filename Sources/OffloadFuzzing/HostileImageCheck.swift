import OffloadCore
import OffloadNamespace
import OffloadSimulation
#if canImport(Glibc)
import Glibc
#endif

/// What must hold for ANY bytes handed to offloadfs as an image, checked on one image:
/// by the fuzzer on each of its inputs, and by the tests on damaged real images. An image
/// whose bytes say format 2 (`ImageIdentity`: commit slots) is checked as format 2
/// (`HostileImageCheck+FormatTwo.swift`), as the mount opens it; any other as format 1:
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
        if (try? ImageIdentity.read(original)) == .newerVersion(CommitSlot.version) { return try checkFormatTwo(original) }
        var outcome = Outcome(refusal: nil, repairRefusal: nil, repairs: 0)
        try checkUpgrade(original, after: "nothing")
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
            try ClientProbe.walk(first.fileSystem.namespace)
            try ClientProbe.changes(first.fileSystem.namespace, after: what)
            try first.fileSystem.close()
        } catch let error as FSError {
            throw Violation(description: "after \(what): \(error)")
        } catch let failure as ClientProbe.Failure {
            throw Violation(description: "after \(what): \(failure)")
        }
        try checkUpgrade(first.storage, after: "\(what) and a close")
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

    /// A copy of `image` with room for the whole capacity, so `image` stays as it was.
    static func copy(_ image: MemoryImageStorage) -> MemoryImageStorage {
        MemoryImageStorage(copying: image, maximumBytes: Int(capacityBytes) + 2 * BackingStore.blockSize + Int(image.length))
    }

    /// Opens a copy of `image` (room for the whole capacity), so `image` stays as it was.
    private static func open(_ image: MemoryImageStorage, repair: Bool) throws(FSError) -> (fileSystem: ImageFileSystem, storage: MemoryImageStorage) {
        let storage = copy(image)
        let fileSystem = try ImageFileSystem.open(storage: storage, capacityBytes: capacityBytes,
                                                  memoryLimiter: MemoryLimiter(limitBytes: memoryLimitBytes),
                                                  repair: repair)
        return (fileSystem, storage)
    }

    static func requireClear(_ error: FSError, _ what: String) throws(Violation) {
        switch error {
        case .damagedImage, .invalidArgument: return
        default: throw Violation(description: "\(what) refused the image with an unclear error: \(error)")
        }
    }
}
