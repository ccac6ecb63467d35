import Dispatch
import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace

/// Format 2 as the daemon runs it (`VolumeFileSystem`): requests on several threads while
/// the maintenance commits on its own queue every millisecond (at every tick that finds a
/// change: `journalBytes: 1`, the crash soak's kind of setting), fsyncs from the request
/// threads, and `offloadfs status` reading the usage meanwhile. Afterwards the image,
/// closed (the last commit marked clean) and reopened, holds exactly what the threads
/// left and checks clean. Under ThreadSanitizer (scripts/tsan) this is the test of those
/// paths on format 2.
final class VolumeMaintenanceConcurrencyTests: XCTestCase {
    static let capacity: UInt64 = 64 << 20

    func testRequestsFsyncsStatusAndCommitsRunTogether() throws {
        try runRequestsBesideCommits(limits: nil, maintenanceInterval: 0.001)
    }

    /// The same with limits so low (eight changed objects), and the maintenance ticking
    /// every 20 ms, that the request threads' operations commit on their own all the time (`commitIfOverBudget`): each closes the
    /// open generation with the namespace lock held alone and commits outside it, beside
    /// the others' changes, the others at the budget and the maintenance's closes
    /// (docs/ARCHITECTURE.md, "Step 7, eighth part"). A change whose block calls and frame
    /// fell in different generations would leave the image's reference counts wrong,
    /// which the check after the reopening finds.
    func testRequestsRunBesideTheirOwnCommitsAtTheBudget() throws {
        try runRequestsBesideCommits(limits: TreeVolume.Limits(journalBytes: 64 << 20, dirtyObjects: 8), maintenanceInterval: 0.02)
    }

    private func runRequestsBesideCommits(limits: TreeVolume.Limits?, maintenanceInterval: Double) throws {
        let storage = MemoryImageStorage(maximumBytes: Int(Self.capacity))
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(Self.capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        if let limits { fileSystem.volume.limits = limits }
        let generationBefore = fileSystem.volume.current.generation
        let failures = PthreadMutex<[String]>([])
        let commits = PthreadMutex(0)
        fileSystem.startMaintenance(interval: maintenanceInterval, journalBytes: 1, onWrite: { _ in commits.withLock { $0 += 1 } }) { error in
            failures.withLock { $0.append("maintenance: \(error)") }
        }
        let fs = fileSystem.namespace
        let workers = 4, filesPerWorker = 60
        let done = PthreadMutex(false)
        let statusReader = Thread {
            while !done.withLock({ $0 }) {
                _ = fileSystem.usage()
                _ = fs.statfs()
                usleep(500)
            }
        }
        statusReader.start()
        MaintenanceConcurrencyTests.runWorkers(fs, workers: workers, filesPerWorker: filesPerWorker, failures: failures)
        done.withLock { $0 = true }
        let generationAfterWork = fileSystem.volume.current.generation
        try fileSystem.close(meter: nil)
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertGreaterThan(fileSystem.volume.current.generation, generationBefore + 2, "the maintenance committed during the work")
        XCTAssertTrue(fileSystem.volume.current.cleanlyUnmounted)
        print("format 2 maintenance: \(commits.withLock { $0 }) of \(generationAfterWork - generationBefore) commits during the work")

        let reopened = try VolumeFileSystem.open(storage: storage, capacity: .kept(default: 0),
                                                 memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        XCTAssertEqual(reopened.report.journalFrames, 0, "a clean unmount leaves nothing to replay")
        let again = reopened.namespace
        try MaintenanceConcurrencyTests.checkWhatTheWorkersLeft(again, workers: workers, filesPerWorker: filesPerWorker)
        XCTAssertEqual(again.usage.inodes, UInt64(1 + workers + workers * (filesPerWorker - filesPerWorker / 3)))
        try reopened.close(meter: nil)
        let report = try VolumeCheck.run(storage)
        XCTAssertTrue(report.isClean, "\(report.problems.prefix(3))")
    }
}
