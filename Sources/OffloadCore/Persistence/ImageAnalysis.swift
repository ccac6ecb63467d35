/// Checks a replayed image the way fsck reports it, and computes what mount needs from
/// it: the reference count of every block, link counts and parents. `repair()` changes
/// the replay so that a second analysis finds no problem.
///
/// Problems are damage (mount refuses the image until `fsck --repair`); notes are normal
/// states a crash leaves behind (a torn journal tail, files unlinked while open), which
/// mount resolves by itself.
public struct ImageAnalysis {
    public private(set) var problems: [String] = []
    public private(set) var notes: [String] = []
    /// Block reference counts of everything reachable plus the metadata chains: sorted,
    /// disjoint runs, for `BackingStore.restoreAllocation`.
    public private(set) var runs: [(blocks: Range<UInt64>, count: UInt32)] = []
    public private(set) var linkCounts: [UInt64: UInt32] = [:]
    public private(set) var parents: [UInt64: UInt64] = [:]
    /// Inodes reachable from the root (the root included).
    public private(set) var reachable: Set<UInt64> = []
    public private(set) var files = 0, directories = 0, symlinks = 0, others = 0
    /// Bytes of image blocks that files reference (shared blocks once).
    public private(set) var dataBytes: UInt64 = 0
    public private(set) var metadataBytes: UInt64 = 0
    public private(set) var sharedBlocks: UInt64 = 0
    /// File pieces the checks found outside the image or on metadata: inode, offset.
    var badPieces: [(inode: UInt64, offset: UInt64)] = []
    var danglingEntries: [(directory: UInt64, name: [UInt8])] = []

    public static let rootInode: UInt64 = 1
    /// st_mode >> 12 of FIFOs, character devices, directories, block devices, regular
    /// files, symlinks and sockets.
    static let knownTypes: Set<UInt8> = [0o01, 0o02, 0o04, 0o06, 0o10, 0o12, 0o14]
    static let block = UInt64(BackingStore.blockSize)

    public var isClean: Bool { problems.isEmpty }
    /// The image file's length the checks used (repair checks what it adds against it).
    let fileBytes: UInt64

    /// The end of the address space an image mounted with `capacityBytes` can use:
    /// the superblocks and the capacity, in whole blocks. At most 2^63 - 1, like every
    /// image offset (a damaged superblock may record any capacity), so that the block
    /// arithmetic on a piece inside the limit cannot overflow.
    public static func dataLimit(capacityBytes: UInt64) -> UInt64 {
        let blocks = capacityBytes / block + (capacityBytes % block == 0 ? 0 : 1)
        let (total, overflow) = (blocks + Superblock.blocks).multipliedReportingOverflow(by: block)
        return overflow ? maximumByte : min(total, maximumByte)
    }

    static let maximumByte = UInt64(Int64.max)

    /// `meter`, if given, counts the inodes reached so far (a mount reports it as progress).
    public init(_ replay: ImageReplay, fileBytes: UInt64, meter: ProgressMeter? = nil) {
        self.fileBytes = fileBytes
        checkTree(replay, meter: meter)
        checkBlocks(replay, fileBytes: fileBytes)
        if !replay.journalEnd.isEmpty && replay.journalFrames > 0 {
            notes.append("journal: \(replay.journalFrames) frames replayed; it ends where \(replay.journalEnd)")
        }
        problems.append(contentsOf: replay.problems)
        if !replay.strays.isEmpty {
            problems.append("\(replay.strays.count) files lost their inode records; their contents are kept")
        }
    }

    // MARK: - Tree

    private mutating func checkTree(_ replay: ImageReplay, meter: ProgressMeter?) {
        guard let root = replay.inodes[Self.rootInode], root.type == ImageReplay.directoryType else {
            problems.append("the root directory (inode 1) is missing or not a directory")
            return
        }
        _ = root
        // Walk from the root: each directory must be reached exactly once.
        var queue: [UInt64] = [Self.rootInode]
        reachable.reserveCapacity(replay.inodes.count)
        linkCounts.reserveCapacity(replay.inodes.count)
        reachable.insert(Self.rootInode)
        parents[Self.rootInode] = Self.rootInode
        linkCounts[Self.rootInode] = 2
        var head = 0
        while head < queue.count {
            let directory = queue[head]
            head += 1
            if head % 1024 == 0 { meter?.update(done: UInt64(reachable.count), total: UInt64(replay.inodes.count)) }
            for (name, child) in replay.entries[directory] ?? [:] {
                guard let inode = replay.inodes[child] else {
                    problems.append("entry '\(Self.show(name))' in directory \(directory) names inode \(child), which does not exist")
                    danglingEntries.append((directory, name))
                    continue
                }
                guard Self.knownTypes.contains(inode.type) else {
                    problems.append("entry '\(Self.show(name))' in directory \(directory) names inode \(child) of unknown type \(inode.type)")
                    danglingEntries.append((directory, name))
                    continue
                }
                if !Self.isValidName(name) {
                    problems.append("entry in directory \(directory) has an invalid name '\(Self.show(name))'")
                    danglingEntries.append((directory, name))
                    continue
                }
                if child == 0 {
                    // A number format 2 keeps for no inode: the upgrade could not state it.
                    problems.append("entry '\(Self.show(name))' in directory \(directory) names inode 0, a number no file may have")
                }
                if inode.type == ImageReplay.directoryType {
                    if reachable.contains(child) {
                        problems.append("directory \(child) has a second name '\(Self.show(name))' in directory \(directory)")
                        danglingEntries.append((directory, name))
                        continue
                    }
                    parents[child] = directory
                    linkCounts[child] = 2
                    linkCounts[directory, default: 2] += 1
                    queue.append(child)
                } else {
                    linkCounts[child, default: 0] += 1
                }
                reachable.insert(child)
            }
        }
        var orphans = 0
        for (number, inode) in replay.inodes {
            guard reachable.contains(number) else {
                orphans += 1
                continue
            }
            switch inode.type {
            case ImageReplay.regularType: files += 1
            case ImageReplay.directoryType: directories += 1
            case ImageReplay.symlinkType: symlinks += 1
            default: others += 1
            }
            let derived = linkCounts[number] ?? 0
            if inode.linkCount != derived {
                problems.append("inode \(number) records \(inode.linkCount) links but has \(derived)")
            }
            // What no request makes and format 2 refuses to hold (its upgrade could not
            // state it): the record's decoding takes any permission bits and any target.
            if inode.permissions > Self.permissionBits {
                problems.append("inode \(number) records permissions 0o\(String(inode.permissions, radix: 8)), past 0o7777")
            }
            if inode.type == ImageReplay.symlinkType, !Self.isValidTarget(inode.symlinkTarget) {
                problems.append("symlink \(number) has a target of \(inode.symlinkTarget.count) bytes"
                                + (inode.symlinkTarget.contains(0) ? " holding a NUL" : "")
                                + ", which no request makes (1 to \(Self.targetLimit) bytes, no NUL)")
            }
        }
        for directory in replay.entries.keys where replay.inodes[directory] == nil && !(replay.entries[directory]?.isEmpty ?? true) {
            problems.append("entries exist for directory \(directory), which does not exist")
        }
        if orphans > 0 {
            notes.append("\(orphans) inodes have no name (unlinked while open, or cut off); mount frees them")
        }
    }

    // MARK: - Blocks

    private mutating func checkBlocks(_ replay: ImageReplay, fileBytes: UInt64) {
        var metadata: [Range<UInt64>] = []
        for segment in replay.metadataSegments {
            metadata.append(segment.start / Self.block..<(segment.start + segment.length) / Self.block)
        }
        metadata.sort { $0.lowerBound < $1.lowerBound }
        // Counted as their union: segments of a damaged image may overlap (found by the
        // fuzzer, Tests/FuzzRegressions/metadata-counted-twice), and blocks counted twice
        // here but once in the runs below made `dataBytes` underflow and trap.
        var union: [Range<UInt64>] = []
        for range in metadata {
            if let last = union.last, range.lowerBound <= last.upperBound {
                union[union.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                union.append(range)
            }
        }
        metadataBytes = union.reduce(0) { $0 + UInt64($1.count) } * Self.block
        var events: [(block: UInt64, delta: Int32)] = []
        for range in metadata {
            events.append((range.lowerBound, 1))
            events.append((range.upperBound, -1))
        }
        let firstDataByte = Superblock.blocks * Self.block
        // File data may lie past the end of the file, inside the capacity the image was
        // mounted with: a power cut can keep a journal frame and lose the growth of the
        // file its data went to (never a checkpoint's: a sync precedes every checkpoint).
        // Those bytes read as zeros, like any data that was not durable.
        let limit = max(fileBytes, Self.dataLimit(capacityBytes: replay.superblock.capacityBytes))
        var pastEnd: UInt64 = 0
        for (number, file) in replay.files where reachable.contains(number) {
            for piece in file.pieceList {
                guard case .mmapOffload(let offset, let size) = piece.extent else { continue }
                guard offset >= firstDataByte, offset <= limit, size <= limit - offset else {
                    problems.append("file \(number) at offset \(piece.offset): \(size) bytes at image byte \(offset) lie outside the image (\(limit) bytes)")
                    badPieces.append((number, piece.offset))
                    continue
                }
                if offset + size > fileBytes { pastEnd = max(pastEnd, offset + size - fileBytes) }
                let blocks = offset / Self.block..<(offset + size + Self.block - 1) / Self.block
                if Self.overlaps(blocks, metadata) {
                    problems.append("file \(number) at offset \(piece.offset): image bytes \(offset)..<\(offset + size) overlap the metadata")
                    badPieces.append((number, piece.offset))
                    continue
                }
                events.append((blocks.lowerBound, 1))
                events.append((blocks.upperBound, -1))
            }
        }
        if pastEnd > 0 {
            notes.append("file data reaches \(pastEnd) bytes past the end of the image file (a power cut before its growth was durable, or the file was cut short); those bytes read as zeros")
        }
        events.sort { $0.block < $1.block }
        var count: Int32 = 0
        var index = 0
        var start: UInt64 = 0
        while index < events.count {
            let block = events[index].block
            if count > 0 && block > start { appendRun(start..<block, count: UInt32(count)) }
            while index < events.count && events[index].block == block {
                count += events[index].delta
                index += 1
            }
            start = block
        }
        for run in runs {
            if run.count > 1 && !Self.overlaps(run.blocks, metadata) { sharedBlocks += UInt64(run.blocks.count) }
        }
        let allBlocks = runs.reduce(UInt64(0)) { $0 + UInt64($1.blocks.count) }
        assert(allBlocks * Self.block >= metadataBytes, "every metadata block is in a run")
        dataBytes = allBlocks * Self.block - min(metadataBytes, allBlocks * Self.block)
        if sharedBlocks > 0 {
            notes.append("\(sharedBlocks) blocks are shared between extents (copy_file_range clones)")
        }
    }

    private mutating func appendRun(_ blocks: Range<UInt64>, count: UInt32) {
        if let last = runs.last, last.blocks.upperBound == blocks.lowerBound, last.count == count {
            runs[runs.count - 1].blocks = last.blocks.lowerBound..<blocks.upperBound
        } else {
            runs.append((blocks, count))
        }
    }

    private static func overlaps(_ blocks: Range<UInt64>, _ sorted: [Range<UInt64>]) -> Bool {
        // Few metadata segments: a linear scan is fine.
        sorted.contains { $0.overlaps(blocks) }
    }

    static let permissionBits: UInt32 = 0o7777
    static var targetLimit: Int { JournalChange.targetLimit }

    /// What symlink(2) takes: 1 to PATH_MAX - 1 bytes, no NUL (format 2's limit).
    static func isValidTarget(_ target: [UInt8]) -> Bool {
        !target.isEmpty && target.count <= targetLimit && !target.contains(0)
    }

    /// 1 to 255 bytes, no `/`, no NUL, not `.` or `..`.
    static func isValidName(_ name: [UInt8]) -> Bool {
        !(name.isEmpty || name.count > 255 || name.contains(0x2F) || name.contains(0) || name == [0x2E] || name == [0x2E, 0x2E])
    }

    static func show(_ name: [UInt8]) -> String {
        String(decoding: name.prefix(80), as: UTF8.self)
    }
}

extension ImageReplay {
    /// Fixes what `analysis` found, so that the next analysis is clean: dangling and
    /// duplicate entries are removed, file pieces outside the image or on metadata become
    /// holes, a missing root is recreated, unreachable files and directories are given
    /// names in /lost+found, and link counts are set to what the entries say.
    /// Returns what it did, one line per fix, and which names it removed and gave.
    public func repair(_ analysis: ImageAnalysis, now: RecordTime, uid: UInt32, gid: UInt32) -> RepairLog {
        var log = RepairLog()
        var done: [String] = []
        let root = ImageAnalysis.rootInode
        func newDirectory(_ number: UInt64, parent: UInt64) -> InodeRecord {
            InodeRecord(number: number, type: Self.directoryType, permissions: 0o755, uid: uid, gid: gid,
                        linkCount: 2, rdev: 0, accessTime: now, modificationTime: now, changeTime: now,
                        birthTime: now, parent: parent, symlinkTarget: [], xattrs: [])
        }
        if inodes[root]?.type != Self.directoryType {
            if inodes[root] != nil { entries[root] = nil }
            inodes[root] = newDirectory(root, parent: root)
            done.append("recreated the root directory")
        }
        // Files whose record was lost but whose contents survived: plain files of the
        // repairing user, readable by it alone, to be named in /lost+found below.
        for (number, file) in strays.sorted(by: { $0.key < $1.key }) {
            inodes[number] = InodeRecord(number: number, type: Self.regularType, permissions: 0o600, uid: uid, gid: gid,
                                         linkCount: 1, rdev: 0, accessTime: now, modificationTime: now, changeTime: now,
                                         birthTime: now, parent: 0, symlinkTarget: [], xattrs: [])
            files[number] = file
            nextInode = max(nextInode, number &+ 1)
            log.recreated.insert(number)
            done.append("recreated inode \(number) for contents whose inode record was lost")
        }
        strays = [:]
        // Fixed before the passes, which start from an analysis that saw them: it is taken
        // again when a number or an entry moved.
        let records = repairRecords(done: &done)
        if let number = records.renumberedZero, log.recreated.remove(0) != nil { log.recreated.insert(number) }
        // Naming unreachable inodes brings files and directories into the tree that the
        // checks never walked, with loose ends of their own: fix and name again until a
        // pass leaves nothing to fix. A pass without new names leaves nothing; hostile
        // nesting could need many, so after `repairPasses` the rest is left to the final
        // check (the image is then refused, not half repaired). Every check uses the real
        // length of the image file.
        var current = records.namesMoved ? ImageAnalysis(self, fileBytes: analysis.fileBytes) : analysis
        var lost: UInt64?
        for _ in 0..<Self.repairPasses {
            for (directory, name) in current.danglingEntries {
                let child = entries[directory]?[name] ?? 0
                // A name for contents whose record was recreated above leads somewhere now.
                if log.recreated.contains(child), ImageAnalysis.isValidName(name) { continue }
                log.removedEntries.append((directory, name, child))
                entries[directory]?[name] = nil
                done.append("removed entry '\(ImageAnalysis.show(name))' from directory \(directory)")
            }
            for (inode, offset) in current.badPieces {
                files[inode]?.dropPiece(at: offset)
                done.append("file \(inode): bytes at offset \(offset) pointed outside the data and are now a hole")
            }
            // Whatever is still unreachable (after the fixes above) goes to /lost+found.
            let after = ImageAnalysis(self, fileBytes: analysis.fileBytes)
            giveLostNames(after, lost: &lost, newDirectory: newDirectory, log: &log, done: &done)
            current = ImageAnalysis(self, fileBytes: analysis.fileBytes)
            if current.danglingEntries.isEmpty && current.badPieces.isEmpty { break }
        }
        for (number, count) in current.linkCounts.sorted(by: { $0.key < $1.key }) {
            guard let recorded = inodes[number]?.linkCount, recorded != count else { continue }
            inodes[number]?.linkCount = count
            done.append("inode \(number): link count \(recorded) set to \(count), what its names give")
        }
        for (number, parent) in current.parents { inodes[number]?.parent = parent }
        // Set here, not in a `defer`: a `defer` runs after `return` has copied the log,
        // and the lines never reached fsck's report (nor the choice to keep the
        // checkpoint as it was, which the repairs' absence makes).
        log.lines = done
        return log
    }

    static let repairPasses = 16

    /// Gives every record what a request could have made (format 2 holds nothing else):
    /// inode 0 a free number (its names follow it; parents are set from the names after),
    /// permission bits within 0o7777, a symlink target cut at its first NUL and to
    /// PATH_MAX - 1 bytes, or, with nothing left, a name saying it was lost (format 2's
    /// repair does the same). Removes the entries of directories that have no record
    /// (their children, unreachable then, get names in /lost+found). Returns what moved
    /// names and numbers: the passes must then start from an analysis taken again.
    private func repairRecords(done: inout [String]) -> (renumberedZero: UInt64?, namesMoved: Bool) {
        var renumbered: UInt64?
        if var record = inodes.removeValue(forKey: 0) {
            let number = nextInode
            nextInode += 1
            record.number = number
            inodes[number] = record
            files[number] = files.removeValue(forKey: 0)
            entries[number] = entries.removeValue(forKey: 0)
            for (directory, names) in entries {
                for (name, child) in names where child == 0 { entries[directory]?[name] = number }
            }
            renumbered = number
            done.append("gave inode 0, a number no file may have, the number \(number)")
        }
        let homeless = entries.filter { inodes[$0.key] == nil && !$0.value.isEmpty }
        for (directory, names) in homeless.sorted(by: { $0.key < $1.key }) {
            entries[directory] = nil
            done.append("removed the \(names.count) entries of directory \(directory), which does not exist")
        }
        let damaged = inodes.values.filter { record in
            record.permissions > ImageAnalysis.permissionBits
                || (record.type == Self.symlinkType && !ImageAnalysis.isValidTarget(record.symlinkTarget))
        }
        for record in damaged.sorted(by: { $0.number < $1.number }) {
            let number = record.number
            if record.permissions > ImageAnalysis.permissionBits {
                inodes[number]?.permissions = record.permissions & ImageAnalysis.permissionBits
                done.append("inode \(number): permissions 0o\(String(record.permissions, radix: 8)) cut to 0o\(String(record.permissions & ImageAnalysis.permissionBits, radix: 8))")
            }
            if record.type == Self.symlinkType, !ImageAnalysis.isValidTarget(record.symlinkTarget) {
                var kept = Array(record.symlinkTarget.prefix { $0 != 0 }.prefix(ImageAnalysis.targetLimit))
                if kept.isEmpty { kept = Array("lost-symlink-target-of-inode-\(number)".utf8) }
                inodes[number]?.symlinkTarget = kept
                done.append("symlink \(number): its target of \(record.symlinkTarget.count) bytes, which no request makes, is now '\(ImageAnalysis.show(kept))'")
            }
        }
        return (renumbered, renumbered != nil || !homeless.isEmpty)
    }

    /// Names the tops of the subtrees `analysis` could not reach `/lost+found/#NUMBER`
    /// (creating the directory if needed).
    private func giveLostNames(_ analysis: ImageAnalysis, lost: inout UInt64?,
                               newDirectory: (UInt64, UInt64) -> InodeRecord,
                               log: inout RepairLog, done: inout [String]) {
        let root = ImageAnalysis.rootInode
        let unreachable = inodes.keys.filter { !analysis.reachable.contains($0) && $0 != root }.sorted()
        // Only the tops of unreachable subtrees need names: skip directories' children.
        let tops = unreachable.filter { number in
            !entries.contains { directory, names in !analysis.reachable.contains(directory) && inodes[directory] != nil && names.values.contains(number) }
        }
        let withContent = tops.filter { number in
            guard let inode = inodes[number] else { return false }
            // An unlinked regular file with no name left (link count 0) was deleted while
            // open: mount frees it, it is not lost.
            return inode.linkCount > 0
        }
        guard !withContent.isEmpty else { return }
        let lostName = Array("lost+found".utf8)
        if lost == nil { lost = entries[root]?[lostName] }
        if lost == nil || inodes[lost!]?.type != Self.directoryType {
            let number = nextInode
            nextInode += 1
            inodes[number] = newDirectory(number, root)
            entries[root, default: [:]][lostName] = number
            lost = number
        }
        for number in withContent {
            entries[lost!, default: [:]][Array("#\(number)".utf8)] = number
            if inodes[number]?.type == Self.directoryType { inodes[number]?.parent = lost! }
            done.append("gave inode \(number) the name /lost+found/#\(number)")
            log.movedToLostAndFound.append(number)
        }
    }

    /// What `repair` did: a line per fix, and the names it removed and gave.
    public struct RepairLog {
        public var lines: [String] = []
        /// Entries removed: the directory, the name, and the inode it named.
        public var removedEntries: [(directory: UInt64, name: [UInt8], child: UInt64)] = []
        /// Inodes given a name `#NUMBER` in /lost+found.
        public var movedToLostAndFound: [UInt64] = []
        /// Inodes given a new record (their contents survived, their record did not).
        public var recreated: Set<UInt64> = []

        public init() {}
    }
}

extension ReplayedFile {
    func dropPiece(at offset: UInt64) {
        if let i = pieces.find(offset) { _ = pieces.remove(at: i) }
    }
}
