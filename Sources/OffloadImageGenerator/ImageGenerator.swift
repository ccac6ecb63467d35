#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import OffloadCore
import OffloadNamespace

/// Builds a new image holding a `GeneratedLayout`'s files, in-process: the same
/// `FileSystemOperations` calls the FUSE bridge makes for `mkdir`, `open(O_CREAT)`,
/// `write`, `close` and the kernel's later FORGET, on an `ImageFileSystem` opened as
/// `offloadfs mount` opens it (journal attached, the daemon's maintenance running), then
/// closed as an unmount closes it. What it writes is therefore exactly what a mount would
/// have written for the same calls, without a kernel round trip per call: a million files
/// take seconds, not the two minutes they take through FUSE.
///
/// It goes through the public operations only (no record encoders), so it keeps working
/// whatever the image format becomes. Used by `offloadfs-genimage` (scripts/bench-scale).
public enum ImageGenerator {
    /// What the files are created as: root, mode 0644 (directories 0755), no umask.
    static let owner = RequestContext.root

    public struct Timing: Sendable {
        /// Opening the new image, creating every file, and closing it (the final commit).
        public var openSeconds: Double
        public var createSeconds: Double
        public var closeSeconds: Double
        public var totalSeconds: Double { openSeconds + createSeconds + closeSeconds }
    }

    /// Creates the image at `path` (which must not exist yet: an existing image is never
    /// changed) and fills it with `layout`'s files.
    ///
    /// `memoryLimitBytes` is the mount's `--memory-limit` (small files' bytes up to it stay
    /// in RAM pieces, as a daemon keeps them). `maintenanceInterval` is the daemon's
    /// maintenance period (0: none, the journal then grows until the final commit).
    /// `progress` hears the number of files made, every `progressEvery` files and at the end.
    public static func generate(path: String, layout: GeneratedLayout, capacity: CapacityRequest,
                                memoryLimitBytes: Int = 64 << 20, maintenanceInterval: Double = 5,
                                progressEvery: Int = 100_000,
                                progress: (Int) -> Void = { _ in }) throws(FSError) -> Timing {
        guard access(path, F_OK) != 0 else {
            throw .invalidArgument("'\(path)' exists; the generator only makes new images")
        }
        var clock = Stopwatch()
        let fileSystem = try ImageFileSystem.open(path: path, capacity: capacity,
                                                  memoryLimiter: MemoryLimiter(limitBytes: memoryLimitBytes))
        let maintenanceError = PthreadMutex<FSError?>(nil)
        if maintenanceInterval > 0 {
            fileSystem.startMaintenance(interval: maintenanceInterval, onError: { error in
                maintenanceError.withLock { $0 = $0 ?? error }
            })
        }
        let openSeconds = clock.lap()
        do throws(FSError) {
            try populate(fileSystem.operations, layout: layout, progressEvery: max(1, progressEvery), progress: progress)
        } catch {
            // Closed anyway, so the image is left consistent (holding what was made).
            try? fileSystem.close()
            throw error
        }
        if let error = maintenanceError.withLock({ $0 }) {
            try? fileSystem.close()
            throw error
        }
        let createSeconds = clock.lap()
        try fileSystem.close()
        return Timing(openSeconds: openSeconds, createSeconds: createSeconds, closeSeconds: clock.lap())
    }

    private static func populate(_ fs: any FileSystemOperations, layout: GeneratedLayout, progressEvery: Int,
                                 progress: (Int) -> Void) throws(FSError) {
        var made = 0
        func fill(_ directoryName: String, with indices: Range<Int>) throws(FSError) {
            let directory = try fs.mkdir(parent: .root, name: FileName(directoryName), mode: 0o755, context: owner).inode
            for index in indices {
                try makeFile(fs, in: directory, index: index)
                made += 1
                if made % progressEvery == 0 { progress(made) }
            }
            // The kernel forgets the directory once it leaves its cache.
            fs.forget(inode: directory, lookups: 1)
        }
        for number in 0..<layout.spreadDirectories {
            let first = number * layout.filesPerDirectory
            try fill(GeneratedLayout.spreadDirectoryName(number),
                     with: first..<min(layout.files, first + layout.filesPerDirectory))
        }
        if layout.singleDirectoryFiles > 0 {
            try fill(GeneratedLayout.singleDirectoryName, with: layout.files..<layout.totalFiles)
        }
        if made % progressEvery != 0 { progress(made) }
    }

    /// open(O_CREAT | O_EXCL | O_WRONLY), write, close; then the kernel's FORGET of the
    /// reference create handed it.
    private static func makeFile(_ fs: any FileSystemOperations, in directory: InodeNumber, index: Int) throws(FSError) {
        let (attributes, handle) = try fs.create(parent: directory, name: FileName(GeneratedLayout.fileName(index)),
                                                 mode: 0o100644, flags: O_CREAT | O_EXCL | O_WRONLY, context: owner)
        let contents = GeneratedLayout.contents(ofFile: index)
        if !contents.isEmpty {
            do throws(FSError) {
                _ = try contents.withBytes { (buffer) throws(FSError) in
                    try fs.write(inode: attributes.inode, handle: handle, offset: 0, data: buffer)
                }
            } catch {
                fs.release(inode: attributes.inode, handle: handle)
                throw error
            }
        }
        fs.release(inode: attributes.inode, handle: handle)
        fs.forget(inode: attributes.inode, lookups: 1)
    }
}

/// Seconds of monotonic time since it started, and between laps.
public struct Stopwatch {
    private let start = DispatchTime.now().uptimeNanoseconds
    private var last: UInt64

    public init() { last = start }

    public var elapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    /// Seconds since the previous lap (or the start).
    public mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { last = now }
        return Double(now - last) / 1e9
    }
}
