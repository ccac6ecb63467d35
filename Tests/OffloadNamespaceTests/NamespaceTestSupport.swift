import XCTest
import Foundation
import OffloadCore
@testable import OffloadNamespace

/// Foundation has a `FileHandle` too; the tests mean the namespace's.
typealias FileHandle = OffloadNamespace.FileHandle

/// A clock the tests move by hand, so timestamp checks are exact.
final class ManualClock: Sendable {
    private let current = PthreadMutex(Timestamp(seconds: 1_000_000, nanoseconds: 0))

    var now: Timestamp { current.withLock { $0 } }

    /// Moves time forward by `seconds` and returns the new time.
    @discardableResult
    func advance(seconds: Int64 = 1) -> Timestamp {
        current.withLock { now in
            now.seconds += seconds
            return now
        }
    }
}

/// A namespace on a fresh image in a temporary directory, removed afterwards.
///
/// The memory limit is 0 by default so that every written byte goes to the image and
/// `store.statistics.liveBytes` shows exactly what files hold.
final class Fixture {
    let directory: URL
    let store: BackingStore
    let limiter: MemoryLimiter
    let clock = ManualClock()
    let fs: Namespace

    init(capacityBytes: UInt64 = 64 << 20, memoryLimitBytes: Int = 0) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("offloadfs-ns-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        store = try BackingStore(path: directory.appendingPathComponent("image.bin").path,
                                 capacityBytes: capacityBytes)
        limiter = MemoryLimiter(limitBytes: memoryLimitBytes)
        let clock = self.clock
        fs = Namespace(store: store, memoryLimiter: limiter, clock: { clock.now })
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    var liveBytes: UInt64 { store.statistics.liveBytes }

    // MARK: Shortcuts (each one asserts nothing; tests assert on the results)

    @discardableResult
    func mkdir(_ name: String, in parent: InodeNumber = .root, mode: UInt32 = 0o755,
               as context: RequestContext = .user) throws -> Attributes {
        try fs.mkdir(parent: parent, name: FileName(name), mode: mode, context: context)
    }

    /// Creates a regular file opened read-write; returns its attributes and handle.
    func create(_ name: String, in parent: InodeNumber = .root, mode: UInt32 = 0o644,
                flags: Int32 = O_RDWR | O_CREAT, as context: RequestContext = .user)
        throws -> (attributes: Attributes, handle: FileHandle) {
        let (attributes, handle) = try fs.create(parent: parent, name: FileName(name),
                                                 mode: 0o100000 | mode, flags: flags, context: context)
        return (attributes, handle)
    }

    /// Creates a file, writes `contents` and releases the handle. The kernel's lookup
    /// reference from create stays.
    @discardableResult
    func makeFile(_ name: String, in parent: InodeNumber = .root,
                  contents: [UInt8] = []) throws -> InodeNumber {
        let (attributes, handle) = try create(name, in: parent)
        if !contents.isEmpty {
            _ = try write(attributes.inode, handle, at: 0, contents)
        }
        fs.release(inode: attributes.inode, handle: handle)
        return attributes.inode
    }

    func write(_ inode: InodeNumber, _ handle: FileHandle, at offset: UInt64,
               _ bytes: [UInt8]) throws -> Int {
        try bytes.withUnsafeBytes { buffer in
            try fs.write(inode: inode, handle: handle, offset: offset, data: buffer)
        }
    }

    func lookup(_ name: String, in parent: InodeNumber = .root) throws -> Attributes {
        try fs.lookup(parent: parent, name: FileName(name))
    }

    /// Every entry of a directory through readdir, `batch` entries per call.
    func list(_ directory: InodeNumber, batch: Int = 1000) throws -> [DirectoryEntry] {
        let handle = try fs.opendir(inode: directory)
        defer { fs.releasedir(inode: directory, handle: handle) }
        var entries: [DirectoryEntry] = []
        var offset: UInt64 = 0
        while true {
            let page = try fs.readdir(inode: directory, handle: handle, offset: offset, limit: batch)
            guard let last = page.last else { return entries }
            entries += page
            offset = last.nextOffset
        }
    }

    /// The names in a directory other than "." and "..", sorted.
    func names(_ directory: InodeNumber = .root) throws -> [String] {
        try list(directory).map { String(decoding: $0.name, as: UTF8.self) }
            .filter { $0 != "." && $0 != ".." }.sorted()
    }
}

extension RequestContext {
    static let user = RequestContext(uid: 1000, gid: 1000)
}

/// Bytes 0, 1, 2, ... wrapping at 251 (a prime, so pages never repeat alignment).
func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 + seed) % 251) }
}

/// Fails unless `body` throws exactly `expected`.
func assertThrows<T>(_ expected: FSError, file: StaticString = #filePath, line: UInt = #line,
                     _ body: () throws -> T) {
    do {
        let result = try body()
        XCTFail("expected \(expected), got success: \(result)", file: file, line: line)
    } catch let error as FSError {
        XCTAssertEqual(error, expected, file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(error)", file: file, line: line)
    }
}

extension FSError {
    /// Compares only the case for errors that carry a reason string.
    var isInvalidArgument: Bool {
        if case .invalidArgument = self { return true }
        return false
    }
}

/// Fails unless `body` throws `.invalidArgument` (whatever the reason).
func assertInvalidArgument<T>(file: StaticString = #filePath, line: UInt = #line,
                              _ body: () throws -> T) {
    do {
        let result = try body()
        XCTFail("expected EINVAL, got success: \(result)", file: file, line: line)
    } catch let error as FSError {
        XCTAssertTrue(error.isInvalidArgument, "expected EINVAL, got \(error)", file: file, line: line)
    } catch {
        XCTFail("expected EINVAL, got \(error)", file: file, line: line)
    }
}

extension VolumeNamespace {
    /// A frame written holding the namespace lock alone, as the operations that still hold
    /// it write theirs (a rename across directories, a truncate): the root's item restated. Such a frame
    /// carries the drops of the inodes forgotten since the last (`dropForgotten`); the
    /// frames of changes that share the lock carry none.
    func writeFrameHoldingTheLockAlone() throws {
        try changing { (reader, operation) throws(FSError) in
            guard let root = try reader.inode(1) else { throw .staleInode }
            operation.changes.append(.attributes(inode: 1, root))
        }
    }
}

/// Runs `body` on a thread of its own, inside `group`. For steps a test expects to wait
/// on a lock, several at once: the global dispatch queue runs about as many blocks at once
/// as there are cores, so on two cores a third step waiting on a pthread lock would not
/// start (and a check that it waited would pass without it).
func onThreadOfItsOwn(_ group: DispatchGroup, _ body: @escaping @Sendable () -> Void) {
    group.enter()
    let thread = Thread {
        body()
        group.leave()
    }
    thread.start()
}

/// Two threads meet here each round: `wait` returns once both have called it.
final class TwoPartyBarrier: @unchecked Sendable {
    private let condition = NSCondition()
    private var arrived = 0
    private var round = 0

    func wait() {
        condition.lock()
        defer { condition.unlock() }
        let mine = round
        arrived += 1
        if arrived == 2 {
            arrived = 0
            round += 1
            condition.broadcast()
            return
        }
        while round == mine { condition.wait() }
    }
}

/// A flag one thread sets and others poll.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// What steps run on other threads report: failures, and which steps finished.
final class StepOutcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var failed: [String] = []
    private var done: Set<String> = []
    func fail(_ message: String) { lock.withLock { failed.append(message) } }
    func finish(_ step: String) { lock.withLock { _ = done.insert(step) } }
    var failures: [String] { lock.withLock { failed } }
    var finished: Set<String> { lock.withLock { done } }
}
