/// `fsck --repair` after checkpoint frames were lost: what the previous commit still
/// holds, and every file repair emptied, cut short, moved or restored, named by path.
///
/// Why the merge is sound: a checkpoint states the whole tree and the journal every change
/// since, so a replay of a commit whose checkpoint lost frames holds a subset of the
/// present tree (every surviving record was true when written, and everything later is
/// replayed on top). The previous commit's replay reads its own checkpoint and then a
/// journal that reaches the current journal's end (`ImageReplay.loadPrevious`); if it
/// ends exactly where the current replay ends and no frame in between failed to decode,
/// it is a subset of the present tree too. The union of two such subsets is still one,
/// so objects one lost are taken from the other; where both lost a file's bytes, they are
/// reported. A previous commit whose journal does not reach the present is not used:
/// its files might point at blocks reused since.
public enum ImageSalvage {
    /// True when `previous` (from `ImageReplay.loadPrevious`) may be merged into
    /// `current`: its journal read through to exactly where the current one ends.
    public static func canMerge(_ previous: ImageReplay, into current: ImageReplay) -> Bool {
        previous.provenance != nil && current.provenance != nil && !previous.journalUndecodable
            && !current.journalUndecodable && previous.nextJournalSequence == current.nextJournalSequence
            && previous.journalSegments.contains(current.commit.journal)
    }

    /// Takes into `current` what it lost and `previous` still has: inodes, names, and the
    /// contents of files whose bytes `previous` states in full. `previous`'s segments are
    /// borrowed (they stay in use until the next checkpoint). Returns the inodes restored.
    public static func merge(_ previous: ImageReplay, into current: ImageReplay) -> Set<UInt64> {
        precondition(canMerge(previous, into: current))
        var restored: Set<UInt64> = []
        for (number, record) in previous.inodes where current.inodes[number] == nil {
            current.inodes[number] = record
            // Contents the current checkpoint kept without their record beat an older
            // copy, if they are whole.
            let stray = current.strays.removeValue(forKey: number)
            if let stray, current.provenance!.lostRanges(of: number, size: stray.size) == nil {
                current.files[number] = stray
            } else if let file = previous.files[number] {
                adopt(file, of: number, from: previous, into: current)
            } else if let stray {
                current.files[number] = stray
            }
            restored.insert(number)
        }
        for (number, file) in current.files where !restored.contains(number) {
            guard current.provenance!.lostRanges(of: number, size: file.size) != nil,
                  let older = previous.files[number],
                  previous.provenance!.lostRanges(of: number, size: older.size) == nil else { continue }
            adopt(older, of: number, from: previous, into: current)
            restored.insert(number)
        }
        for (directory, names) in previous.entries where current.inodes[directory]?.type == ImageReplay.directoryType {
            for (name, child) in names where current.entries[directory]?[name] == nil && current.inodes[child] != nil {
                current.entries[directory, default: [:]][name] = child
                restored.insert(child)
            }
        }
        current.nextInode = max(current.nextInode, previous.nextInode)
        current.borrowedSegments += previous.metadataSegments
        return restored
    }

    private static func adopt(_ file: ReplayedFile, of number: UInt64, from previous: ImageReplay,
                              into current: ImageReplay) {
        current.files[number] = file
        current.provenance!.statedRanges[number] = previous.provenance!.statedRanges[number]
    }

    /// One line per affected file, sorted by path: restored (from the previous commit),
    /// emptied or with bytes lost (now zeros; their mtime and ctime become `now`, so
    /// backup and sync tools see them change), moved to /lost+found, or a name removed.
    /// `replay` is the repaired tree; `previous` (if read) names where moved files were.
    public static func describe(_ replay: ImageReplay, restored: Set<UInt64>, repair: ImageReplay.RepairLog,
                                previous: ImageReplay?, now: RecordTime) -> [String] {
        guard let provenance = replay.provenance else { return [] }
        let paths = ReplayPaths(replay)
        let oldPaths = previous.map(ReplayPaths.init)
        var lines: [(path: String, line: String)] = []
        for number in restored {
            guard let path = paths.path(of: number) else { continue }
            lines.append((path, "restored: \(path) (from the previous checkpoint)"))
        }
        for (number, file) in replay.files {
            guard let lost = provenance.lostRanges(of: number, size: file.size), let path = paths.path(of: number) else {
                continue
            }
            replay.inodes[number]?.modificationTime = now
            replay.inodes[number]?.changeTime = now
            if provenance.statedRanges[number] == nil {
                lines.append((path, "emptied: \(path) (its contents were in a damaged checkpoint frame)"))
            } else {
                let ranges = lost.map { "\($0.lowerBound)..<\($0.upperBound)" }.joined(separator: ", ")
                lines.append((path, "lost data: \(path): bytes \(ranges) are now zeros (in a damaged checkpoint frame)"))
            }
        }
        for number in repair.recreated where !repair.movedToLostAndFound.contains(number) {
            guard let path = paths.path(of: number) else { continue }
            lines.append((path, "attributes lost: \(path) (its inode record was in a damaged checkpoint frame: "
                          + "its contents are kept, its mode is now 0600 and its owner the repairing user)"))
        }
        for number in repair.movedToLostAndFound {
            let path = paths.path(of: number) ?? "/lost+found/#\(number)"
            let was = oldPaths?.path(of: number).map { "; it was \($0)" } ?? ""
            let what = repair.recreated.contains(number)
                ? "its name and attributes were lost, its contents kept" : "it lost its name\(was)"
            lines.append((path, "moved: \(path) (\(what))"))
        }
        for (directory, name, child) in repair.removedEntries {
            let path = (paths.path(of: directory).map { $0 == "/" ? "" : $0 } ?? "/#\(directory)") + "/"
                + String(decoding: name, as: UTF8.self)
            lines.append((path, "removed: \(path) (it named inode \(child), which was lost)"))
        }
        return lines.sorted { ($0.path, $0.line) < ($1.path, $1.line) }.map(\.line)
    }
}

/// Paths of a replayed tree's inodes: for each inode one name (the first in byte order),
/// walked up to the root.
struct ReplayPaths {
    private var names: [UInt64: (directory: UInt64, name: [UInt8])] = [:]

    init(_ replay: ImageReplay) {
        for (directory, entries) in replay.entries where replay.inodes[directory] != nil {
            for (name, child) in entries {
                if let known = names[child], !name.lexicographicallyPrecedes(known.name) { continue }
                names[child] = (directory, name)
            }
        }
    }

    /// "/a/b", or nil when the inode has no name leading to the root.
    func path(of inode: UInt64) -> String? {
        if inode == ImageAnalysis.rootInode { return "/" }
        var parts: [String] = []
        var current = inode
        while current != ImageAnalysis.rootInode {
            guard let step = names[current], parts.count < 4096 else { return nil }
            parts.append(String(decoding: step.name, as: UTF8.self))
            current = step.directory
        }
        return "/" + parts.reversed().joined(separator: "/")
    }
}
