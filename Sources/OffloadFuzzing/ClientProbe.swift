import OffloadCore
import OffloadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// What a user does with a mounted image, through the operations the FUSE bridge calls:
/// both formats' hostile-image checks run it on every image that opens.
enum ClientProbe {
    /// A request that failed: which, on what, and its error.
    struct Failure: Error, CustomStringConvertible {
        var request: String
        var error: FSError
        var description: String { "\(request): \(error)" }
    }

    /// `body`'s error, named as `request` (the inode or name it was about).
    static func named<T>(_ request: @autoclosure () -> String, _ body: () throws(FSError) -> T) throws(Failure) -> T {
        do {
            return try body()
        } catch {
            throw Failure(request: request(), error: error)
        }
    }

    /// Bounds on `walk`, so that one input stays fast whatever its tree holds.
    static let maximumDirectories = 64
    static let maximumEntries = 2048
    static let readBytes = 64 << 10

    /// Lists every directory reachable from the root (breadth first, each once), looks
    /// up every name, reads each file's first `readBytes`, each symlink's target and
    /// each inode's extended attributes, then forgets what it looked up, as the kernel
    /// would. The first error ends it and is thrown: on a damaged image an error is a
    /// fine answer (the caller decides), never a trap.
    static func walk(_ fs: any FileSystemOperations) throws(Failure) {
        var directories: [InodeNumber] = [.root]
        var seen: Set<InodeNumber> = [.root]
        var looked: [InodeNumber: UInt64] = [:]
        defer { for (inode, count) in looked { fs.forget(inode: inode, lookups: count) } }
        var entries = 0
        var next = 0
        while next < directories.count && next < maximumDirectories && entries < maximumEntries {
            let directory = directories[next]
            next += 1
            try attributesAndXattrs(of: directory, fs)
            let handle = try named("opendir \(directory)") { () throws(FSError) in try fs.opendir(inode: directory) }
            defer { fs.releasedir(inode: directory, handle: handle) }
            var offset: UInt64 = 0
            listing: while entries < maximumEntries {
                let batch = try named("readdir \(directory) from \(offset)") { () throws(FSError) in
                    try fs.readdir(inode: directory, handle: handle, offset: offset, limit: 128)
                }
                guard let last = batch.last, last.nextOffset != offset else { break listing }
                offset = last.nextOffset
                for entry in batch where entry.name != Array(".".utf8) && entry.name != Array("..".utf8) {
                    entries += 1
                    let what = "\(directory)/\(String(decoding: entry.name, as: UTF8.self))"
                    let attributes = try named("lookup \(what)") { () throws(FSError) in
                        try fs.lookup(parent: directory, name: FileName(entry.name))
                    }
                    looked[attributes.inode, default: 0] += 1
                    try attributesAndXattrs(of: attributes.inode, fs)
                    switch attributes.kind {
                    case .directory:
                        if seen.insert(attributes.inode).inserted { directories.append(attributes.inode) }
                    case .regular:
                        let file = try named("open \(what)") { () throws(FSError) in
                            try fs.open(inode: attributes.inode, flags: O_RDONLY)
                        }
                        defer { fs.release(inode: attributes.inode, handle: file) }
                        _ = try named("read \(what)") { () throws(FSError) in
                            try fs.read(inode: attributes.inode, handle: file, offset: 0, count: readBytes)
                        }
                    case .symlink:
                        _ = try named("readlink \(what)") { () throws(FSError) in try fs.readlink(inode: attributes.inode) }
                    default:
                        break
                    }
                }
            }
            // readdirplus too: it reads every entry's attributes in one request.
            let plus = try named("opendir \(directory)") { () throws(FSError) in try fs.opendir(inode: directory) }
            defer { fs.releasedir(inode: directory, handle: plus) }
            let listed = try named("readdirplus \(directory)") { () throws(FSError) in
                try fs.readdirplus(inode: directory, handle: plus, offset: 0, limit: 64)
            }
            for (entry, attributes) in listed where attributes != nil {
                looked[entry.inode, default: 0] += 1
            }
        }
        _ = fs.statfs()
    }

    private static func attributesAndXattrs(of inode: InodeNumber, _ fs: any FileSystemOperations) throws(Failure) {
        _ = try named("getattr \(inode)") { () throws(FSError) in try fs.getattr(inode: inode) }
        for name in try named("listxattr \(inode)", { () throws(FSError) in try fs.listxattr(inode: inode) }) {
            do {
                _ = try fs.getxattr(inode: inode, name: name)
            } catch .noAttribute {
                // Listed names of a POSIX ACL the image's mode bits made redundant.
            } catch {
                throw Failure(request: "getxattr \(inode) \(String(decoding: name, as: UTF8.self))", error: error)
            }
        }
    }

    /// What a user does first on a mounted image: create, write and read back a file,
    /// make a directory, move the file into it, remove both. Names the image already has
    /// are fine (`.exists`); any other error is thrown as a `Failure`. A file written that
    /// reads back other bytes is a `Violation`.
    static func changes(_ fs: any FileSystemOperations, after what: String) throws {
        let context = RequestContext.root
        let name = try FileName("fuzz-probe"), directoryName = try FileName("fuzz-probe.d")
        let data = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        do {
            let (file, handle) = try named("create /fuzz-probe") { () throws(FSError) in
                try fs.create(parent: .root, name: name, mode: 0o100644, flags: O_RDWR, context: context)
            }
            _ = try named("write /fuzz-probe") { () throws(FSError) in
                try data.withBytes { (buffer) throws(FSError) in
                    try fs.write(inode: file.inode, handle: handle, offset: 0, data: buffer)
                }
            }
            let back = try named("read /fuzz-probe") { () throws(FSError) in
                try fs.read(inode: file.inode, handle: handle, offset: 0, count: data.count)
            }
            fs.release(inode: file.inode, handle: handle)
            fs.forget(inode: file.inode, lookups: 1)
            guard back == data else {
                throw HostileImageCheck.Violation(description: "after \(what), a file written reads back wrong")
            }
            let directory = try named("mkdir /fuzz-probe.d") { () throws(FSError) in
                try fs.mkdir(parent: .root, name: directoryName, mode: 0o755, context: context)
            }
            fs.forget(inode: directory.inode, lookups: 1)
            try named("rename /fuzz-probe") { () throws(FSError) in
                try fs.rename(parent: .root, name: name, newParent: directory.inode, newName: name, flags: [])
            }
            try named("unlink /fuzz-probe.d/fuzz-probe") { () throws(FSError) in
                try fs.unlink(parent: directory.inode, name: name)
            }
            try named("rmdir /fuzz-probe.d") { () throws(FSError) in try fs.rmdir(parent: .root, name: directoryName) }
        } catch let failure as Failure {
            // The image has one of the names already.
            guard case .exists = failure.error else { throw failure }
        }
    }
}
