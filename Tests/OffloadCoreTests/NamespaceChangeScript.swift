import OffloadCore
import SplitMix

/// Random namespace operations as a namespace would journal them, chosen from the state
/// of a `FileSystemModel`: creates of files, directories and symlinks (targets of one part
/// and of several), hard links, renames, unlinks that drop the inode or leave an orphan,
/// orphans dropped, xattrs inline and chunked, writes of image, fill, hole and RAM pieces,
/// truncates, chmods, and (when `refusals` is on) changes that must be refused. The test
/// carries each out through `perform`, on what it tests and on `model`.
final class NamespaceChangeScript {
    static let imageBlocks = 40
    static let fileLimit = 20_000
    var model = FileSystemModel()
    var random: SplitMix64
    var nextInode: UInt64 = 2
    let refusals: Bool
    /// Writes carry long RAM pieces instead of image extents at made-up offsets (for a
    /// volume, whose image extents must be blocks its allocator handed out).
    var longMemoryPieces = false
    var chunked = 0, multipartTargets = 0, writes = 0, renames = 0, replacingRenames = 0
    /// Carries out one operation's changes, described for failure messages.
    var perform: ([JournalChange], String) throws -> Void = { _, _ in }

    init(seed: UInt64, refusals: Bool) {
        random = SplitMix64(seed: seed)
        self.refusals = refusals
    }

    /// The root directory, inode 1.
    func makeRoot() throws {
        try perform([.attributes(inode: 1, Self.inode(type: 4, links: 2, parent: 1, nextIndex: 3))], "make the root")
    }

    static func inode(type: UInt8, links: UInt32, parent: UInt64 = 0, nextIndex: UInt64 = 0, size: UInt64 = 0) -> InodeItem {
        let time = RecordTime(seconds: 1_700_000_000, nanoseconds: 0)
        return InodeItem(type: type, permissions: 0o644, uid: 0, gid: 0, linkCount: links, size: size, rdev: 0,
                         accessTime: time, modificationTime: time, changeTime: time, birthTime: time,
                         parent: parent, nextIndex: nextIndex)
    }

    /// One random operation (nothing, when the one drawn does not fit the state).
    func step() throws {
        switch Int.random(in: 0..<16, using: &random) {
        case 0..<3: try create()
        case 3: try hardLink()
        case 4..<6: try unlink()
        case 6: try rename()
        case 7..<9: try setXattr()
        case 9: try removeXattr()
        case 10..<13: try write()
        case 13: try truncate()
        case 14: try dropOrphan()
        default:
            if refusals, Bool.random(using: &random) { return try refusedChange() }
            guard let inode = pick(model.inodes.keys.sorted()) else { return }
            var item = model.inodes[inode]!
            item.permissions = UInt32.random(in: 0...0o7777, using: &random)
            try perform([.attributes(inode: inode, item)], "chmod \(inode)")
        }
    }

    func name() -> [UInt8] {
        (0..<Int.random(in: 1...6, using: &random)).map { _ in UInt8(ascii: "a") + UInt8.random(in: 0..<6, using: &random) }
    }

    /// Directories that still have a name: nothing is created in an unlinked one.
    var directories: [UInt64] { model.inodes.filter { $0.value.type == 4 && $0.value.linkCount > 0 }.keys.sorted() }
    var files: [UInt64] { model.inodes.filter { $0.value.type == 8 }.keys.sorted() }
    var named: [(directory: UInt64, entry: NamedEntry)] {
        model.entries.keys.sorted().flatMap { directory in
            model.entries[directory]!.values.sorted { $0.index < $1.index }.map { (directory, $0) }
        }
    }

    func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[Int.random(in: 0..<items.count, using: &random)] }

    /// The directory's attributes with one more index taken (and a link more for a subdirectory).
    func takeIndex(_ directory: UInt64, subdirectory: Bool = false) -> (index: UInt64, JournalChange) {
        var item = model.inodes[directory]!
        let index = item.nextIndex
        item.nextIndex += 1
        if subdirectory { item.linkCount += 1 }
        return (index, .attributes(inode: directory, item))
    }

    func create() throws {
        guard let directory = pick(directories), model.entries[directory, default: [:]].count < 40 else { return }
        let type: UInt8 = [8, 8, 8, 4, 10].randomElement(using: &random)!
        let inode = nextInode
        nextInode += 1
        let (index, parentChange) = takeIndex(directory, subdirectory: type == 4)
        let entry = NamedEntry(name: name(), child: inode, type: type, index: index)
        guard model.entries[directory]?[entry.name] == nil else { return }
        var changes: [JournalChange] = [
            .attributes(inode: inode, Self.inode(type: type, links: type == 4 ? 2 : 1, parent: type == 4 ? directory : 0,
                                                 nextIndex: type == 4 ? 3 : 0)),
            .link(directory: directory, entry), parentChange,
        ]
        if type == 10 {
            // Mostly short targets; sometimes several parts, up to PATH_MAX.
            let length = Bool.random(using: &random) ? Int.random(in: 1...60, using: &random) : Int.random(in: 1...4095, using: &random)
            if length > XattrItem.chunkBytes { multipartTargets += 1 }
            changes.append(.symlinkTarget(inode: inode, (0..<length).map { _ in UInt8.random(in: 1...255, using: &random) }))
        }
        try perform(changes, "create \(type) \(inode) as \(directory)/\(String(decoding: entry.name, as: UTF8.self))")
    }

    func hardLink() throws {
        guard let file = pick(files), let directory = pick(directories), !model.dropped.contains(file) else { return }
        let newName = name()
        guard model.entries[directory]?[newName] == nil, model.inodes[file]!.linkCount > 0 else { return }
        let (index, parentChange) = takeIndex(directory)
        var item = model.inodes[file]!
        item.linkCount += 1
        try perform([.link(directory: directory, NamedEntry(name: newName, child: file, type: 8, index: index)),
                     parentChange, .attributes(inode: file, item)], "link \(file) into \(directory)")
    }

    func unlink() throws {
        guard let (directory, entry) = pick(named) else { return }
        if entry.type == 4, !(model.entries[entry.child] ?? [:]).isEmpty { return }
        var changes: [JournalChange] = [.unlink(directory: directory, entry)]
        var child = model.inodes[entry.child]!
        child.linkCount -= entry.type == 4 ? 2 : 1
        if entry.type == 4 {
            var parent = model.inodes[directory]!
            parent.linkCount -= 1
            changes.append(.attributes(inode: directory, parent))
        }
        if child.linkCount > 0 {
            changes.append(.attributes(inode: entry.child, child))
        } else if Bool.random(using: &random) {
            changes.append(.drop(inode: entry.child))
        } else {
            // Unlinked while open: the orphan keeps it until its last close.
            changes.append(.attributes(inode: entry.child, child))
            changes.append(.orphan(inode: entry.child, OrphanItem(state: .unlinkedWhileOpen)))
        }
        try perform(changes, "unlink \(directory)/\(String(decoding: entry.name, as: UTF8.self)) (\(entry.child))")
    }

    func dropOrphan() throws {
        guard let inode = pick(model.orphans.keys.sorted()) else { return }
        try perform([.drop(inode: inode), .orphan(inode: inode, nil)], "drop orphan \(inode)")
    }

    /// Renames a file or a directory (never into itself or below), to a new name or over
    /// an existing file, whose inode loses a link (and is dropped at none).
    func rename() throws {
        guard let (from, entry) = pick(named), let to = pick(directories) else { return }
        if entry.type == 4 {
            // Not into itself or a directory below it.
            var ancestor = to
            while ancestor != 1 {
                if ancestor == entry.child { return }
                ancestor = model.inodes[ancestor]!.parent
            }
            if entry.child == 1 { return }
        }
        let replaced = Bool.random(using: &random)
            ? (model.entries[to] ?? [:]).values.filter { $0.type != 4 && $0.child != entry.child }.min { $0.index < $1.index } : nil
        let newName = replaced?.name ?? name()
        guard replaced != nil || model.entries[to]?[newName] == nil, !(from == to && newName == entry.name) else { return }
        var changes: [JournalChange] = [.unlink(directory: from, entry)]
        if let replaced {
            changes.append(.unlink(directory: to, replaced))
            var item = model.inodes[replaced.child]!
            item.linkCount -= 1
            changes.append(item.linkCount > 0 ? .attributes(inode: replaced.child, item) : .drop(inode: replaced.child))
        }
        // Link counts: a directory moving takes its ".." from one parent to the other.
        var target = model.inodes[to]!
        let index = target.nextIndex
        target.nextIndex += 1
        if entry.type == 4, from != to {
            target.linkCount += 1
            var source = model.inodes[from]!
            source.linkCount -= 1
            changes.append(.attributes(inode: from, source))
            var moved = model.inodes[entry.child]!
            moved.parent = to
            changes.append(.attributes(inode: entry.child, moved))
        }
        changes.append(.attributes(inode: to, target))
        changes.append(.link(directory: to, NamedEntry(name: newName, child: entry.child, type: entry.type, index: index)))
        renames += 1
        if replaced != nil { replacingRenames += 1 }
        try perform(changes, "rename \(from)/\(String(decoding: entry.name, as: UTF8.self)) to \(to)/\(String(decoding: newName, as: UTF8.self))\(replaced.map { " over \($0.child)" } ?? "")")
    }

    static let xattrNames: [[UInt8]] = ["user.a", "user.b", "user.mime", "security.selinux", "user.long.name.x",
                                        "trusted.t", "user.c", "user.d"].map { Array($0.utf8) }

    func setXattr() throws {
        guard let inode = pick(model.inodes.keys.sorted()) else { return }
        let length: Int
        switch Int.random(in: 0..<10, using: &random) {
        case 0: length = 0
        case 1..<5: length = Int.random(in: 1...100, using: &random)
        case 5, 6: length = Int.random(in: 800...1100, using: &random)
        case 7, 8: length = Int.random(in: 1100...6000, using: &random)
        default: length = Int.random(in: 0..<40, using: &random) == 0 ? XattrItem.valueLimit : 2 * XattrItem.chunkBytes
        }
        if length > 1000 { chunked += 1 }
        let name = pick(Self.xattrNames)!
        try perform([.setXattr(inode: inode, name: name, value: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) })],
                    "setxattr \(inode) \(String(decoding: name, as: UTF8.self)) (\(length) bytes)")
    }

    /// Removes an xattr the inode has; with `refusals`, sometimes one it lacks.
    func removeXattr() throws {
        guard let inode = pick(model.inodes.keys.sorted()) else { return }
        let held = (model.xattrs[inode] ?? [:]).keys.sorted { $0.lexicographicallyPrecedes($1) }
        guard let name = refusals ? pick(Self.xattrNames) : pick(held) else { return }
        try perform([.removeXattr(inode: inode, name: name)], "removexattr \(inode) \(String(decoding: name, as: UTF8.self))")
    }

    /// Pieces tiling `range`: image bytes (often not block-aligned, often shared with
    /// other files), fills, holes and RAM bytes.
    func pieces(_ range: Range<UInt64>) -> [FilePiece] {
        var pieces: [FilePiece] = []
        var cursor = range.lowerBound
        while cursor < range.upperBound {
            let length = min(range.upperBound - cursor, UInt64.random(in: 1...6000, using: &random))
            let extent: Extent
            switch Int.random(in: 0..<6, using: &random) {
            case 0..<3 where longMemoryPieces:
                // RAM bytes longer than an inline extent: a commit places them in the image.
                extent = .inMemory(randomBytes(Int(length), using: &random))
            case 0..<3:
                let limit = UInt64(NamespaceChangeScript.imageBlocks * BackingStore.blockSize) - length
                extent = .mmapOffload(offset: UInt64.random(in: 0...limit, using: &random), size: length)
            case 3: extent = .repeatingBytes(value: 0, count: length)
            case 4: extent = .repeatingBytes(value: UInt8.random(in: 1...255, using: &random), count: length)
            default:
                let bytes = min(length, UInt64(ExtentItem.inlineLimit))
                extent = .inMemory((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &random) })
            }
            pieces.append(FilePiece(offset: cursor, extent: extent))
            cursor += extent.size
        }
        return pieces
    }

    func write() throws {
        guard let file = pick(files) else { return }
        let start = UInt64.random(in: 0..<UInt64(NamespaceChangeScript.fileLimit - 1), using: &random)
        let end = min(UInt64(NamespaceChangeScript.fileLimit), start + UInt64.random(in: 1...5000, using: &random))
        let size = max(UInt64(model.contents[file]?.count ?? 0), end)
        writes += 1
        try perform([.fileRange(inode: file, size: size, range: start..<end, pieces: pieces(start..<end))],
                    "write \(file) \(start)..<\(end)")
    }

    func truncate() throws {
        guard let file = pick(files) else { return }
        let size = UInt64.random(in: 0...UInt64(NamespaceChangeScript.fileLimit), using: &random)
        try perform([.fileRange(inode: file, size: size, range: size..<size, pieces: [])], "truncate \(file) to \(size)")
    }

    /// Changes the model says are invalid: each must be refused and change nothing.
    func refusedChange() throws {
        switch Int.random(in: 0..<4, using: &random) {
        case 0:
            guard let (directory, entry) = pick(named) else { return }
            try perform([.link(directory: directory, NamedEntry(name: entry.name, child: nextInode, type: 8, index: 999_999))],
                        "link over \(directory)/\(String(decoding: entry.name, as: UTF8.self))")
        case 1:
            guard let (directory, entry) = pick(named) else { return }
            var wrong = entry
            wrong.index += 1
            try perform([.unlink(directory: directory, wrong)], "unlink with a wrong index")
        case 2:
            guard let (directory, entry) = pick(named), let file = pick(files) else { return }
            try perform([.link(directory: directory, NamedEntry(name: name() + [UInt8(ascii: "z")], child: file, type: 8, index: entry.index))],
                        "link at a taken index")
        default:
            guard let file = pick(files) else { return }
            let size = UInt64(model.contents[file]?.count ?? 0)
            try perform([.fileRange(inode: file, size: max(size, 2000), range: 0..<2000,
                                    pieces: [FilePiece(offset: 0, extent: .inMemory(Array(repeating: 7, count: 2000)))])],
                        "a RAM piece too long for the tree")
        }
    }
}
