import Glibc
import OffloadCore
@testable import OffloadNamespace

/// The whole visible tree of a namespace at one instant: every path with its inode and
/// attributes, and every regular file's bytes, stored once per distinct content.
///
/// The power-cut test takes one after every operation of its workload (the truth, from
/// the live namespace) and one of each recovered image, and compares them: the tree
/// (names, inodes, attributes, sizes, xattrs, symlink targets) must equal one of the
/// states the workload passed through since the last sync; the bytes of each file are
/// checked one by one (`ContentHistory`).
struct TreeSnapshot: Equatable {
    /// Everything but a regular file's bytes.
    struct Node: Equatable, CustomStringConvertible {
        var inode: UInt64
        var kind: FileKind
        var permissions: UInt32
        var uid: UInt32
        var linkCount: UInt32
        var size: UInt64
        var modificationTime: Timestamp
        var symlinkTarget: [UInt8]
        var xattrs: [[UInt8]: [UInt8]]

        var description: String {
            "inode \(inode) \(kind) mode \(String(permissions, radix: 8)) links \(linkCount) size \(size) mtime \(modificationTime.seconds).\(modificationTime.nanoseconds) xattrs \(xattrs.count)"
        }
    }

    var nodes: [String: Node] = [:]
    /// Regular files' bytes by inode (hard links share one), and those of `open` files
    /// that have no name any more: a power cut can bring their names back, with bytes
    /// written through a descriptor after the unlink.
    var contents: [UInt64: [UInt8]] = [:]

    /// The tree of a format 1 namespace (`Namespace.regularFileData` gives the bytes).
    init(_ fs: Namespace, open: [InodeNumber] = []) throws(FSError) {
        try self.init(fs, open: open) { (number, size) throws(FSError) -> [UInt8]? in
            guard let file = fs.regularFileData(number) else { return nil }
            return try file.read(at: 0, count: Int(size ?? file.size))
        }
    }

    /// The tree of either format's namespace; `bytes(inode, size)` reads a regular file's
    /// bytes (all of them when the size is nil), or returns nil for another kind.
    init(_ fs: any FileSystemOperations, open: [InodeNumber] = [],
         bytes: (InodeNumber, UInt64?) throws(FSError) -> [UInt8]?) throws(FSError) {
        try visit(fs, .root, path: "/", bytes)
        for number in open where contents[number.rawValue] == nil {
            if let data = try bytes(number, nil) { contents[number.rawValue] = data }
        }
    }

    private mutating func visit(_ fs: any FileSystemOperations, _ number: InodeNumber, path: String,
                                _ bytes: (InodeNumber, UInt64?) throws(FSError) -> [UInt8]?) throws(FSError) {
        let a = try fs.getattr(inode: number)
        var target: [UInt8] = []
        switch a.kind {
        case .regular where contents[number.rawValue] == nil:
            contents[number.rawValue] = try bytes(number, a.size) ?? []
        case .symlink:
            target = try fs.readlink(inode: number)
        default:
            break
        }
        var xattrs: [[UInt8]: [UInt8]] = [:]
        for name in try fs.listxattr(inode: number) { xattrs[name] = try fs.getxattr(inode: number, name: name) }
        nodes[path] = Node(inode: number.rawValue, kind: a.kind, permissions: a.permissions, uid: a.uid, linkCount: a.linkCount,
                           size: a.size, modificationTime: a.modificationTime, symlinkTarget: target, xattrs: xattrs)
        guard a.kind == .directory else { return }
        let handle = try fs.opendir(inode: number)
        defer { fs.releasedir(inode: number, handle: handle) }
        var offset: UInt64 = 0
        while true {
            let page = try fs.readdir(inode: number, handle: handle, offset: offset, limit: 256)
            guard let last = page.last else { break }
            offset = last.nextOffset
            for entry in page where entry.name != [0x2E] && entry.name != [0x2E, 0x2E] {
                try visit(fs, entry.inode, path: path + (path == "/" ? "" : "/") + String(decoding: entry.name, as: UTF8.self), bytes)
            }
        }
    }

    /// The first difference between the trees (not the bytes), or nil.
    func treeDifference(from other: TreeSnapshot) -> String? {
        for path in Set(nodes.keys).union(other.nodes.keys).sorted() {
            switch (nodes[path], other.nodes[path]) {
            case (let a?, let b?) where a != b: return "\(path): \(a) vs \(b)"
            case (nil, _?): return "\(path) is missing here"
            case (_?, nil): return "\(path) should not exist"
            default: continue
            }
        }
        return nil
    }
}

/// Every value each byte of each file took over a span of the workload's states, to
/// judge a recovered file's bytes: each must be a value that byte held at some state of
/// the span, or zero where the span wrote it (or the file did not reach it in some
/// state): a write whose frame reached the disk before its data pages did reads as
/// zeros, since fresh and punched blocks do. Never another file's bytes, never bytes the
/// file never held.
struct ContentHistory {
    private var versions: [UInt64: [[UInt8]]] = [:]
    /// File ranges the span's operations wrote (data, clones), by inode.
    private let written: [UInt64: [Range<UInt64>]]

    init(_ states: ArraySlice<TreeSnapshot>, written: [UInt64: [Range<UInt64>]]) {
        self.written = written
        for state in states {
            for (inode, bytes) in state.contents {
                if let last = versions[inode]?.last, same(last, bytes) { continue }
                versions[inode, default: []].append(bytes)
            }
        }
        // A file that did not exist in some state of the span: all of it is new.
        for inode in versions.keys where states.contains(where: { $0.contents[inode] == nil }) {
            versions[inode]!.append([])
        }
    }

    /// The first byte of `bytes` (file `inode`) that no state of the span explains, or nil.
    func unexplainedByte(of inode: UInt64, _ bytes: [UInt8]) -> (offset: Int, value: UInt8, allowed: [UInt8])? {
        guard let list = versions[inode] else { return bytes.isEmpty ? nil : (0, bytes[0], []) }
        if list.contains(where: { same($0, bytes) }) { return nil }
        let ranges = written[inode] ?? []
        // Only bytes that differ from the newest version of the same length need the
        // per-byte search (most of a file usually matches one version).
        let reference = list.last { $0.count == bytes.count } ?? []
        let differing = bytes.withUnsafeBufferPointer { b in
            reference.withUnsafeBufferPointer { r in (0..<b.count).filter { $0 >= r.count || r[$0] != b[$0] } }
        }
        for offset in differing {
            let value = bytes[offset]
            var allowed: [UInt8] = []
            var zeroAllowed = ranges.contains { $0.contains(UInt64(offset)) }
            for version in list {
                if offset < version.count {
                    if !allowed.contains(version[offset]) { allowed.append(version[offset]) }
                } else {
                    zeroAllowed = true
                }
            }
            if zeroAllowed { allowed.append(0) }
            if !allowed.contains(value) { return (offset, value, allowed) }
        }
        return nil
    }
}

extension Namespace {
    /// A regular file's data straight from the namespace's table (one memcpy per extent
    /// to read: the read path gathers byte by byte, which a debug build makes slow, and
    /// the power-cut test snapshots the tree after every operation of its workload).
    func regularFileData(_ number: InodeNumber) -> OffloadedFile? {
        state.withLock { state -> OffloadedFile? in
            guard let node = try? state.table.inode(number), case .regular(let regular) = node.content else { return nil }
            return regular.data
        }
    }
}

/// Byte-array equality with one memcmp (Array's `==` goes element by element, slowly in
/// a debug build).
func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    guard !a.isEmpty else { return true }
    return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
}
