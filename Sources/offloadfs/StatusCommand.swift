import ArgumentParser
import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs status [MOUNTPOINT] [--json | --prometheus]`.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what running offloadfs mounts hold and have served.",
        discussion: """
            For each offloadfs mount (or the one named): image, capacity and use, live and \
            reclaimable bytes in the image, file bytes held in RAM against the memory limit, \
            inodes, open handles, uptime, journal written since the last checkpoint, and \
            counters since the mount (requests by kind, bytes read and written, fsyncs, \
            errors). A table on a terminal, `key: value` lines when piped, --json (an object \
            for a named mount, else an array), --prometheus (text exposition format). \
            Each daemon answers on a unix socket (/run/offloadfs/DEVICE.sock for root's mounts, \
            the owner's runtime directory otherwise), to root and the mount's owner only. \
            Without MOUNTPOINT, the daemons of mounts detached with `unmount --lazy` are \
            listed too (state `serving (detached)`), while processes still use them. \
            Exit status: 0 shown, 1 a named mount is not an offloadfs mount or its status \
            could not be read.
            """
    )

    @Argument(help: "An offloadfs mount point (default: every offloadfs mount).")
    var mountPoint: String?

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @Flag(name: .long, help: "Print metrics in the Prometheus text exposition format.")
    var prometheus = false

    func validate() throws {
        if json && prometheus { throw ValidationError("--json and --prometheus cannot be combined") }
    }

    func run() throws {
        let mounts: [MountInfo]
        if let mountPoint {
            guard let mount = MountInfo.offloadfsMount(at: mountPoint) else {
                printError("\(MountPointArgument(mountPoint).path) is not an offloadfs mount")
                throw ExitCode.failure
            }
            mounts = [mount]
        } else {
            mounts = MountInfo.entries().filter(\.isOffloadfs)
        }
        var entries: [StatusFormat.Entry] = mounts.map { ($0, StatusClient.query($0)) }
        // Every mount: also the daemons of mounts detached lazily (and those finishing
        // their final commit), which the mount table no longer lists.
        if mountPoint == nil {
            entries += DetachedDaemons.find(excluding: Set(mounts.map(\.device))).map { ($0.mount, .success($0.status)) }
        }
        if mountPoint != nil, case .failure(let failure) = entries[0].result {
            printError("cannot read the status of \(entries[0].mount.mountPoint): \(failure.message)")
            throw ExitCode.failure
        }
        if json {
            let statuses = entries.map { entry -> StatusOrFailure in
                switch entry.result {
                case .success(let status): return .status(status)
                case .failure(let failure): return .failure(mountpoint: entry.mount.mountPoint, error: failure.message)
                }
            }
            let bytes = mountPoint == nil ? StatusJSON.encode(statuses, pretty: true)
                                          : StatusJSON.encode(statuses[0], pretty: true)
            writeLine(String(decoding: bytes, as: UTF8.self), to: STDOUT_FILENO)
        } else if prometheus {
            writeLine(StatusFormat.prometheus(entries), to: STDOUT_FILENO)
        } else if entries.isEmpty {
            writeLine("no offloadfs mounts", to: STDOUT_FILENO)
        } else if isatty(STDOUT_FILENO) == 1 {
            writeLine(StatusFormat.table(entries), to: STDOUT_FILENO)
        } else {
            writeLine(StatusFormat.lines(entries), to: STDOUT_FILENO)
        }
    }

    /// One element of `--json` output: the status, or `{"mountpoint", "error"}`.
    enum StatusOrFailure: Encodable {
        case status(MountStatus)
        case failure(mountpoint: String, error: String)

        func encode(to encoder: any Encoder) throws {
            switch self {
            case .status(let status):
                try status.encode(to: encoder)
            case .failure(let mountpoint, let error):
                var container = encoder.container(keyedBy: Keys.self)
                try container.encode(mountpoint, forKey: .mountpoint)
                try container.encode(error, forKey: .error)
            }
        }

        private enum Keys: String, CodingKey { case mountpoint, error }
    }
}
