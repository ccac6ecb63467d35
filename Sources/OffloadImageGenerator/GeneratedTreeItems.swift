import OffloadCore

/// A `GeneratedLayout` as format 2's filesystem-tree items, in key order, made one
/// object at a time (memory follows the largest directory, not the tree), for
/// `TreeVolume.bulkLoad`: what the scale benchmark opens at 10 million files without
/// making them one by one.
///
/// Inode numbers: the root 1, the directories from 2 in layout order (the spread ones,
/// then `single`), then the files in layout order. Files hold `GeneratedLayout.contents`
/// as one inline extent (every tenth file; the others are empty). Owner root, files 0644,
/// directories 0755, every time `time`.
public struct GeneratedTreeItems: Sequence {
    public let layout: GeneratedLayout
    public let hashes: ItemHashes
    public let time: RecordTime

    public init(layout: GeneratedLayout, hashes: ItemHashes, time: RecordTime = RecordTime(seconds: 1_767_225_600, nanoseconds: 0)) {
        self.layout = layout
        self.hashes = hashes
        self.time = time
    }

    /// The inode number of file `index` and of directory `number` (0-based, `single` last).
    public func fileInode(_ index: Int) -> UInt64 { 2 + UInt64(layout.totalDirectories) + UInt64(index) }
    public func directoryInode(_ number: Int) -> UInt64 { 2 + UInt64(number) }

    /// The files of directory `number`, as layout indexes.
    public func files(ofDirectory number: Int) -> Range<Int> {
        if number < layout.spreadDirectories {
            return number * layout.filesPerDirectory..<Swift.min(layout.files, (number + 1) * layout.filesPerDirectory)
        }
        return layout.files..<layout.totalFiles
    }

    func directoryName(_ number: Int) -> [UInt8] {
        Array((number < layout.spreadDirectories ? GeneratedLayout.spreadDirectoryName(number) : GeneratedLayout.singleDirectoryName).utf8)
    }

    func inodeItem(type: UInt8, permissions: UInt32, links: UInt32, size: UInt64, parent: UInt64, nextIndex: UInt64) -> [UInt8] {
        InodeItem(type: type, permissions: permissions, uid: 0, gid: 0, linkCount: links, size: size, rdev: 0,
                  accessTime: time, modificationTime: time, changeTime: time, birthTime: time,
                  parent: parent, nextIndex: nextIndex).encoded()
    }

    public func makeIterator() -> AnyIterator<(TreeKey, [UInt8])> {
        var pending: [(TreeKey, [UInt8])] = []
        var next = 0  // position in `pending`
        var object: UInt64 = 1
        let lastObject = fileInode(layout.totalFiles) - 1
        return AnyIterator {
            while next == pending.count {
                guard object <= lastObject else { return nil }
                pending = items(of: object)
                next = 0
                object += 1
            }
            next += 1
            return pending[next - 1]
        }
    }

    /// Every item of inode `object`, in key order.
    func items(of object: UInt64) -> [(TreeKey, [UInt8])] {
        func key(_ kind: ItemKind, _ offset: UInt64) -> TreeKey { TreeKey(object: object, kind: kind.rawValue, offset: offset) }
        let directories = layout.totalDirectories
        if object == 1 {
            let entries = (0..<directories).map { NamedEntry(name: directoryName($0), child: directoryInode($0), type: 4, index: 3 + UInt64($0)) }
            return [(key(.inode, 0), inodeItem(type: 4, permissions: 0o755, links: 2 + UInt32(directories), size: 0,
                                                parent: 1, nextIndex: 3 + UInt64(directories)))]
                + directoryItems(object, entries)
        }
        if object < fileInode(0) {
            let number = Int(object - 2)
            let files = self.files(ofDirectory: number)
            let entries = files.map { NamedEntry(name: Array(GeneratedLayout.fileName($0).utf8), child: fileInode($0), type: 8,
                                                 index: 3 + UInt64($0 - files.lowerBound)) }
            let name = directoryName(number)
            return [(key(.inode, 0), inodeItem(type: 4, permissions: 0o755, links: 2, size: 0, parent: 1,
                                                nextIndex: 3 + UInt64(files.count))),
                    (key(.backReference, hashes.backReference(directory: 1, name: name)),
                     BackReferenceItem(links: [Link(directory: 1, index: 3 + UInt64(number), name: name)]).encoded())]
                + directoryItems(object, entries)
        }
        let index = Int(object - fileInode(0))
        let (directoryNumber, position) = index < layout.files
            ? (index / layout.filesPerDirectory, index % layout.filesPerDirectory)
            : (layout.spreadDirectories, index - layout.files)
        let name = Array(GeneratedLayout.fileName(index).utf8)
        let directory = directoryInode(directoryNumber)
        let contents = GeneratedLayout.contents(ofFile: index)
        var items = [(key(.inode, 0), inodeItem(type: 8, permissions: 0o644, links: 1, size: UInt64(contents.count), parent: 0, nextIndex: 0)),
                     (key(.backReference, hashes.backReference(directory: directory, name: name)),
                      BackReferenceItem(links: [Link(directory: directory, index: 3 + UInt64(position), name: name)]).encoded())]
        if !contents.isEmpty { items.append((key(.extent, 0), ExtentItem.inline(contents).encoded())) }
        return items
    }

    /// A directory's name items (one per hash, colliding names together) and index items.
    func directoryItems(_ directory: UInt64, _ entries: [NamedEntry]) -> [(TreeKey, [UInt8])] {
        var byHash: [UInt64: [NamedEntry]] = [:]
        for entry in entries { byHash[hashes.name(entry.name), default: []].append(entry) }
        let names = byHash.keys.sorted().map { hash in
            (TreeKey(object: directory, kind: ItemKind.name.rawValue, offset: hash), NameItem(entries: byHash[hash]!).encoded())
        }
        let indexes = entries.map { entry in
            (TreeKey(object: directory, kind: ItemKind.index.rawValue, offset: entry.index),
             IndexItem(name: entry.name, child: entry.child, type: entry.type).encoded())
        }
        return names + indexes
    }
}
