import Dispatch
import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace

/// In the daemon, requests run on libfuse's threads while the maintenance runs on its own
/// queue (fdatasync, reuse of freed blocks, a checkpoint once the journal is long), and
/// fsync makes the image durable from any request thread. Here all of it at once, on an
/// in-memory image, the maintenance ticking every millisecond and checkpointing after
/// 8 KiB of journal; afterwards the image, closed and reopened, must hold exactly what the
/// threads left. Under ThreadSanitizer (scripts/tsan) this is the test of those paths.
final class MaintenanceConcurrencyTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20

    func testRequestsFsyncsAndMaintenanceRunTogether() throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity) + (1 << 20))
        let fileSystem = try ImageFileSystem.open(storage: storage, capacityBytes: Self.capacity,
                                                  memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let generationBefore = try generation(of: storage)
        let failures = PthreadMutex<[String]>([])
        fileSystem.startMaintenance(interval: 0.001, checkpointAfter: 8192) { error in
            failures.withLock { $0.append("maintenance: \(error)") }
        }
        let fs = fileSystem.namespace
        let workers = 4, filesPerWorker = 60
        Self.runWorkers(fs, workers: workers, filesPerWorker: filesPerWorker, failures: failures)
        try fileSystem.close()
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertGreaterThan(try generation(of: storage), generationBefore + 2, "the maintenance took checkpoints during the work")

        let reopened = try ImageFileSystem.open(storage: MemoryImageStorage(copying: storage), capacityBytes: Self.capacity,
                                                memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        XCTAssertEqual(reopened.report.repairs, [])
        try Self.checkWhatTheWorkersLeft(reopened.namespace, workers: workers, filesPerWorker: filesPerWorker)
        try reopened.close()
    }

    /// `workers` threads at once, each in a directory of its own: creates, writes, fsyncs
    /// (every fifth file), releases, unlinks (every third) and a getattr of the directory.
    static func runWorkers(_ fs: any FileSystemOperations, workers: Int, filesPerWorker: Int,
                           failures: PthreadMutex<[String]>) {
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            do {
                let directory = try fs.mkdir(parent: .root, name: FileName("w\(worker)"), mode: 0o755, context: .root).inode
                for i in 0..<filesPerWorker {
                    let name = try FileName("f\(i)")
                    let (file, handle) = try fs.create(parent: directory, name: name, mode: 0o100644,
                                                       flags: O_RDWR, context: .root)
                    let bytes = contents(worker: worker, file: i)
                    _ = try bytes.withUnsafeBytes { try fs.write(inode: file.inode, handle: handle, offset: 0, data: $0) }
                    if i % 5 == 0 { try fs.fsync(inode: file.inode, handle: handle, dataOnly: i % 2 == 0) }
                    fs.release(inode: file.inode, handle: handle)
                    if i % 3 == 0 { try fs.unlink(parent: directory, name: name) }
                    _ = try fs.getattr(inode: directory)
                }
            } catch {
                failures.withLock { $0.append("worker \(worker): \(error)") }
            }
        }
    }

    /// Every file the workers kept reads back its bytes; every third one is gone.
    static func checkWhatTheWorkersLeft(_ fs: any FileSystemOperations, workers: Int, filesPerWorker: Int,
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        for worker in 0..<workers {
            let directory = try fs.lookup(parent: .root, name: FileName("w\(worker)")).inode
            for i in 0..<filesPerWorker {
                let name = try FileName("f\(i)")
                guard i % 3 != 0 else {
                    XCTAssertThrowsError(try fs.lookup(parent: directory, name: name), "w\(worker)/f\(i) was removed",
                                         file: file, line: line)
                    continue
                }
                let found = try fs.lookup(parent: directory, name: name).inode
                let handle = try fs.open(inode: found, flags: O_RDONLY)
                let expected = contents(worker: worker, file: i)
                XCTAssertEqual(try fs.read(inode: found, handle: handle, offset: 0, count: expected.count + 1), expected,
                               "w\(worker)/f\(i)", file: file, line: line)
                fs.release(inode: found, handle: handle)
            }
        }
    }

    static func contents(worker: Int, file: Int) -> [UInt8] {
        pattern(100 + (file * 331 + worker * 97) % 9000, seed: worker * 100 + file)
    }

    private func generation(of storage: MemoryImageStorage) throws -> UInt64 {
        guard case .image(let superblock, _) = try ImageIdentity.read(storage) else {
            XCTFail("no superblock")
            return 0
        }
        return superblock.generation
    }
}
