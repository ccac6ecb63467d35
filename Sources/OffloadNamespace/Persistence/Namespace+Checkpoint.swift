import OffloadCore

// The namespace as a checkpoint writes it and recovery reads it back.

extension Namespace {
    /// Frames of a checkpoint are cut at about this many bytes of records: small enough
    /// that a damaged frame costs little of what `fsck --repair` salvages.
    static let checkpointFrameBytes = 64 << 10
    /// Inodes captured per hold of the namespace lock: operations go on in between.
    static let checkpointBatch = 4096

    /// Writes every inode, entry and file extent into `log` (a new checkpoint chain).
    /// Each object is captured under its own lock; objects that change meanwhile are
    /// also in the journal, which replays on top (see `NamespaceJournal`). `meter` counts
    /// the inodes written.
    func writeCheckpoint(into log: MetadataLog, meter: ProgressMeter? = nil) throws(FSError) {
        var payload = ByteWriter(capacity: Self.checkpointFrameBytes + 4096)
        func flush(force: Bool = false) throws(FSError) {
            if payload.count >= Self.checkpointFrameBytes || (force && payload.count > 0) {
                try log.append(payload: payload.bytes)
                payload.removeAll(keepingCapacity: true)
            }
        }
        let (numbers, nextInode) = state.withLock { ($0.table.allNumbers.sorted(), $0.table.nextInodeNumber) }
        MetadataRecord.nextInode(nextInode).encode(into: &payload)
        var start = 0
        while start < numbers.count {
            meter?.update(done: UInt64(start), total: UInt64(numbers.count))
            let batch = numbers[start..<min(start + Self.checkpointBatch, numbers.count)]
            start += batch.count
            // Records of the batch's inodes and entries; file data after the lock is gone.
            var files: [(InodeNumber, OffloadedFile)] = []
            var records: [MetadataRecord] = []
            state.withLock { state in
                for number in batch {
                    guard let inode = state.table.existing(number) else { continue }
                    records.append(inode.record)
                    if let directory = inode.directory {
                        for (name, entry) in directory.entries(after: 0, limit: Int.max) {
                            records.append(.entry(directory: number.rawValue, name: name.bytes, child: entry.inode.rawValue))
                        }
                    }
                    if let file = inode.regularFile { files.append((number, file.data)) }
                }
            }
            for record in records {
                record.encode(into: &payload)
                try flush()
            }
            for (number, file) in files {
                let (size, pieces) = file.snapshot()
                for record in MetadataRecord.fileRanges(inode: number.rawValue, size: size, range: 0..<size,
                                                        pieces: pieces) {
                    record.encode(into: &payload)
                    try flush()
                }
            }
        }
        try flush(force: true)
    }

    /// From now on, every change is recorded in `journal`.
    public func attach(_ journal: NamespaceJournal) {
        state.withLock { $0.journal = journal }
    }

    /// The namespace an image holds, rebuilt from `replay`. `analysis` must be clean
    /// (mount refuses damaged images) and `store.restoreAllocation(runs: analysis.runs)`
    /// must have run: the image pieces' references are already counted. Inodes nothing
    /// reaches (unlinked while open before a crash) are left out, their storage free.
    /// `meter` counts the inodes rebuilt.
    public static func restoring(_ replay: ImageReplay, analysis: ImageAnalysis, store: BackingStore,
                                 memoryLimiter: MemoryLimiter,
                                 clock: @escaping @Sendable () -> Timestamp = Namespace.systemClock,
                                 meter: ProgressMeter? = nil) throws(FSError) -> Namespace {
        var inodes: [InodeNumber: Inode] = [:]
        inodes.reserveCapacity(analysis.reachable.count)
        let total = UInt64(analysis.reachable.count)
        for number in analysis.reachable {
            if inodes.count % 4096 == 0 { meter?.update(done: UInt64(inodes.count), total: total) }
            guard let record = replay.inodes[number], let kind = FileKind(recordType: record.type) else {
                throw .damagedImage("inode \(number) has an unknown type")
            }
            let content: Inode.Content
            switch kind {
            case .regular:
                let file = replay.files[number]
                content = .regular(RegularFile(data: try OffloadedFile.restored(
                    store: store, limiter: memoryLimiter, size: file?.size ?? 0, pieces: file?.pieceList ?? [])))
            case .directory:
                content = .directory(Directory(parent: InodeNumber(analysis.parents[number] ?? number)))
            case .symlink:
                content = .symlink(target: record.symlinkTarget)
            default:
                content = .special
            }
            inodes[InodeNumber(number)] = Inode(restoring: record, kind: kind,
                                                linkCount: analysis.linkCounts[number] ?? 0, content: content)
        }
        for (number, inode) in inodes {
            guard let directory = inode.directory else { continue }
            let names = (replay.entries[number.rawValue] ?? [:]).sorted { $0.key.lexicographicallyPrecedes($1.key) }
            for (name, child) in names {
                guard let target = inodes[InodeNumber(child)], let fileName = try? FileName(name) else { continue }
                directory.insert(fileName, inode: target.number, kind: target.kind)
            }
        }
        let table = InodeTable(restoring: inodes, nextNumber: replay.nextInode)
        return Namespace(store: store, memoryLimiter: memoryLimiter, clock: clock, table: table)
    }
}
