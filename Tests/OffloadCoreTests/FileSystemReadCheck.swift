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
