import XCTest
import OffloadCore
import OffloadSimulation
import SplitMix

/// `FileSystemTree` against `FileSystemModel`: random operations as a namespace would
/// journal them (creates, hard links, renames, unlinks with drops and orphans, xattrs
/// inline and chunked, symlink targets of one and several parts, writes of image, fill,
/// hole and RAM pieces, truncates), some of them invalid and to be refused with nothing
/// changed, commits and reopening at the committed root. After every operation everything
/// the model holds must read back the same, nothing must remain of dropped inodes, and the
/// block references the tree reported must equal what its image extents hold.
/// Hashes keep 4 bits, so names and xattrs share hash items all the time.
/// Replay one seed with `OFFLOADFS_FSTREE_SEED=N`.
final class FileSystemTreeModelTests: XCTestCase {
    struct ModelFailure: Error {}
    static let imageBlocks = 40
    static let fileLimit = 20_000

    final class Harness {
        let pages = MemoryTreePages(firstBlock: 1_000_000)
        let hashes = ItemHashes.weakened(SipHash24(key0: 7, key1: 11), bits: 4)
        var fs: FileSystemTree
        var model = FileSystemModel()
        var counts = [Int](repeating: 0, count: FileSystemTreeModelTests.imageBlocks + 2)
        var generation: UInt64 = 0
        var random: SplitMix64
        var nextInode: UInt64 = 2
        var history: [String] = []
        let seed: UInt64
        var refused = 0, commits = 0, reopened = 0, chunked = 0, multipartTargets = 0, writes = 0

        init(seed: UInt64) throws {
            self.seed = seed
            random = SplitMix64(seed: seed)
            fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 5, treeID: 1, root: nil), hashes: hashes)
            let root = Self.inode(type: 4, links: 2, parent: 1, nextIndex: 3)
            try perform([.attributes(inode: 1, root)], "make the root")
        }

        static func inode(type: UInt8, links: UInt32, parent: UInt64 = 0, nextIndex: UInt64 = 0, size: UInt64 = 0) -> InodeItem {
            let time = RecordTime(seconds: 1_700_000_000, nanoseconds: 0)
            return InodeItem(type: type, permissions: 0o644, uid: 0, gid: 0, linkCount: links, size: size, rdev: 0,
                             accessTime: time, modificationTime: time, changeTime: time, birthTime: time,
                             parent: parent, nextIndex: nextIndex)
        }

        func fail(_ message: String) throws -> Never {
            XCTFail("seed \(seed): \(message)\nlast operations:\n" + history.suffix(10).joined(separator: "\n")
                    + "\nreplay with OFFLOADFS_FSTREE_SEED=\(seed)")
            throw ModelFailure()
        }

        /// Applies one operation's changes to the tree and the model; a change the model
        /// says is invalid must be refused with its error and change nothing.
        func perform(_ changes: [JournalChange], _ what: String) throws {
            history.append(what)
            for change in changes {
                if let expected = model.refusal(of: change) {
                    do {
                        try fs.apply(change)
                        try fail("\(change) was applied; expected \(expected)")
                    } catch let error as FSError {
                        guard Self.sameCase(error, expected) else { try fail("\(change) threw \(error), expected \(expected)") }
                        refused += 1
                    }
                    continue
                }
                do {
                    try fs.apply(change)
                } catch {
                    try fail("\(change) threw \(error)")
                }
                model.apply(change)
            }
            // Retains first, as the commit applies them: no count falls below zero on the way.
            let references = fs.takeReferenceChanges()
            for range in references.retained { for block in range { counts[Int(block)] += 1 } }
            for range in references.released {
                for block in range {
                    counts[Int(block)] -= 1
                    if counts[Int(block)] < 0 { try fail("block \(block) released below zero") }
                }
            }
        }

        static func sameCase(_ a: FSError, _ b: FSError) -> Bool {
            switch (a, b) {
            case (.invalidArgument, .invalidArgument): return true
            default: return a == b
            }
        }

        // MARK: - Random operations

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

        func step() throws {
            switch Int.random(in: 0..<20, using: &random) {
            case 0..<3: try create()
            case 3: try hardLink()
            case 4..<6: try unlink()
            case 6: try rename()
            case 7..<9: try setXattr()
            case 9: try removeXattr()
            case 10..<13: try write()
            case 13: try truncate()
            case 14: try dropOrphan()
            case 15: try refusedChange()
            case 16:
                guard let inode = pick(model.inodes.keys.sorted()) else { return }
                var item = model.inodes[inode]!
                item.permissions = UInt32.random(in: 0...0o7777, using: &random)
                try perform([.attributes(inode: inode, item)], "chmod \(inode)")
            case 17, 18: try commit(reopen: Int.random(in: 0..<3, using: &random) == 0)
            default: try check()
            }
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

        func rename() throws {
            guard let (from, entry) = pick(named), entry.type != 4, let to = pick(directories) else { return }
            let newName = name()
            guard model.entries[to]?[newName] == nil else { return }
            let (index, parentChange) = takeIndex(to)
            try perform([.unlink(directory: from, entry),
                         .link(directory: to, NamedEntry(name: newName, child: entry.child, type: entry.type, index: index)),
                         parentChange], "rename \(from)/\(String(decoding: entry.name, as: UTF8.self)) to \(to)")
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

        func removeXattr() throws {
            guard let inode = pick(model.inodes.keys.sorted()) else { return }
            let name = pick(Self.xattrNames)!
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
                case 0..<3:
                    let limit = UInt64(FileSystemTreeModelTests.imageBlocks * BackingStore.blockSize) - length
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
            let start = UInt64.random(in: 0..<UInt64(FileSystemTreeModelTests.fileLimit - 1), using: &random)
            let end = min(UInt64(FileSystemTreeModelTests.fileLimit), start + UInt64.random(in: 1...5000, using: &random))
            let size = max(UInt64(model.contents[file]?.count ?? 0), end)
            writes += 1
            try perform([.fileRange(inode: file, size: size, range: start..<end, pieces: pieces(start..<end))],
                        "write \(file) \(start)..<\(end)")
        }

        func truncate() throws {
            guard let file = pick(files) else { return }
            let size = UInt64.random(in: 0...UInt64(FileSystemTreeModelTests.fileLimit), using: &random)
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

        func commit(reopen: Bool) throws {
            generation += 1
            let commit = try fs.tree.commit(generation: generation)
            pages.releasePages(commit.freedBlocks)
            commits += 1
            _ = try fs.tree.check()
            if reopen {
                fs = FileSystemTree(tree: try CopyOnWriteTree(pages: pages, imageID: 5, treeID: 1, root: commit.root), hashes: hashes)
                reopened += 1
            }
            history.append("commit \(generation)\(reopen ? " and reopen" : "")")
        }

        // MARK: - Checking the tree against the model

        func check() throws {
            if !pages.violations.isEmpty { try fail("page store violations: \(pages.violations)") }
            var expectedCounts = [Int](repeating: 0, count: counts.count)
            for (inode, item) in model.inodes {
                guard try fs.inode(inode) == item else { try fail("inode \(inode) reads \(String(describing: try fs.inode(inode))), model \(item)") }
                let links = try fs.links(of: inode), expectedLinks = model.links(of: inode)
                guard links.count == expectedLinks.count, expectedLinks.allSatisfy(links.contains) else {
                    try fail("inode \(inode) links \(links), model \(expectedLinks)")
                }
                if item.type == 4 {
                    let expected = (model.entries[inode] ?? [:]).values.sorted { $0.index < $1.index }
                    guard try fs.entries(directory: inode) == expected else { try fail("directory \(inode) entries differ") }
                    for entry in expected where try fs.lookup(directory: inode, name: entry.name) != entry {
                        try fail("lookup \(inode)/\(String(decoding: entry.name, as: UTF8.self))")
                    }
                    let absent = name() + [UInt8(ascii: "q")]
                    if try fs.lookup(directory: inode, name: absent) != nil { try fail("lookup of a name never made found one") }
                    if let from = expected.dropFirst(expected.count / 2).first,
                       try fs.entries(directory: inode, from: from.index, limit: 3) != Array(expected.drop { $0.index < from.index }.prefix(3)) {
                        try fail("readdir of \(inode) from index \(from.index)")
                    }
                }
                let xattrs = model.xattrs[inode] ?? [:]
                let names = try fs.xattrNames(inode)
                guard Set(names) == Set(xattrs.keys), names.count == xattrs.count else { try fail("xattr names of \(inode): \(names)") }
                for (name, value) in xattrs where try fs.xattr(inode, name: name) != value {
                    try fail("xattr \(String(decoding: name, as: UTF8.self)) of \(inode)")
                }
                guard try fs.symlinkTarget(inode) == model.targets[inode] else { try fail("symlink target of \(inode)") }
                if item.type == 8 {
                    let cells = model.contents[inode] ?? []
                    var read = [FileSystemModel.Cell](repeating: 0, count: cells.count)
                    let extents = try fs.extents(inode, overlapping: 0..<UInt64.max)
                    for (offset, extent) in extents {
                        guard offset + extent.length <= UInt64(cells.count) else { try fail("extent at \(offset) past size \(cells.count)") }
                        switch extent {
                        case .image(let image, let length):
                            for i in 0..<Int(length) { read[Int(offset) + i] = FileSystemModel.image(image + UInt64(i)) }
                            for block in BlockReferenceChanges.blocks(offset: image, length: length) { expectedCounts[Int(block)] += 1 }
                        case .fill(let byte, let length):
                            if byte == 0 { try fail("a zero fill stored at \(offset)") }
                            read.replaceSubrange(Int(offset)..<Int(offset + length), with: repeatElement(FileSystemModel.Cell(byte), count: Int(length)))
                        case .inline(let bytes):
                            for (i, byte) in bytes.enumerated() { read[Int(offset) + i] = FileSystemModel.Cell(byte) }
                        }
                    }
                    // memcmp: comparing element by element dominates a debug build's run.
                    let same = read.count == cells.count && (read.isEmpty || read.withUnsafeBytes { a in
                        cells.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 }
                    })
                    if !same {
                        let first = (0..<min(read.count, cells.count)).first { read[$0] != cells[$0] } ?? min(read.count, cells.count)
                        try fail("file \(inode) differs at byte \(first): \(extents.map { "\($0.offset): \($0.extent.length)" })")
                    }
                }
            }
            if counts != expectedCounts { try fail("reported references \(counts), extents hold \(expectedCounts)") }
            for inode in model.dropped where try fs.hasItems(inode) { try fail("dropped inode \(inode) has items left") }
            let orphans = try fs.orphans()
            guard orphans.map(\.inode) == model.orphans.keys.sorted(),
                  orphans.allSatisfy({ model.orphans[$0.inode] == $0.item }) else { try fail("orphans \(orphans)") }
        }
    }

    func testRandomChangesReadBackAsThePlainModelHasThem() throws {
        let run = ModelRun(prefix: "OFFLOADFS_FSTREE", defaultSeeds: 5, defaultOperations: 1_200)
        var totals = (refused: 0, commits: 0, reopened: 0, chunked: 0, targets: 0, writes: 0, levels: 0)
        for seed in run.seeds {
            let harness = try Harness(seed: seed)
            for operation in 0..<run.operations {
                try harness.step()
                if operation % 10 == 0 { try harness.check() }
            }
            try harness.commit(reopen: true)
            try harness.check()
            totals.refused += harness.refused
            totals.commits += harness.commits
            totals.reopened += harness.reopened
            totals.chunked += harness.chunked
            totals.targets += harness.multipartTargets
            totals.writes += harness.writes
            totals.levels = max(totals.levels, Int(harness.fs.tree.committedRoot?.level ?? 0))
        }
        // The run reached what it is meant to test.
        if !run.customized {
            XCTAssertGreaterThan(totals.refused, 50)
            XCTAssertGreaterThan(totals.reopened, 20)
            XCTAssertGreaterThan(totals.chunked, 100)
            XCTAssertGreaterThan(totals.targets, 10)
            XCTAssertGreaterThan(totals.writes, 500)
            XCTAssertGreaterThanOrEqual(totals.levels, 1, "the trees never grew past one leaf")
        }
    }
}
