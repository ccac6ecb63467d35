/// What `FuseSession` needs to know to mount: where, under which name, with which options.
public struct MountConfiguration: Sendable, Equatable {
    /// An existing directory; absolute, since the daemon changes to "/" once mounted.
    public var mountPoint: String
    /// The image path, shown as the mount's source (fsname) in /proc/mounts and df.
    public var imagePath: String
    /// The user's `-o` values, passed to libfuse unchanged (e.g. "ro", "allow_other").
    public var userOptions: [String]
    /// The most FUSE worker threads the multithreaded loop may start.
    public var maxWorkerThreads: Int
    public var cachePolicy: CachePolicy
    /// The mount's readahead window in KiB, set once the mount is live (see `Readahead`);
    /// nil leaves the kernel's default (128 KiB).
    public var readaheadKilobytes: Int?
    /// Ask for the kernel's writeback cache (FUSE_CAP_WRITEBACK_CACHE). Off by default:
    /// with it, write(2) returns once the data is in the kernel's page cache and the
    /// daemon hears of it later; fsync and close wait for that, but sync(2) and syncfs(2)
    /// do not (measured on this kernel: data written through a descriptor still open,
    /// then `sync`, then `kill -9` of the daemon, was lost 10 times out of 10). Without
    /// it every write(2) is answered only once its data and journal frame are in the
    /// image's page cache, so `sync` (and even no sync at all) survives `kill -9`.
    public var writebackCache: Bool

    public init(mountPoint: String, imagePath: String, userOptions: [String] = [],
                maxWorkerThreads: Int = 16, cachePolicy: CachePolicy = .kernelIsSoleWriter,
                readaheadKilobytes: Int? = 1024, writebackCache: Bool = false) {
        self.writebackCache = writebackCache
        self.mountPoint = mountPoint
        self.imagePath = imagePath
        self.userOptions = userOptions
        self.maxWorkerThreads = maxWorkerThreads
        self.cachePolicy = cachePolicy
        self.readaheadKilobytes = readaheadKilobytes
    }

    /// True when the user's `-o` options make the mount read-only: `ro`, unless a later
    /// `rw` undoes it (libfuse reads them in order too).
    public static func isReadOnly(_ userOptions: [String]) -> Bool {
        var readOnly = false
        for option in userOptions.flatMap({ $0.split(separator: ",") }) {
            if option == "ro" { readOnly = true } else if option == "rw" { readOnly = false }
        }
        return readOnly
    }

    /// The options offloadfs always mounts with:
    /// - `default_permissions`: the kernel checks modes and ownership, so the namespace
    ///   does not have to (and a request only reaches us once it has passed).
    /// - `fsname=IMAGE` and `subtype=offloadfs`: the mount shows as
    ///   `IMAGE on MOUNTPOINT type fuse.offloadfs`.
    /// `allow_other` is deliberately absent: only the user's `-o allow_other` adds it.
    public var fixedOptions: [String] {
        ["default_permissions", "fsname=\(Self.escapeOptionValue(imagePath))", "subtype=offloadfs"]
    }

    /// The argv given to fuse_session_new: a program name, then one `-o` per group.
    public var libfuseArguments: [String] {
        var arguments = ["offloadfs", "-o", fixedOptions.joined(separator: ",")]
        for option in userOptions where !option.isEmpty {
            arguments += ["-o", option]
        }
        return arguments
    }

    /// libfuse splits -o values at commas and treats backslash as an escape, so both are
    /// escaped in values we build from paths.
    static func escapeOptionValue(_ value: String) -> String {
        var escaped = ""
        for character in value {
            if character == "\\" || character == "," { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }
}
