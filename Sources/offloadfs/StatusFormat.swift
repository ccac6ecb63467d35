/// The ways `offloadfs status` prints what it read: a table for a person at a terminal,
/// `key: value` lines when piped, and the Prometheus text exposition format (for
/// node_exporter's textfile collector). JSON is `MountStatus` itself.
enum StatusFormat {
    /// One mount's answer: its status, or why it could not be read.
    typealias Entry = (mount: MountInfo, result: Result<MountStatus, StatusClient.Failure>)

    // MARK: Table

    static func table(_ entries: [Entry]) -> String {
        var out: [String] = []
        for (index, entry) in entries.enumerated() {
            if index > 0 { out.append("") }
            guard case .success(let s) = entry.result else {
                if case .failure(let failure) = entry.result {
                    out.append("\(entry.mount.mountPoint)  (\(entry.mount.source))")
                    out.append("  status not readable: \(failure.message)")
                }
                continue
            }
            var state = s.state
            if s.readOnly == true { state += " read-only" }
            if let progress = s.progress { state += ": " + describe(progress) }
            out.append("\(s.mountpoint)  \(state), up \(duration(s.uptimeSeconds)), pid \(s.pid) (offloadfs \(s.version))")
            var rows: [(String, String)] = []
            if let problem = s.problem { rows.append(("problem", problem)) }
            rows += [
                ("image", s.image.path + (s.image.format.map { " (format \($0))" } ?? "")),
                ("space", bar(s.usedBytes, of: s.capacityBytes) + "  \(human(s.usedBytes)) used of \(human(s.capacityBytes)), "
                    + "\(human(s.availableBytes)) free"),
                ("image file", "\(human(s.image.diskBytes)) on disk: \(human(s.image.liveBytes)) live, "
                    + "\(human(s.image.reclaimableBytes)) reclaimable"),
                ("memory", bar(s.memory.heldBytes, of: s.memory.limitBytes) + "  \(human(s.memory.heldBytes)) of "
                    + "\(human(s.memory.limitBytes)) held in RAM"),
            ]
            if let daemon = s.memory.daemonBytes {
                let nodes = s.memory.nodeCacheBytes.flatMap { s.image.format == 2 ? " (node cache \(human($0)))" : nil } ?? ""
                rows.append(("daemon", "\(human(daemon)) resident" + nodes))
            }
            rows += [
                ("inodes", "\(grouped(s.inodes)) (" + (s.referencedInodes.map { "\(grouped($0)) referenced by the kernel, " } ?? "")
                    + "\(grouped(s.openHandles)) open handles)"),
                ("journal", (s.image.format == 2 ? "\(human(s.journal.bytesSinceCheckpoint)) since the last commit"
                    : "\(human(s.journal.bytesSinceCheckpoint)) since the last checkpoint "
                    + "(checkpoint \(human(s.journal.checkpointBytes)))")
                    + (s.journal.generation.map { ", generation \(grouped($0))" } ?? "")),
                ("served", "\(human(s.requests.bytesRead)) read, \(human(s.requests.bytesWritten)) written, "
                    + "\(grouped(s.requests.fsyncs)) fsyncs"),
                ("errors", s.requests.errors == 0 ? "none"
                    : "\(grouped(s.requests.errors)) (" + operations(s.requests.errorsByErrno, separator: " ", join: ", ") + ")"),
                ("requests", operations(s.requests.operations, separator: " ", join: "  ")),
                ("options", s.options.isEmpty ? "-" : s.options.joined(separator: ",")),
            ]
            for (key, value) in rows {
                for (index, piece) in (key == "requests" ? wrap(value, width: 64) : [value]).enumerated() {
                    out.append("  " + (index == 0 ? key : "").padding(10) + " " + piece)
                }
            }
        }
        return out.joined(separator: "\n")
    }

    /// `text` cut at double spaces (between "name count" pairs) into lines of at most
    /// `width` characters, where it can be (the requests row).
    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var current = ""
        for piece in text.split(separator: "  ").map(String.init) {
            if !current.isEmpty && current.count + 2 + piece.count > width {
                lines.append(current)
                current = piece
            } else {
                current = current.isEmpty ? piece : current + "  " + piece
            }
        }
        return lines + [current]
    }

    /// "[#######.......................]  23%", 30 cells wide.
    static func bar(_ part: UInt64, of whole: UInt64, width: Int = 30) -> String {
        let fraction = whole == 0 ? 0 : min(1, Double(part) / Double(whole))
        let filled = Int((fraction * Double(width)).rounded())
        let percent = Int((fraction * 100).rounded())
        let label = String(repeating: " ", count: max(0, 3 - "\(percent)".count)) + "\(percent)%"
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + label
    }

    // MARK: Lines

    /// `key: value` lines (raw numbers), one block per mount, blank lines between.
    static func lines(_ entries: [Entry]) -> String {
        var blocks: [String] = []
        for entry in entries {
            switch entry.result {
            case .failure(let failure):
                blocks.append("mountpoint: \(entry.mount.mountPoint)\nerror: \(failure.message)")
            case .success(let s):
                let pairs: [(String, String)] = [
                    ("mountpoint", s.mountpoint), ("image", s.image.path),
                    ("format", s.image.format.map { "\($0)" } ?? "-"), ("state", s.state),
                    ("read only", s.readOnly.map { $0 ? "yes" : "no" } ?? "-"), ("problem", s.problem ?? "-"),
                    ("phase", s.progress.map(describe) ?? "-"), ("pid", "\(s.pid)"), ("version", s.version),
                    ("uptime seconds", "\(Int(s.uptimeSeconds))"), ("capacity bytes", "\(s.capacityBytes)"),
                    ("used bytes", "\(s.usedBytes)"), ("available bytes", "\(s.availableBytes)"),
                    ("image file bytes", "\(s.image.fileBytes)"), ("image disk bytes", "\(s.image.diskBytes)"),
                    ("live bytes", "\(s.image.liveBytes)"), ("reclaimable bytes", "\(s.image.reclaimableBytes)"),
                    ("memory held bytes", "\(s.memory.heldBytes)"), ("memory limit bytes", "\(s.memory.limitBytes)"),
                    ("daemon bytes", s.memory.daemonBytes.map { "\($0)" } ?? "-"),
                    ("node cache bytes", s.memory.nodeCacheBytes.map { "\($0)" } ?? "-"),
                    ("inodes", "\(s.inodes)"), ("referenced inodes", s.referencedInodes.map { "\($0)" } ?? "-"),
                    ("open handles", "\(s.openHandles)"),
                    ("journal bytes since checkpoint", "\(s.journal.bytesSinceCheckpoint)"),
                    ("checkpoint bytes", "\(s.journal.checkpointBytes)"),
                    ("generation", s.journal.generation.map { "\($0)" } ?? "-"),
                    ("bytes read", "\(s.requests.bytesRead)"), ("bytes written", "\(s.requests.bytesWritten)"),
                    ("fsyncs", "\(s.requests.fsyncs)"), ("errors", "\(s.requests.errors)"),
                    ("errors by errno", operations(s.requests.errorsByErrno, separator: "=", join: " ")),
                    ("requests", operations(s.requests.operations, separator: "=", join: " ")),
                    ("options", s.options.joined(separator: ",")),
                ]
                blocks.append(pairs.map { "\($0): \($1)" }.joined(separator: "\n"))
            }
        }
        return blocks.joined(separator: "\n\n")
    }

    // MARK: Prometheus

    /// The text exposition format, version 0.0.4: HELP and TYPE once per metric, one
    /// sample per mount, labelled with its mount point and image. `offloadfs_up` is 0 for
    /// a mount whose status could not be read.
    static func prometheus(_ entries: [Entry]) -> String {
        struct Metric {
            var name: String, type: String, help: String
            var value: (MountStatus) -> [(labels: String, value: String)]
        }
        func gauge(_ name: String, _ help: String, _ value: @escaping (MountStatus) -> UInt64) -> Metric {
            Metric(name: name, type: "gauge", help: help) { [("", "\(value($0))")] }
        }
        func counter(_ name: String, _ help: String, _ value: @escaping (MountStatus) -> UInt64) -> Metric {
            Metric(name: name, type: "counter", help: help) { [("", "\(value($0))")] }
        }
        let metrics: [Metric] = [
            Metric(name: "offloadfs_problem", type: "gauge",
                   help: "1 when the mount refuses changes it would accept were it well (a failed journal or commit, "
                       + "or served read-only for want of room).") { status in
                // Not known of a daemon older than these fields.
                status.readOnly == nil ? [] : [("", status.problem == nil ? "0" : "1")]
            },
            Metric(name: "offloadfs_read_only", type: "gauge", help: "1 when the mount is served read-only.") { status in
                status.readOnly.map { [("", $0 ? "1" : "0")] } ?? []
            },
            gauge("offloadfs_capacity_bytes", "Capacity of the filesystem (df's size).") { $0.capacityBytes },
            gauge("offloadfs_used_bytes", "Bytes in use (df's used).") { $0.usedBytes },
            gauge("offloadfs_available_bytes", "Bytes writes can still get (df's available).") { $0.availableBytes },
            gauge("offloadfs_image_file_bytes", "Length of the image file.") { $0.image.fileBytes },
            gauge("offloadfs_image_disk_bytes", "Disk space the image file takes.") { $0.image.diskBytes },
            gauge("offloadfs_image_live_bytes", "Image bytes referenced by files and metadata.") { $0.image.liveBytes },
            gauge("offloadfs_image_reclaimable_bytes", "Freed image bytes waiting for the next sync.") { $0.image.reclaimableBytes },
            gauge("offloadfs_memory_held_bytes", "File bytes held in RAM.") { $0.memory.heldBytes },
            gauge("offloadfs_memory_limit_bytes", "The --memory-limit.") { $0.memory.limitBytes },
            Metric(name: "offloadfs_daemon_bytes", type: "gauge", help: "The daemon's anonymous resident memory.") { status in
                status.memory.daemonBytes.map { [("", "\($0)")] } ?? []
            },
            Metric(name: "offloadfs_node_cache_bytes", type: "gauge",
                   help: "Memory of the committed tree nodes readers keep (format 2).") { status in
                status.memory.nodeCacheBytes.map { [("", "\($0)")] } ?? []
            },
            gauge("offloadfs_inodes", "Inodes in the image.") { $0.inodes },
            Metric(name: "offloadfs_referenced_inodes", type: "gauge",
                   help: "Inodes the kernel references (format 2).") { status in
                status.referencedInodes.map { [("", "\($0)")] } ?? []
            },
            gauge("offloadfs_open_handles", "Open file and directory handles.") { $0.openHandles },
            gauge("offloadfs_journal_bytes", "Journal written since the last checkpoint.") { $0.journal.bytesSinceCheckpoint },
            gauge("offloadfs_checkpoint_bytes", "Size of the last checkpoint.") { $0.journal.checkpointBytes },
            Metric(name: "offloadfs_generation", type: "gauge",
                   help: "Number of the last checkpoint (format 1) or commit (format 2); one more with each.") { status in
                status.journal.generation.map { [("", "\($0)")] } ?? []
            },
            Metric(name: "offloadfs_uptime_seconds", type: "gauge", help: "Seconds since the daemon started.") {
                [("", "\($0.uptimeSeconds)")]
            },
            counter("offloadfs_read_bytes_total", "Bytes read through the mount.") { $0.requests.bytesRead },
            counter("offloadfs_written_bytes_total", "Bytes written through the mount.") { $0.requests.bytesWritten },
            counter("offloadfs_fsyncs_total", "fsync and fsyncdir requests.") { $0.requests.fsyncs },
            Metric(name: "offloadfs_errors_total", type: "counter", help: "Requests answered with an error, by errno.") { status in
                status.requests.errorsByErrno.sorted { $0.key < $1.key }.map { (",errno=\"\(label($0.key))\"", "\($0.value)") }
            },
            Metric(name: "offloadfs_requests_total", type: "counter", help: "Requests by operation.") { status in
                status.requests.operations.sorted { $0.key < $1.key }.map { (",operation=\"\(label($0.key))\"", "\($0.value)") }
            },
        ]
        var out: [String] = ["# HELP offloadfs_up Whether the mount's status could be read.", "# TYPE offloadfs_up gauge"]
        for entry in entries {
            let up: Int
            if case .success = entry.result { up = 1 } else { up = 0 }
            out.append("offloadfs_up{\(labels(entry.mount))} \(up)")
        }
        for metric in metrics {
            out.append("# HELP \(metric.name) \(metric.help)")
            out.append("# TYPE \(metric.name) \(metric.type)")
            for entry in entries {
                guard case .success(let status) = entry.result else { continue }
                for sample in metric.value(status) {
                    out.append("\(metric.name){\(labels(entry.mount))\(sample.labels)} \(sample.value)")
                }
            }
        }
        return out.joined(separator: "\n")
    }

    private static func labels(_ mount: MountInfo) -> String {
        "mountpoint=\"\(label(mount.mountPoint))\",image=\"\(label(mount.source))\""
    }

    /// A label value: backslash, double quote and newline escaped.
    static func label(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    // MARK: Pieces

    static func describe(_ progress: MountStatus.Progress) -> String {
        guard progress.total > 0 || progress.done > 0 else { return progress.phase }
        if progress.unit == "bytes" { return "\(progress.phase) \(human(progress.done)) of \(human(progress.total))" }
        return progress.total > 0 ? "\(progress.phase) \(progress.done)/\(progress.total)" : "\(progress.phase) \(progress.done)"
    }

    /// Counts that are not 0, by name: "getattr 3  lookup 12".
    private static func operations(_ counts: [String: UInt64], separator: String, join: String) -> String {
        let used = counts.filter { $0.value > 0 }.sorted { $0.key < $1.key }
        return used.isEmpty ? "-" : used.map { "\($0.key)\(separator)\($0.value)" }.joined(separator: join)
    }

    static func human(_ bytes: UInt64) -> String { ByteCount.human(bytes) }

    /// 1234567 -> "1,234,567".
    static func grouped(_ value: UInt64) -> String {
        let digits = Array(String(value))
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return out
    }

    /// "3d 4h", "2h 13m", "5m 2s", "12s".
    static func duration(_ seconds: Double) -> String {
        let total = Int(seconds)
        let (days, hours, minutes, secs) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60)
        if days > 0 { return "\(days)d \(hours)h" }
        if hours > 0 { return "\(hours)h \(minutes)m" }
        if minutes > 0 { return "\(minutes)m \(secs)s" }
        return "\(secs)s"
    }
}

extension String {
    /// Padded with spaces to `width` characters.
    func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
