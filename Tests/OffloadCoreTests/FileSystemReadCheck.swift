import Foundation
import OffloadCore

/// The reads a request makes, answered alike by the committed tree and by the delta's
/// layers over it; `mismatch(in:)` compares them with a `FileSystemModel`.
protocol FileSystemReads {
    func inode(_ inode: UInt64) throws(FSError) -> InodeItem?
    func lookup(directory: UInt64, name: [UInt8]) throws(FSError) -> NamedEntry?
    func entries(directory: UInt64, from index: UInt64, limit: Int) throws(FSError) -> [NamedEntry]
    func xattr(_ inode: UInt64, name: [UInt8]) throws(FSError) -> [UInt8]?
    func xattrNames(_ inode: UInt64) throws(FSError) -> [[UInt8]]
    func symlinkTarget(_ inode: UInt64) throws(FSError) -> [UInt8]?
    func allOrphans() throws(FSError) -> [(inode: UInt64, item: OrphanItem)]
}

extension FileSystemTree: FileSystemReads {
    func allOrphans() throws(FSError) -> [(inode: UInt64, item: OrphanItem)] { try orphans() }
}

extension LayeredFileSystem: FileSystemReads {
    func allOrphans() throws(FSError) -> [(inode: UInt64, item: OrphanItem)] { try orphans() }
}

extension VolumeReader: FileSystemReads {
    func allOrphans() throws(FSError) -> [(inode: UInt64, item: OrphanItem)] { try orphans() }
}

extension FileSystemModel {
    /// The first read of `reader` that differs from the model (nil: none). `absent` is a
    /// name no directory holds.
    func mismatch(in reader: some FileSystemReads, absent: [UInt8]) throws -> String? {
        for (inode, item) in inodes.sorted(by: { $0.key < $1.key }) {
            let read = try reader.inode(inode)
            guard read == item else { return "inode \(inode) reads \(String(describing: read)), model \(item)" }
            if item.type == 4 {
                let expected = (entries[inode] ?? [:]).values.sorted { $0.index < $1.index }
                let read = try reader.entries(directory: inode, from: 3, limit: .max)
                guard read == expected else {
                    let show = { (entries: [NamedEntry]) in entries.map { "\($0.index):\(String(decoding: $0.name, as: UTF8.self))->\($0.child)" } }
                    return "directory \(inode) entries \(show(read)), model \(show(expected))"
                }
                for entry in expected where try reader.lookup(directory: inode, name: entry.name) != entry {
                    return "lookup \(inode)/\(String(decoding: entry.name, as: UTF8.self))"
                }
                if try reader.lookup(directory: inode, name: absent) != nil { return "lookup of a name never made found one" }
                if let from = expected.dropFirst(expected.count / 2).first,
                   try reader.entries(directory: inode, from: from.index, limit: 3) != Array(expected.drop { $0.index < from.index }.prefix(3)) {
                    return "readdir of \(inode) from index \(from.index)"
                }
            }
            let values = xattrs[inode] ?? [:]
            let names = try reader.xattrNames(inode)
            guard Set(names) == Set(values.keys), names.count == values.count else { return "xattr names of \(inode): \(names)" }
            for (name, value) in values where try reader.xattr(inode, name: name) != value {
                return "xattr \(String(decoding: name, as: UTF8.self)) of \(inode)"
            }
            guard try reader.symlinkTarget(inode) == targets[inode] else { return "symlink target of \(inode)" }
        }
        for inode in dropped where try reader.inode(inode) != nil { return "dropped inode \(inode) reads back" }
        // Drops carried on across commits are the tree's work, not the namespace's orphans.
        let orphanList = try reader.allOrphans().filter { $0.item.state != .dropping }
        guard orphanList.map(\.inode) == orphans.keys.sorted(),
              orphanList.allSatisfy({ orphans[$0.inode] == $0.item }) else { return "orphans \(orphanList)" }
        return nil
    }
}

extension FileSystemModel {
    /// What only the tree itself answers, against the model: every inode's back
    /// references, every file's bytes from its extent items (inside the size, no fill of
    /// zeros stored), and `references` (per-block counts the tree reported through
    /// `ExtentReferenceChanges`) against what its image extents hold. Nil: all agree.
    func treeMismatch(in fs: FileSystemTree, references: [Int]) throws -> String? {
        var expectedCounts = [Int](repeating: 0, count: references.count)
        for (inode, item) in inodes.sorted(by: { $0.key < $1.key }) {
            let links = try fs.links(of: inode), expectedLinks = self.links(of: inode)
            guard links.count == expectedLinks.count, expectedLinks.allSatisfy(links.contains) else {
                return "inode \(inode) links \(links), model \(expectedLinks)"
            }
            guard item.type == 8 else { continue }
            let cells = contents[inode] ?? []
            var read = [Cell](repeating: 0, count: cells.count)
            let extents = try fs.extents(inode, overlapping: 0..<UInt64.max)
            for (offset, extent) in extents {
                guard offset + extent.length <= UInt64(cells.count) else { return "extent at \(offset) past size \(cells.count)" }
                switch extent {
                case .image(let image, let length):
                    for i in 0..<Int(length) { read[Int(offset) + i] = Self.image(image + UInt64(i)) }
                    for block in ExtentReferenceChanges.blocks(offset: image, length: length) { expectedCounts[Int(block)] += 1 }
                case .fill(let byte, let length):
                    if byte == 0 { return "a zero fill stored at \(offset)" }
                    read.replaceSubrange(Int(offset)..<Int(offset + length), with: repeatElement(Cell(byte), count: Int(length)))
                case .inline(let bytes):
                    for (i, byte) in bytes.enumerated() { read[Int(offset) + i] = Cell(byte) }
                }
            }
            // `storedBytes`, which reads the items' lengths only, counts what they store.
            let stored = extents.reduce(UInt64(0)) { total, entry in
                switch entry.extent {
                case .image(_, let length): return total + length
                case .inline(let bytes): return total + UInt64(bytes.count)
                case .fill: return total
                }
            }
            if try fs.storedBytes(inode) != stored { return "file \(inode) stores \(stored) bytes, storedBytes says \(try fs.storedBytes(inode))" }
            // memcmp: comparing element by element dominates a debug build's run.
            let same = read.count == cells.count && (read.isEmpty || read.withUnsafeBytes { a in
                cells.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 }
            })
            if !same {
                let first = (0..<min(read.count, cells.count)).first { read[$0] != cells[$0] } ?? min(read.count, cells.count)
                return "file \(inode) differs at byte \(first): \(extents.map { "\($0.offset): \($0.extent.length)" })"
            }
        }
        if references != expectedCounts { return "reported references \(references), extents hold \(expectedCounts)" }
        return nil
    }
}

/// Per-block counts kept from the reference changes a tree reported, retains first (as
/// the commit applies them); nil from `apply` when a count would fall below zero.
struct ReportedReferences {
    var counts = [Int](repeating: 0, count: NamespaceChangeScript.imageBlocks + 2)

    mutating func apply(_ changes: ExtentReferenceChanges) -> String? {
        for range in changes.retained { for block in range { counts[Int(block)] += 1 } }
        for range in changes.released {
            for block in range {
                counts[Int(block)] -= 1
                if counts[Int(block)] < 0 { return "block \(block) released below zero" }
            }
        }
        return nil
    }
}
