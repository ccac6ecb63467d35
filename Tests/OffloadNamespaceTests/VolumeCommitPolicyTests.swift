import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace

/// When a mount's maintenance commits format 2 (`VolumeCommitPolicy`, docs/ARCHITECTURE.md,
/// "When format 2 commits"): not while operations keep coming, but once they pause, once
/// the last commit is old, or once the open generation nears the volume's limits, and then
/// without waiting for the next tick.
final class VolumeCommitPolicyTests: XCTestCase {
    /// Large enough not to be low on free space (`isLowOnSpace`: below 128 MiB here).
    static let capacity: UInt64 = 1 << 30

    private func newFileSystem(capacity: UInt64 = capacity) throws -> VolumeFileSystem {
        try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(capacity)),
                                    capacity: .set(capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
    }

    /// Directories d<index> under the root, each one object of the open generation.
    private func makeDirectories(_ fs: VolumeNamespace, _ range: Range<Int>) throws {
        for index in range {
            _ = try fs.mkdir(parent: .root, name: FileName("d\(index)"), mode: 0o755, context: RequestContext(uid: 0, gid: 0))
        }
    }

    func testThePolicyCommitsAtRestNearTheLimitsAndWhenOld() {
        let policy = VolumeCommitPolicy(idleSeconds: 1, maximumAgeSeconds: 30)
        func commits(_ policy: VolumeCommitPolicy, journal: UInt64 = 4096, budget: TreeVolume.BudgetUse = .under,
                     lowOnSpace: Bool = false, sinceAppend: Double? = 0.1, sinceCommit: Double = 5) -> Bool {
            policy.commitsChanges(journalBytes: journal, budget: budget, lowOnSpace: lowOnSpace,
                                  secondsSinceLastAppend: sinceAppend, secondsSinceCommit: sinceCommit)
        }
        XCTAssertFalse(commits(policy, journal: 0, budget: .nearing, sinceAppend: 10, sinceCommit: 100), "nothing to commit")
        XCTAssertFalse(commits(policy), "operations still coming, the last commit recent")
        XCTAssertTrue(commits(policy, sinceAppend: 1.0), "at rest")
        XCTAssertTrue(commits(policy, sinceAppend: nil), "nothing appended this mount (replayed changes)")
        XCTAssertTrue(commits(policy, sinceCommit: 30), "the last commit is old")
        XCTAssertTrue(commits(policy, budget: .nearing), "near the limits")
        XCTAssertTrue(commits(policy, budget: .reached))
        XCTAssertTrue(commits(policy, lowOnSpace: true), "low on free space: every tick, as before")
        XCTAssertFalse(commits(policy, journal: 0, lowOnSpace: true))
        XCTAssertEqual(VolumeCommitPolicy().maximumAgeSeconds, 10)
        XCTAssertFalse(commits(VolumeCommitPolicy(journalBytes: 8192), journal: 8191))
        XCTAssertTrue(commits(VolumeCommitPolicy(journalBytes: 8192), journal: 8192))

        let everyTick = VolumeCommitPolicy.everyTick(journalBytes: 16384)
        XCTAssertFalse(commits(everyTick, journal: 16383, sinceAppend: 100, sinceCommit: 1000), "below its bytes, at rest or not")
        XCTAssertTrue(commits(everyTick, journal: 16384))
        XCTAssertTrue(commits(.everyTick(journalBytes: 1), journal: 1), "the tests' and tools' default: any change")
    }

    func testLowOnSpaceIsBelow64MiBOrAnEighthOfTheCapacityUpTo1GiB() {
        func low(_ availableMiB: UInt64, of capacityMiB: UInt64) -> Bool {
            VolumeCommitPolicy.isLowOnSpace(availableBytes: availableMiB << 20, capacityBytes: capacityMiB << 20)
        }
        XCTAssertTrue(low(63, of: 64))
        XCTAssertTrue(low(63, of: 100_000))
        XCTAssertFalse(low(64, of: 256), "an eighth of 256 MiB is below the 64 MiB floor")
        XCTAssertTrue(low(511, of: 4096))
        XCTAssertFalse(low(512, of: 4096))
        XCTAssertTrue(low(1023, of: 1 << 20), "at most 1 GiB")
        XCTAssertFalse(low(1024, of: 1 << 20))
    }

    func testTheVolumeSaysWhenItNearsItsLimits() throws {
        let fileSystem = try newFileSystem()
        defer { try? fileSystem.close(meter: nil) }
        let fs = fileSystem.namespace, volume = fileSystem.volume
        volume.limits = TreeVolume.Limits(journalBytes: 64 << 20, dirtyObjects: 40)
        XCTAssertEqual(volume.budget, .under)
        // Each directory is one object, and the root another: 29 directories make 30 of
        // 40, three quarters.
        try makeDirectories(fs, 0..<28)
        XCTAssertEqual(volume.budget, .under, "29 of 40 objects")
        try makeDirectories(fs, 28..<29)
        XCTAssertEqual(volume.budget, .nearing, "30 of 40 objects")
        volume.limits = TreeVolume.Limits(journalBytes: 64 << 20, dirtyObjects: 30)
        XCTAssertEqual(volume.budget, .reached)
    }

    /// Changes do not commit while they come (the maintenance asked with the mount's
    /// policy), and do once nothing came for the idle time.
    func testTheMaintenanceWaitsWhileOperationsComeAndCommitsAtRest() throws {
        let fileSystem = try newFileSystem()
        defer { try? fileSystem.close(meter: nil) }
        let fs = fileSystem.namespace
        // Idle after 1.5 s: the first check below comes well within it on a loaded machine.
        let policy = VolumeCommitPolicy(idleSeconds: 1.5, maximumAgeSeconds: 3600)
        // What opening committed is settled first (idle commits after a commit).
        while try fs.commitIfChanged(policy: policy) != nil {}
        let generation = fileSystem.volume.current.generation
        _ = try fs.mkdir(parent: .root, name: FileName("busy"), mode: 0o755, context: RequestContext(uid: 0, gid: 0))
        XCTAssertNil(try fs.commitIfChanged(policy: policy), "committed while operations came")
        XCTAssertEqual(fileSystem.volume.current.generation, generation)
        usleep(1_600_000)
        XCTAssertNotNil(try fs.commitIfChanged(policy: policy), "nothing committed at rest")
        XCTAssertEqual(fileSystem.volume.current.generation, generation + 1)
        XCTAssertEqual(fileSystem.volume.journalBytesSinceCommit, 0)
    }

    /// A small image (32 MiB: always below 64 MiB free) commits at every call that finds a
    /// change, busy or not, as before: its commits must fit the free blocks and the
    /// metadata reserve.
    func testASmallImageCommitsWhileOperationsCome() throws {
        let fileSystem = try newFileSystem(capacity: 32 << 20)
        defer { try? fileSystem.close(meter: nil) }
        let fs = fileSystem.namespace
        let policy = VolumeCommitPolicy(idleSeconds: 3600, maximumAgeSeconds: 3600)
        let generation = fileSystem.volume.current.generation
        try makeDirectories(fs, 0..<1)
        XCTAssertNotNil(try fs.commitIfChanged(policy: policy), "a busy small image did not commit")
        XCTAssertEqual(fileSystem.volume.current.generation, generation + 1)
    }

    /// A tick that does not commit still makes the journal durable: a power cut loses at
    /// most one interval of work, as before the policy (README's promise).
    func testATickThatDoesNotCommitSyncsTheJournal() throws {
        let storage = CrashSimulatingStorage(maximumBytes: 256 << 20)
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(256 << 20),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        defer { try? fileSystem.close(meter: nil) }
        let fs = fileSystem.namespace, volume = fileSystem.volume
        let generation = volume.current.generation
        fileSystem.startMaintenance(interval: 0.05, journalBytes: 1 << 40, onWrite: nil, onError: { _ in })
        try makeDirectories(fs, 0..<1)
        let syncs = storage.syncCount
        let deadline = DispatchTime.now() + 10
        while storage.syncCount == syncs && DispatchTime.now() < deadline { usleep(10_000) }
        XCTAssertGreaterThan(storage.syncCount, syncs, "no tick synced the journal")
        XCTAssertEqual(volume.current.generation, generation, "setup: the ticks were not to commit")
    }

    /// Operations that bring the open generation near the limits wake the maintenance,
    /// which commits off their path; its timer (an hour here) never ticks.
    func testOperationsNearTheLimitsWakeTheMaintenance() throws {
        let fileSystem = try newFileSystem()
        defer { try? fileSystem.close(meter: nil) }
        let fs = fileSystem.namespace, volume = fileSystem.volume
        volume.limits = TreeVolume.Limits(journalBytes: 64 << 20, dirtyObjects: 40)
        fileSystem.startMaintenance(interval: 3600, journalBytes: nil, onWrite: nil, onError: { _ in })
        let generation = volume.current.generation
        try makeDirectories(fs, 0..<28)
        usleep(300_000)
        XCTAssertEqual(volume.current.generation, generation, "committed below three quarters of the limits")
        try makeDirectories(fs, 28..<29)
        let deadline = DispatchTime.now() + 10
        while volume.current.generation == generation && DispatchTime.now() < deadline { usleep(10_000) }
        XCTAssertEqual(volume.current.generation, generation + 1, "the maintenance did not commit near the limits")
        XCTAssertEqual(volume.budget, .under)
        XCTAssertEqual(try fs.lookup(parent: .root, name: FileName("d28")).kind, .directory)
    }
}
