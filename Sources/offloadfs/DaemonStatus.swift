import FuseBridge
import OffloadCore
import OffloadNamespace
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The running daemon as `offloadfs status` sees it: everything a `MountStatus` is built
/// from, and the daemon's state (starting, serving, stopping), which the start-up and
/// shutdown code moves.
final class DaemonStatus: Sendable {
    enum State: Int {
        case starting, serving, stopping

        var name: String { "\(self)" }
    }

    private let fileSystem: any MountedImage
    private let memoryLimiter: MemoryLimiter
    private let counters: RequestCounters
    private let meter: ProgressMeter
    private let mountPoint: String
    private let options: [String]
    private let startedAt: timespec
    private let startedMonotonic: Double
    private let state = Atomic<Int>(State.starting.rawValue)
    /// Why the final commit failed, where the image has no place for it (format 2):
    /// `offloadfs unmount` reads it as the problem of the stopping daemon.
    private let finalFailure = PthreadMutex<String?>(nil)
    /// The watch on the image's deletion (started after the status server): a deleted
    /// image is the mount's problem until the unmount.
    private let imageWatch = PthreadMutex<ImageRemovalWatch?>(nil)

    init(fileSystem: any MountedImage, memoryLimiter: MemoryLimiter, counters: RequestCounters,
         meter: ProgressMeter, mountPoint: String, options: [String]) {
        self.fileSystem = fileSystem
        self.memoryLimiter = memoryLimiter
        self.counters = counters
        self.meter = meter
        self.mountPoint = mountPoint
        self.options = options
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        startedAt = now
        startedMonotonic = Self.monotonicSeconds()
    }

    func set(_ newState: State) { state.store(newState.rawValue, ordering: .releasing) }

    func setFinalFailure(_ message: String) { finalFailure.withLock { $0 = message } }

    func watchImage(_ watch: ImageRemovalWatch?) { imageWatch.withLock { $0 = watch } }

    var current: State { State(rawValue: state.load(ordering: .acquiring)) ?? .starting }

    func snapshot() -> MountStatus {
        let usage = fileSystem.usage()
        let served = counters.snapshot()
        let current = self.current
        let reading = meter.reading
        let failedFinalCommit = finalFailure.withLock { $0 }
        return MountStatus(
            version: ProductVersion.string, mountpoint: mountPoint, pid: getpid(), ownerUid: geteuid(),
            state: current.name, readOnly: fileSystem.isReadOnly,
            problem: failedFinalCommit ?? imageWatch.withLock({ $0?.deletionProblem }) ?? fileSystem.problem,
            finalFailure: failedFinalCommit,
            progress: current == .serving ? nil : MountStatus.Progress(
                phase: reading.phase, done: reading.done, total: reading.total, unit: reading.unit.rawValue),
            startedAt: Int64(startedAt.tv_sec), uptimeSeconds: Self.monotonicSeconds() - startedMonotonic,
            capacityBytes: usage.capacityBytes,
            usedBytes: usage.capacityBytes - min(usage.freeBytes, usage.capacityBytes),
            availableBytes: usage.availableBytes,
            image: MountStatus.Image(path: usage.path, format: fileSystem.format.rawValue, fileBytes: usage.imageBytes,
                                     diskBytes: usage.diskBytes, liveBytes: usage.liveBytes,
                                     reclaimableBytes: usage.reclaimableBytes),
            memory: MountStatus.Memory(heldBytes: UInt64(memoryLimiter.usedBytes),
                                       limitBytes: UInt64(memoryLimiter.limitBytes),
                                       daemonBytes: ProcessMemory.anonymousResidentBytes(),
                                       nodeCacheBytes: usage.nodeCacheBytes),
            inodes: usage.inodes, referencedInodes: usage.referencedInodes, openHandles: usage.openHandles,
            journal: MountStatus.Journal(bytesSinceCheckpoint: usage.journalBytes, checkpointBytes: usage.checkpointBytes,
                                         generation: usage.generation),
            requests: MountStatus.Requests(operations: served.operations, bytesRead: served.bytesRead,
                                           bytesWritten: served.bytesWritten, fsyncs: served.fsyncs,
                                           errors: served.errors, errorsByErrno: served.errorsByErrno),
            options: options)
    }

    /// One line for systemd's STATUS=: "serving /mnt/x: 1234 inodes, 1.2 GiB of 10 GiB used".
    func summary() -> String {
        let status = snapshot()
        return "serving \(mountPoint)\(status.readOnly == true ? " read-only" : ""): \(status.inodes) inodes, "
            + "\(ByteCount.human(status.usedBytes)) of \(ByteCount.human(status.capacityBytes)) used, \(status.openHandles) open"
            + (status.problem.map { "; \($0)" } ?? "")
    }

    static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

/// Sizes for people: "1.2 GiB", "512 B".
enum ByteCount {
    static func human(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 10).rounded() / 10
        return rounded >= 100 ? "\(Int(rounded.rounded())) \(units[unit])" : "\(rounded) \(units[unit])"
    }
}
