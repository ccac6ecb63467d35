import CFuse
#if canImport(Glibc)
import Glibc
#endif
import Logging
import OffloadNamespace

/// One mount of a `FileSystemOperations` object through libfuse's low-level API.
///
/// Lifecycle, all on one thread (the CLI's main thread):
/// `init` creates the session (parsing mount options), `mount()` makes the kernel mount,
/// `run()` serves requests on libfuse's multithreaded loop until the filesystem is
/// unmounted or SIGINT/SIGTERM arrives, then unmounts and destroys the session.
/// The bridge context, whose unretained pointer is libfuse's userdata, is owned here and
/// outlives the session.
public final class FuseSession {
    private let context: BridgeContext
    private let configuration: MountConfiguration
    private var session: OpaquePointer?
    private var mounted = false

    /// What the mount has served so far (read by `offloadfs status`).
    public var counters: RequestCounters { context.counters }

    public init(fileSystem: any FileSystemOperations, configuration: MountConfiguration,
                logger: Logger, counters: RequestCounters = RequestCounters()) throws(MountError) {
        self.context = BridgeContext(fileSystem: fileSystem, logger: logger,
                                     cachePolicy: configuration.cachePolicy,
                                     wantsWritebackCache: configuration.writebackCache, counters: counters)
        self.configuration = configuration
        LibfuseLog.install(logger: logger)
        let userdata = Unmanaged.passUnretained(context).toOpaque()
        let (session, libfuseError) = LibfuseLog.capturingErrors {
            Self.withArguments(configuration.libfuseArguments) { arguments in
                var operations = Operations.table()
                return fuse_session_new(arguments, &operations, MemoryLayout<fuse_lowlevel_ops>.size, userdata)
            }
        }
        guard let session else {
            throw MountError("invalid mount options \(configuration.userOptions.joined(separator: ",")): "
                             + (libfuseError.map(Self.withoutPrefix) ?? "libfuse refused them"))
        }
        self.session = session
    }

    deinit {
        if let session {
            if mounted {
                ShutdownSignals.remove()
                fuse_session_unmount(session)
            }
            fuse_session_destroy(session)
        }
    }

    /// Mounts at the configured mount point. When this returns the mount exists in the
    /// kernel; requests are answered once `run()` starts.
    public func mount() throws(MountError) {
        guard let session, !mounted else { return }
        // Handlers go in before the mount exists, so a SIGTERM that arrives while mounting
        // ends the (then immediately returning) loop and unmounts, instead of killing the
        // process and leaving a dead mount behind.
        ShutdownSignals.install(session: session)
        let ((status, libfuseError), helperOutput) = StderrCapture.capturing {
            LibfuseLog.capturingErrors { fuse_session_mount(session, configuration.mountPoint) }
        }
        // fusermount3 (unprivileged mounts) writes why it refused to stderr: that line is
        // the reason; anything else it wrote goes on to our stderr as it would have.
        var helperReason: Substring?
        for line in helperOutput.split(separator: "\n") {
            if status != 0 && line.hasPrefix("fusermount") {
                helperReason = line
            } else {
                StderrCapture.emit(line)
            }
        }
        guard status == 0 else {
            ShutdownSignals.remove()
            throw MountError("cannot mount \(configuration.mountPoint): "
                             + (helperReason.map(String.init) ?? libfuseError.map(Self.withoutPrefix)
                                ?? "the kernel refused the mount"))
        }
        mounted = true
        context.logger.info("mounted", metadata: [
            "mountpoint": "\(configuration.mountPoint)", "image": "\(configuration.imagePath)",
        ])
    }

    /// Serves requests until the filesystem is unmounted or a shutdown signal arrives,
    /// then unmounts (if still mounted) and destroys the session. Must run on the thread
    /// that called `mount()` (the signal handlers wake that thread).
    public func run() {
        guard let session, mounted else { return }
        if let kilobytes = configuration.readaheadKilobytes {
            Readahead.raiseInBackground(mountPoint: configuration.mountPoint, kilobytes: kilobytes,
                                        logger: context.logger)
        }
        let config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_clone_fd(config, 0)
        fuse_loop_cfg_set_max_threads(config, UInt32(configuration.maxWorkerThreads))
        let status = fuse_session_loop_mt(session, config)
        fuse_loop_cfg_destroy(config)
        ShutdownSignals.remove()
        if let signal = ShutdownSignals.received {
            context.logger.info("received signal \(signal), unmounting")
        } else if status != 0 {
            context.logger.warning("session loop ended with status \(status)")
        }
        fuse_session_unmount(session)
        mounted = false
        fuse_session_destroy(session)
        self.session = nil
        context.logger.info("unmounted", metadata: ["mountpoint": "\(configuration.mountPoint)"])
    }

    /// Calls `body` with a `struct fuse_args` over C copies of `arguments`; libfuse copies
    /// whatever it keeps, so everything is freed afterwards.
    private static func withArguments<R>(_ arguments: [String], _ body: (UnsafeMutablePointer<fuse_args>) -> R) -> R {
        var cStrings: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        return cStrings.withUnsafeMutableBufferPointer { argv in
            var args = offloadfs_args_init(Int32(arguments.count), argv.baseAddress)
            defer { fuse_opt_free_args(&args) }
            return body(&args)
        }
    }

    /// libfuse prefixes its messages with "fuse: ".
    private static func withoutPrefix(_ message: String) -> String {
        message.hasPrefix("fuse: ") ? String(message.dropFirst(6)) : message
    }
}
