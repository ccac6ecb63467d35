import OffloadCore
@testable import OffloadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// Everything about a namespace's tree that persistence must keep, by path: what the
/// persistence and salvage tests compare before and after.
struct TreeNode: Equatable {
    var inode: InodeNumber
    var kind: FileKind
    var permissions: UInt32
    var uid: UInt32
    var linkCount: UInt32
    var size: UInt64
    var modificationTime: Timestamp
    var content: [UInt8]
    var xattrs: [[UInt8]: [UInt8]]
}

/// Walks `fs` from the root: every reachable name, with its node.
func dumpTree(_ fs: Namespace) throws -> [String: TreeNode] {
    var result: [String: TreeNode] = [:]
    func visit(_ number: InodeNumber, path: String) throws {
        let a = try fs.getattr(inode: number)
        var content: [UInt8] = []
        switch a.kind {
        case .regular:
            let handle = try fs.open(inode: number, flags: O_RDONLY)
            content = try fs.read(inode: number, handle: handle, offset: 0, count: Int(a.size))
            fs.release(inode: number, handle: handle)
        case .symlink:
            content = try fs.readlink(inode: number)
        default: break
        }
        var xattrs: [[UInt8]: [UInt8]] = [:]
        for name in try fs.listxattr(inode: number) { xattrs[name] = try fs.getxattr(inode: number, name: name) }
        result[path] = TreeNode(inode: number, kind: a.kind, permissions: a.permissions, uid: a.uid, linkCount: a.linkCount,
                                size: a.size, modificationTime: a.modificationTime, content: content, xattrs: xattrs)
        guard a.kind == .directory else { return }
        let handle = try fs.opendir(inode: number)
        defer { fs.releasedir(inode: number, handle: handle) }
        var offset: UInt64 = 0
        while true {
            let page = try fs.readdir(inode: number, handle: handle, offset: offset, limit: 256)
            guard let last = page.last else { break }
            offset = last.nextOffset
            for entry in page where entry.name != [0x2E] && entry.name != [0x2E, 0x2E] {
                try visit(entry.inode, path: path + (path == "/" ? "" : "/") + String(decoding: entry.name, as: UTF8.self))
            }
        }
    }
    try visit(.root, path: "/")
    return result
}
