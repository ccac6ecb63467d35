import OffloadCore

/// A filesystem as plain dictionaries, changed by the same `JournalChange`s as
/// `FileSystemTree`: what the tree's items must read back as. Files are kept byte by
/// byte (a cell per byte: a value, or the image byte it is stored in), so the model knows
/// nothing of extents, items or hashes.
struct FileSystemModel {
    /// One byte of a file: a value (below 256), or the image byte holding it (`image`).
    typealias Cell = UInt64
    static func image(_ offset: UInt64) -> Cell { 1 << 63 | offset }

    var inodes: [UInt64: InodeItem] = [:]
    /// directory -> name -> entry.
    var entries: [UInt64: [[UInt8]: NamedEntry]] = [:]
    var xattrs: [UInt64: [[UInt8]: [UInt8]]] = [:]
    var targets: [UInt64: [UInt8]] = [:]
    var contents: [UInt64: [Cell]] = [:]
    var orphans: [UInt64: OrphanItem] = [:]
    /// Inodes dropped: the tree must hold no item of theirs.
    var dropped: Set<UInt64> = []
    /// RAM pieces longer than an inline extent are refused, as `FileSystemTree.apply`
    /// refuses them; a volume's commit places them in the image instead.
    var refusesLongMemoryPieces = true

    /// The links of `inode`, as its back references must list them.
    func links(of inode: UInt64) -> [Link] {
        entries.flatMap { directory, names in
            names.values.filter { $0.child == inode }.map { Link(directory: directory, index: $0.index, name: $0.name) }
        }
    }

    /// What `FileSystemTree.apply` must refuse, with the error it must throw; nil when
    /// the change is valid.
    func refusal(of change: JournalChange) -> FSError? {
        switch change {
        case .link(let directory, let entry):
            let names = entries[directory] ?? [:]
            return names[entry.name] != nil || names.values.contains { $0.index == entry.index } ? .exists : nil
        case .unlink(let directory, let entry):
            return entries[directory]?[entry.name] == entry ? nil : .notFound
        case .removeXattr(let inode, let name):
            return xattrs[inode]?[name] == nil ? .noAttribute : nil
        case .fileRange(_, _, _, let pieces):
            let long = pieces.contains {
                if case .inMemory(let bytes) = $0.extent { return bytes.count > ExtentItem.inlineLimit }
                return false
            }
            return long && refusesLongMemoryPieces ? .invalidArgument("") : nil
        default:
            return nil
        }
    }

    mutating func apply(_ change: JournalChange) {
        precondition(refusal(of: change) == nil)
        switch change {
        case .attributes(let inode, let item):
            inodes[inode] = item
        case .link(let directory, let entry):
            entries[directory, default: [:]][entry.name] = entry
        case .unlink(let directory, let entry):
            entries[directory]?[entry.name] = nil
        case .setXattr(let inode, let name, let value):
            xattrs[inode, default: [:]][name] = value
        case .removeXattr(let inode, let name):
            xattrs[inode]?[name] = nil
        case .symlinkTarget(let inode, let target):
            targets[inode] = target
        case .fileRange(let inode, let size, let range, let pieces):
            var cells = contents[inode] ?? []
            if cells.count < Int(range.upperBound) {
                cells += Array(repeating: 0, count: Int(range.upperBound) - cells.count)
            }
            for piece in pieces {
                let start = Int(piece.offset)
                switch piece.extent {
                case .mmapOffload(let offset, let length):
                    for i in 0..<Int(length) { cells[start + i] = Self.image(offset + UInt64(i)) }
                case .repeatingBytes(let value, let count):
                    for i in 0..<Int(count) { cells[start + i] = Cell(value) }
                case .inMemory(let bytes):
                    for (i, byte) in bytes.enumerated() { cells[start + i] = Cell(byte) }
                }
            }
            if cells.count > Int(size) {
                cells.removeLast(cells.count - Int(size))
            } else {
                cells += Array(repeating: 0, count: Int(size) - cells.count)
            }
            contents[inode] = cells
        case .orphan(let inode, let item):
            orphans[inode] = item
        case .drop(let inode):
            inodes[inode] = nil
            entries[inode] = nil
            xattrs[inode] = nil
            targets[inode] = nil
            contents[inode] = nil
            dropped.insert(inode)
        }
    }
}
