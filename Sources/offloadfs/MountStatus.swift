import FoundationEssentials

/// What `offloadfs status` shows of one mount: the daemon builds it (`DaemonStatus`),
/// sends it as JSON over its status socket (`StatusServer`), and the command decodes it
/// and prints it as a table, lines, JSON (these same keys, in snake_case) or Prometheus
/// metrics (`StatusFormat`).
struct MountStatus: Codable, Equatable {
    /// Where the daemon is while it starts or stops.
    struct Progress: Codable, Equatable {
        var phase: String
        var done: UInt64
        /// 0 when not known.
        var total: UInt64
        /// "bytes" or "items".
        var unit: String
    }

    struct Image: Codable, Equatable {
        var path: String
        /// 1 or 2 (nil from a daemon older than format 2).
        var format: Int?
        /// The image file's length and the disk space it takes.
        var fileBytes: UInt64
        var diskBytes: UInt64
        /// Blocks that files, the checkpoint and the journal reference.
        var liveBytes: UInt64
        /// Blocks freed and waiting for the next sync (within 5 s) to be punched and reused.
        var reclaimableBytes: UInt64
    }

    struct Memory: Codable, Equatable {
        /// File bytes held in RAM (small writes), against `--memory-limit`.
        var heldBytes: UInt64
        var limitBytes: UInt64
        /// The daemon's anonymous resident memory (RssAnon), and of it the committed tree
        /// nodes readers keep (format 2; 0 on format 1). Nil from a daemon older than
        /// these fields.
        var daemonBytes: UInt64? = nil
        var nodeCacheBytes: UInt64? = nil
    }

    struct Journal: Codable, Equatable {
        /// Journal written since the last checkpoint, or on format 2 the last commit (what
        /// a crash now would replay).
        var bytesSinceCheckpoint: UInt64
        var checkpointBytes: UInt64
        /// The last checkpoint's (format 1) or commit's (format 2) number, one more with
        /// each (nil: a read-only format 1 mount, or a daemon older than this field).
        var generation: UInt64?
    }

    struct Requests: Codable, Equatable {
        /// Requests since the mount, by kind (`lookup`, `read`, `write`, ...).
        var operations: [String: UInt64]
        var bytesRead: UInt64
        var bytesWritten: UInt64
        /// fsync and fsyncdir requests.
        var fsyncs: UInt64
        /// Requests answered with an error (ENOENT from a lookup included), and the
        /// same by errno name (only those that occurred).
        var errors: UInt64
        var errorsByErrno: [String: UInt64]
    }

    /// The daemon's own version.
    var version: String
    var mountpoint: String
    var pid: Int32
    /// The user the daemon runs as (the mount's owner).
    var ownerUid: UInt32
    /// "starting", "serving" or "stopping".
    var state: String
    /// Served read-only (asked with `-o ro`, or for want of room: `problem` says which).
    /// Nil from a daemon older than this field.
    var readOnly: Bool?
    /// Why the mount refuses changes it would accept were it well (a failed journal or
    /// commit, an image served read-only for want of room); nil when it is well.
    var problem: String?
    /// Why the final commit failed, where the image has no place for it (format 2): what
    /// `offloadfs unmount` prints (also shown as `problem` once set).
    var finalFailure: String?
    var progress: Progress?
    /// When the daemon started (seconds since 1970) and how long ago.
    var startedAt: Int64
    var uptimeSeconds: Double
    /// As `df` shows them: the capacity, what is used, what writes can still get.
    var capacityBytes: UInt64
    var usedBytes: UInt64
    var availableBytes: UInt64
    var image: Image
    var memory: Memory
    var inodes: UInt64
    /// Of them, those the kernel references (format 2; nil on format 1, which keeps every
    /// inode, and from a daemon older than this field).
    var referencedInodes: UInt64? = nil
    /// Open file and directory handles.
    var openHandles: UInt64
    var journal: Journal
    var requests: Requests
    /// The mount's options (`-o`, with offloadfs's own: size, memory_limit, ...).
    var options: [String]
}

/// The JSON encoding the daemon and the command share.
enum StatusJSON {
    static func encode<T: Encodable>(_ value: T, pretty: Bool = false) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        // Encoding these plain structs cannot fail.
        return Array((try? encoder.encode(value)) ?? Data())
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) -> T? {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try? decoder.decode(type, from: Data(bytes))
    }

    /// What the daemon answers instead of a status: `{"error": "..."}`.
    struct Failure: Codable {
        var error: String
    }
}
