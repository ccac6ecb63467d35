import ArgumentParser
import FuseBridge
import Logging
import OffloadCore
import OffloadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs mount MOUNTPOINT --backing IMAGE [options]`.
struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount an offloadfs filesystem backed by IMAGE at MOUNTPOINT.",
        discussion: """
            Without --foreground, the command returns once the mount answers requests (exit \
            status 0), or prints why it failed (status 1). It waits as long as the daemon \
            reports progress (opening a large image takes a while) and gives up after 60 s \
            without any. The daemon keeps running until the filesystem is unmounted \
            (offloadfs unmount, umount, fusermount3 -u) or gets SIGINT/SIGTERM, which unmount \
            cleanly. In the background the daemon logs to syslog (the journal, where systemd \
            runs); with --foreground it logs to stderr, with syslog priorities when stderr is \
            the journal, and speaks systemd's notify protocol when $NOTIFY_SOCKET is set \
            (see systemd/offloadfs@.service). mount(8) and fstab use the form \
            `offloadfs IMAGE MOUNTPOINT -o OPTIONS` (through mount.fuse3 for type \
            fuse.offloadfs, or the mount.offloadfs helper), where -o also takes size=, \
            memory_limit=, log_level=, format=, fresh and writeback_cache. A MOUNTPOINT that is \
            already a mount is refused, saying what it is (a dead offloadfs mount, left by a \
            killed daemon, is cleared by --clear-dead-mount); one that holds files is mounted \
            over with a warning, as libfuse 3 allows.
            """
    )

    /// The default --memory-limit: RAM for file data held before it spills to the image.
    /// Small enough for any machine; writes beyond it go straight to the mmap'd image.
    static let defaultMemoryLimit = ByteSize(bytes: 64 << 20)

    @Argument(help: "An existing directory to mount on.")
    var mountPoint: String

    @Option(name: .long, help: ArgumentHelp(
        "The image file holding all file contents (created if missing; a symbolic link is followed, but one to a missing file is refused).",
        valueName: "image"))
    var backing: String

    @Flag(name: .long, help: "Stay in the foreground and log to stderr instead of returning once mounted.")
    var foreground = false

    @Flag(name: .long, help: "Start with an empty filesystem, discarding what the image holds (tmpfs-style).")
    var fresh = false

    @Flag(name: .long, help: ArgumentHelp(
        "Let the kernel cache writes (faster small writes); `sync` then no longer protects unsynced data from a daemon crash, only fsync and close do."))
    var writebackCache = false

    @Option(name: .long, help: ArgumentHelp("RAM for file data before it goes to the image (K/M/G/T suffixes).",
                                            valueName: "size"))
    var memoryLimit: ByteSize = MountCommand.defaultMemoryLimit

    @Option(name: .long, help: ArgumentHelp(
        "Capacity statfs reports and writes are held to (ENOSPC past it); K/M/G/T suffixes. The image keeps it for "
            + "later mounts; a smaller one is refused unless the data fits. "
            + "Default: the capacity the image keeps, else the free space of the filesystem holding the image plus its size.",
        valueName: "size"))
    var size: ByteSize?

    @Option(name: .long, help: ArgumentHelp(
        "The format a new image (or --fresh) is made in: 2, the tree indexed in the image (docs/ARCHITECTURE.md), "
            + "or 1, the format before it. A format 1 image is upgraded to format 2 in place at its first "
            + "read-write mount unless this is 1 (a read-only mount never upgrades). "
            + "Default: 2; a format 2 image stays format 2.",
        valueName: "format"))
    var format: ImageFormat?

    @Flag(name: .long, help: ArgumentHelp(
        "If MOUNTPOINT is an offloadfs mount whose daemon is gone (killed, crashed), detach it first. Never touches a live mount or another filesystem."))
    var clearDeadMount = false

    @Option(name: .customShort("o"), help: ArgumentHelp(
        "Mount options passed to libfuse, comma-separated (ro, allow_other, noatime, ...); repeatable. "
            + "With ro nothing is written to the image (which may then be read-only itself).",
        valueName: "options"))
    var options: [String] = []

    @Option(name: .long, help: "How much the daemon logs (to stderr with --foreground, else to syslog).")
    var logLevel: Logger.Level = .info

    /// Set by the background parent: the fd of the readiness pipe (see Daemon).
    @Option(name: .long, help: .private)
    var readyFd: Int32?

    func validate() throws {
        if let size, size.bytes == 0 { throw ValidationError("--size must be larger than 0") }
        if MountConfiguration.isReadOnly(options) {
            if fresh { throw ValidationError("--fresh empties the image, which a read-only mount (-o ro) cannot") }
            if size != nil { throw ValidationError("--size changes the image's capacity, which a read-only mount (-o ro) cannot") }
        }
        if memoryLimit.bytes > UInt64(Int.max) { throw ValidationError("--memory-limit is too large") }
    }

    func run() throws {
        let mountArgument = MountPointArgument(mountPoint)
        let mountPath = mountArgument.path
        let readiness = Readiness(descriptor: readyFd)
        if let readyFd {
            // Our own session (the parent's terminal and process group are not ours), and
            // none of the parent's other descriptors.
            _ = setsid()
            Daemon.closeInheritedDescriptors(keeping: readyFd)
        }
        let imagePath: String
        do {
            imagePath = try ImagePath.resolve(backing)
            let warnings = try MountPointCheck.run(mountArgument, clearDeadMount: clearDeadMount)
            try MountPointCheck.refuseImage(imagePath, under: mountPath)
            try Preflight.checkMountPoint(mountPath)
            try Preflight.checkImagePath(imagePath)
            try Preflight.checkFuseDevice()
            // Printed once: by the background parent, or in the foreground.
            if !readiness.hasParent { warnings.forEach(printWarning) }
        } catch {
            try fail(error.message, readiness: readiness)
        }
        if !foreground {
            switch Daemon.start(arguments: childArguments(mountPath: mountPath, imagePath: imagePath)) {
            case .ready: return
            case .failed(let message): try fail(message, readiness: readiness)
            }
        }
        DaemonHeap.limitArenas()
        let destination = LogDestination.choose(background: readiness.hasParent)
        let logger = bootstrapLogging(level: logLevel, destination: destination)
        let service = ServiceManager(stallSeconds: StallBound.seconds)
        let meter = ProgressMeter(onPhase: StartupTestKnobs.phaseHook())
        // Start-up progress to the waiting parent and to systemd, until the mount answers.
        let startup = ProgressReporter(meter: meter) { reading in
            readiness.progress(reading)
            service.progress("mounting \(mountPath): \(reading.description)")
        }
        // On a terminal this line waits for --log-level debug, so that a failed mount
        // prints exactly its one error line; in the journal and syslog it opens the log.
        logger.log(level: destination == .terminal ? .debug : .info, "starting", metadata: startupMetadata(
            mountPath: mountPath, imagePath: imagePath))
        let imageExisted = access(imagePath, F_OK) == 0
        let session: FuseSession
        let fileSystem: any MountedImage
        let memoryLimiter = MemoryLimiter(limitBytes: Int(memoryLimit.bytes))
        do {
            // --size sets the capacity and the image keeps it; without it, the image's kept
            // capacity, or the default for this mount.
            let capacity: CapacityRequest
            if let size {
                capacity = .set(size.bytes)
            } else {
                capacity = .kept(default: try Self.defaultCapacity(imagePath: imagePath))
            }
            (session, fileSystem) = try openSession(mountPath: mountPath, imagePath: imagePath, capacity: capacity,
                                                    memoryLimiter: memoryLimiter, meter: meter, logger: logger)
            meter.begin("mounting")
            try MountPointCheck.refuseNewMount(at: mountPath)
            try session.mount()
        } catch {
            // Leave no empty image behind that this attempt created.
            if !imageExisted { unlink(imagePath) }
            startup.stop()
            try fail(error.message, readiness: readiness, logger: logger, destination: destination)
        }
        let status = DaemonStatus(fileSystem: fileSystem, memoryLimiter: memoryLimiter, counters: session.counters,
                                  meter: meter, mountPoint: mountPath, options: startupOptions)
        let statusServer = startStatusServer(mountPath: mountPath, imagePath: imagePath, status: status, logger: logger)
        // Logged only once mounted, so a failed mount prints its one error line and nothing else.
        let report = fileSystem.report
        logger.info("serving", metadata: startupMetadata(mountPath: mountPath, imagePath: imagePath).merging([
            "format": "\(fileSystem.format.rawValue)",
            "capacity": "\(ByteSize(bytes: fileSystem.capacityBytes))",
            "capacity_kept": "\(fileSystem.capacityIsSet)", "read_only": "\(fileSystem.isReadOnly)",
            "recovered": "\(report.created ? "new image" : "\(report.inodes) inodes, \(report.journalFrames) journal frames")",
            "open_seconds": "\(report.seconds)",
            "phases": "replay \(report.replaySeconds) s, rebuild \(report.restoreSeconds) s, checkpoint \(report.checkpointSeconds) s",
        ]) { $1 })
        if report.previousUnmountError != 0 {
            logger.warning("the image's last unmount could not write its final checkpoint; recovered from its journal",
                           metadata: ["error": "\(ImageAdvice.describe(errno: Int32(clamping: report.previousUnmountError)))"])
        }
        if report.orphansFreed > 0 {
            logger.info("freed inodes that were unlinked while open", metadata: ["count": "\(report.orphansFreed)"])
        }
        if report.upgradedFromFormatOne {
            logger.notice("upgraded the image from format 1 to format 2", metadata: [
                "seconds": "\(report.seconds)",
                "format_1": report.formatOneMountedFirst ? "recovered by a format 1 mount first"
                                                         : "cleanly unmounted, upgraded from its checkpoint",
            ])
        }
        for warning in report.warnings {
            logger.warning("\(warning)")
            // The background parent prints it too: the log is not where a person looks.
            readiness.warning(warning)
        }
        // Test knobs (scripts/crash-soak --stress-checkpoints): maintenance interval in
        // seconds and the journal bytes that trigger a checkpoint. Not for normal use.
        let interval = environment("OFFLOADFS_MAINTENANCE_INTERVAL").flatMap(Double.init).map { max($0, 0.01) } ?? 5
        let checkpointAfter = environment("OFFLOADFS_CHECKPOINT_AFTER").flatMap(UInt64.init)
        fileSystem.startMaintenance(interval: interval, journalBytes: checkpointAfter, onWrite: { write in
            // Format 2 commits often (at rest, near its limits, every 10 s under a
            // trickle): debug, not info.
            var metadata: Logger.Metadata = ["seconds": "\(write.seconds)"]
            for (key, value) in write.details { metadata[key] = .string(value) }
            let what = write.kind == "heap trim" ? "heap trimmed" : "\(write.kind) written"
            logger.log(level: write.kind == "checkpoint" ? .info : .debug, "\(what)", metadata: metadata)
        }, onError: { error in
            logger.error("background sync failed", metadata: ["error": "\(error)"])
        })
        // Ready once a request has been answered (the loop below serves it).
        let readyProbe = DaemonThread.start {
            guard MountProbe.answers(mountPath), status.current == .starting else { return }
            startup.stop()
            status.set(.serving)
            readiness.ready()
            service.ready(summary: status.summary)
            service.startWatchdog { status.current == .serving && MountProbe.answers(mountPath) }
            logger.debug("the mount answers; readiness reported", metadata: ["mountpoint": "\(mountPath)"])
        }
        let removalWatch = ImageRemovalWatch(imagePath: imagePath, mountPoint: mountPath, logger: logger)
        removalWatch?.start(interval: interval)
        status.watchImage(removalWatch)
        if readiness.hasParent {
            // Detached: the mount point and image are absolute, so no directory is kept busy.
            _ = chdir("/")
        }
        // Until the loop has answered the probe's request (INIT first).
        meter.begin("waiting for the kernel")
        session.run()
        // Unmounted (or SIGTERM): the last checkpoint, so the image holds everything.
        status.set(.stopping)
        readyProbe?.join()
        startup.stop()
        service.stopping("unmounted \(mountPath); writing the final checkpoint")
        let shutdown = ProgressReporter(meter: meter) { service.progress("stopping \(mountPath): \($0.description)") }
        defer {
            shutdown.stop()
            statusServer?.stop()
        }
        try Self.close(fileSystem, imagePath: imagePath, logger: logger, meter: meter) { advice in
            // Format 2 has no place in the image for why; `offloadfs unmount` reads it from
            // the status socket, which it polls every 0.5 s while the image is still locked.
            status.setFinalFailure(advice)
            if statusServer != nil { usleep(1_200_000) }
        }
        if removalWatch?.reportAtUnmount() == true { throw ExitCode.failure }
    }

    /// Writes the last checkpoint. If that fails, the reason goes into the image's
    /// superblock, where `offloadfs unmount` (waiting for this process to let go of the
    /// image) reads and reports it, and the next mount explains it; then exits non-zero.
    /// `meter` follows the checkpoint (systemd and `offloadfs unmount` watch it).
    static func close(_ fileSystem: any MountedImage, imagePath: String, logger: Logger, meter: ProgressMeter,
                      unrecorded: (String) -> Void = { _ in }) throws {
        let started = DaemonStatus.monotonicSeconds()
        let finalWrite = fileSystem.format == .one ? "final checkpoint" : "final commit"
        do {
            try fileSystem.close(meter: meter)
        } catch {
            let code = error.errnoValue
            let advice = fileSystem.format == .one ? ImageAdvice.unmountFailure(errno: code, image: imagePath)
                                                   : ImageAdvice.finalCommitFailure(errno: code, image: imagePath)
            logger.error("\(finalWrite) failed; the journal still holds every change",
                         metadata: ["error": "\(error)", "advice": "\(advice)"])
            do {
                if try !fileSystem.recordUnmountFailure(errno: UInt32(clamping: code)) {
                    logger.error("the failure is not recorded in the image: format \(fileSystem.format.rawValue) has no place for it; the next mount replays the journal")
                    unrecorded(advice)
                }
            } catch let recordError {
                logger.error("could not record the failure in the image either", metadata: ["error": "\(recordError)"])
            }
            throw ExitCode.failure
        }
        guard !fileSystem.isReadOnly else {
            logger.info("unmounted; the image was served read-only, so nothing was written")
            return
        }
        logger.info("\(finalWrite) written", metadata: [
            "seconds": "\(DaemonStatus.monotonicSeconds() - started)",
            "checkpoint_bytes": "\(fileSystem.usage().checkpointBytes)",
        ])
    }

    /// The options as the start-up line and `status` show them: offloadfs's own, then `-o`.
    private var startupOptions: [String] {
        var options = ["memory_limit=\(memoryLimit)"]
        if let size { options.append("size=\(size)") }
        if fresh { options.append("fresh") }
        if let format { options.append("format=\(format.rawValue)") }
        if writebackCache { options.append("writeback_cache") }
        return options + self.options.flatMap { $0.split(separator: ",").map(String.init) }
    }

    private func startupMetadata(mountPath: String, imagePath: String) -> Logger.Metadata {
        ["version": "\(BuildVersion.line)", "mountpoint": "\(mountPath)", "image": "\(imagePath)",
         "options": "\(startupOptions.joined(separator: ","))", "pid": "\(getpid())"]
    }

    /// The status socket, named by the mount's device; a mount without one still serves
    /// (the reason is logged).
    private func startStatusServer(mountPath: String, imagePath: String, status: DaemonStatus,
                                   logger: Logger) -> StatusServer? {
        let mounts = MountInfo.entries()
        guard let mount = MountInfo.offloadfsMount(at: mountPath, in: mounts) else {
            logger.warning("no status socket: the mount is not in /proc/self/mountinfo", metadata: ["mountpoint": "\(mountPath)"])
            return nil
        }
        do {
            let directory = try RuntimeDirectory.prepare()
            return try StatusServer(directory: directory, device: mount.device, logger: logger) {
                StatusJSON.encode(status.snapshot())
            }
        } catch {
            logger.warning("no status socket: \(error.message)")
            return nil
        }
    }

    /// Opens the image, builds the namespace and the (not yet mounted) FUSE session.
    private func openSession(mountPath: String, imagePath: String, capacity: CapacityRequest, memoryLimiter: MemoryLimiter,
                             meter: ProgressMeter, logger: Logger) throws(MountError) -> (FuseSession, any MountedImage) {
        let fileSystem: any MountedImage
        do {
            fileSystem = try MountedImages.open(
                path: imagePath, capacity: capacity, fresh: fresh, readOnly: MountConfiguration.isReadOnly(options),
                newFormat: format ?? Self.testFormat ?? .two, memoryLimiter: memoryLimiter, meter: meter)
        } catch {
            throw MountError(Self.describeImageError(error, imagePath: imagePath, sizeGiven: size != nil,
                                                     readOnly: MountConfiguration.isReadOnly(options)))
        }
        // An image served read-only although asked for read-write (a format 2 image with
        // no room left for a commit) is mounted read-only too: the kernel then refuses
        // writes itself, and `offloadfs unmount` expects nothing written.
        let served = fileSystem.isReadOnly && !MountConfiguration.isReadOnly(options) ? options + ["ro"] : options
        let configuration = MountConfiguration(mountPoint: mountPath, imagePath: imagePath, userOptions: served,
                                               writebackCache: writebackCache)
        return (try FuseSession(fileSystem: fileSystem.operations, configuration: configuration, logger: logger), fileSystem)
    }

    /// Test knob (the mount suites and scripts run on format 1 with it): the format new
    /// images are made in, and whether format 1 images are upgraded, when --format is not
    /// given. Not for normal use.
    static var testFormat: ImageFormat? {
        environment("OFFLOADFS_TEST_FORMAT").flatMap(Int.init).flatMap(ImageFormat.init(rawValue:))
    }

    /// The default --size: what the image could grow to on its filesystem, i.e. that
    /// filesystem's free space (for unprivileged users, f_bavail) plus what the image
    /// already occupies, capped at the 64 TiB a BackingStore can map.
    static func defaultCapacity(imagePath: String) throws(MountError) -> UInt64 {
        var info = statvfs()
        let directory = Preflight.parentDirectory(of: imagePath)
        guard statvfs(directory, &info) == 0 else {
            throw MountError("cannot measure free space in \(directory): \(String(cString: strerror(errno)))")
        }
        var free = UInt64(info.f_bavail).multipliedReportingOverflow(by: UInt64(info.f_frsize)).partialValue
        var status = stat()
        if stat(imagePath, &status) == 0 { free += UInt64(status.st_blocks) * 512 }
        return max(UInt64(BackingStore.blockSize), min(free, UInt64(1) << 46))
    }

    static func describeImageError(_ error: FSError, imagePath: String, sizeGiven: Bool = false,
                                   readOnly: Bool = false) -> String {
        switch error {
        case .capacityTooSmall(let capacity, let needed, let live):
            return ImageAdvice.capacityTooSmall(capacity: capacity, needed: needed, live: live, image: imagePath,
                                                sizeGiven: sizeGiven)
        case .invalidArgument(let why):
            return why
        case .busy:
            return "image \(imagePath) is in use by another offloadfs" + ImageLockHolders.describe(ofImage: imagePath)
        case .readOnly, .permissionDenied:
            return ImageAdvice.cannotWrite(image: imagePath, error: error, readOnlyMount: readOnly)
        case .damagedImage(let why):
            // Most refusals name their remedy; the others get fsck's.
            guard !why.contains("fsck") else { return "image \(imagePath) is damaged: \(why)" }
            return "image \(imagePath) is damaged: \(why); `offloadfs fsck \(imagePath)` lists what is wrong, "
                + "`offloadfs fsck --repair \(imagePath)` repairs it and names every file it changed"
        case .noSpace, .system(ENOSPC, _), .system(EDQUOT, _):
            return ImageAdvice.recoveryFailure(errno: error.errnoValue, image: imagePath)
        default:
            return "cannot open image \(imagePath): \(error)"
        }
    }

    /// The arguments the background parent gives its child (after the program name).
    private func childArguments(mountPath: String, imagePath: String) -> [String] {
        var arguments = ["mount", mountPath, "--backing", imagePath, "--foreground",
                         "--memory-limit", "\(memoryLimit.bytes)", "--log-level", logLevel.rawValue,
                         "--ready-fd", "\(Daemon.readinessDescriptor)"]
        if let size { arguments += ["--size", "\(size.bytes)"] }
        if fresh { arguments.append("--fresh") }
        if let format { arguments += ["--format", "\(format.rawValue)"] }
        if writebackCache { arguments.append("--writeback-cache") }
        for option in options { arguments += ["-o", option] }
        return arguments
    }

    /// Reports `message` once: through the pipe when a parent waits (it prints the
    /// line), else as one line on stderr; then exits non-zero. Once logging is set up
    /// (`logger`), the log gets it too, unless the log is the terminal's stderr, where
    /// the error line already is.
    private func fail(_ message: String, readiness: Readiness, logger: Logger? = nil,
                      destination: LogDestination = .terminal) throws -> Never {
        if readiness.hasParent {
            readiness.failed(message)
        } else if destination != .journal {
            printError(message)
        }
        if let logger, destination != .terminal {
            logger.error("mount failed: \(message.replacingNewlines())")
        }
        throw ExitCode.failure
    }
}

extension ImageFormat: ExpressibleByArgument {}
