import Glibc
import OffloadCore
@testable import OffloadNamespace
import SplitMix

/// Random operations for the power-cut test, on a handful of names in two directories:
/// creates, writes (RAM-held small ones, block-sized, large, appends, in-place
/// overwrites), truncates, punches, preallocations (fallocate mode 0 and KEEP_SIZE),
/// clones (copy_file_range), renames over files, unlinks of open files, links, symlinks,
/// mkdir/rmdir, chmod, xattrs, fsync and fsyncdir, and the maintenance of the image's
/// format (`PowerCutImage.maintenance`: format 1's sync and its checkpoints, format 2's
/// commits).
///
/// Every write's bytes come from a generator keyed by a counter, so no two writes put the
/// same bytes anywhere: a file showing another write's bytes is caught.
struct PowerCutWorkload {
    let image: PowerCutImage
    let fs: any FileSystemOperations
    var random: SplitMix64
    var open: [(inode: InodeNumber, handle: FileHandle)] = []
    /// The kernel references the workload holds (lookup, create, link, ...): forgetting
    /// them all lets an unlinked, closed inode die, as the kernel does.
    private var lookups: [InodeNumber: UInt64] = [:]
    private var writes: UInt64 = 0
    let context = RequestContext(uid: 0, gid: 0)

    /// What an operation was, for the checker and for failure reports.
    enum Kind: Equatable {
        /// fsync or fsyncdir that returned: everything before it is durable.
        case sync
        case other
    }

    init(image: PowerCutImage, seed: UInt64) {
        self.image = image
        fs = image.operations
        random = SplitMix64(seed: seed)
    }

    private mutating func pick(_ n: UInt64) -> UInt64 { random.next() % n }

    private mutating func name() -> FileName { try! FileName(Array("n\(pick(10))".utf8)) }

    private mutating func directory() -> InodeNumber {
        if pick(2) == 0, let d = try? fs.lookup(parent: .root, name: FileName(Array("d".utf8))) {
            lookups[d.inode, default: 0] += 1
            if d.kind == .directory { return d.inode }
        }
        return .root
    }

    /// `count` bytes no other write produces.
    private mutating func bytes(_ count: Int) -> [UInt8] {
        writes += 1
        var generator = SplitMix64(seed: writes &* 0x9E37_79B9 ^ random.next())
        var result = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            var word = generator.next() | 0x0101_0101_0101_0101  // never a zero byte
            for _ in 0..<8 where i < count {
                result[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        return result
    }

    private mutating func someOpenFile() -> (inode: InodeNumber, handle: FileHandle)? {
        open.isEmpty ? nil : open[Int(pick(UInt64(open.count)))]
    }

    /// The file range the last `step` wrote (data or a clone), if any.
    private(set) var written: (inode: UInt64, range: Range<UInt64>)?

    /// One random operation; returns what it was and a line describing it.
    mutating func step() throws -> (Kind, String) {
        written = nil
        // First close some handles and forget some inodes, as the kernel does (files
        // unlinked while open then die): at the start of an operation, so that the state
        // after the previous one still shows the bytes written through those handles.
        if open.count > 5 || pick(6) == 0, !open.isEmpty {
            let closed = open.remove(at: Int(pick(UInt64(open.count))))
            fs.release(inode: closed.inode, handle: closed.handle)
        }
        if pick(3) == 0, !lookups.isEmpty {
            // Sorted: a dictionary's order changes from run to run, the seed's must not.
            let inode = lookups.keys.sorted { $0.rawValue < $1.rawValue }[Int(pick(UInt64(lookups.count)))]
            fs.forget(inode: inode, lookups: lookups.removeValue(forKey: inode)!)
        }
        let parent = directory()
        let n = name()
        let choice = pick(24)
        var kind = Kind.other
        var line = ""
        do {
            switch choice {
            case 0, 1, 2:
                line = "create \(n)"
                let (a, h) = try fs.create(parent: parent, name: n, mode: 0o100644, flags: O_RDWR, context: context)
                lookups[a.inode, default: 0] += 1
                open.append((a.inode, h))
            case 3, 4, 5, 6, 7, 8:
                guard let file = someOpenFile() else { return (kind, "no file to write") }
                let size = try fs.getattr(inode: file.inode).size
                let length = [100, 1000, 4096, 20_000, 150_000][Int(pick(5))]
                let offset: UInt64
                switch pick(3) {
                case 0: offset = size  // append
                case 1: offset = size > 0 ? pick(size) : 0  // in place (overwrite or extend)
                default: offset = pick(200_000)  // anywhere, maybe leaving a hole
                }
                line = "write \(length) at \(offset) of inode \(file.inode.rawValue) (size \(size))"
                let data = bytes(length)
                written = (file.inode.rawValue, offset..<offset + UInt64(length))
                _ = try data.withUnsafeBytes { try fs.write(inode: file.inode, handle: file.handle, offset: offset, data: $0) }
            case 9:
                guard let file = someOpenFile() else { return (kind, "no file to truncate") }
                let size = pick(160_000)
                line = "truncate inode \(file.inode.rawValue) to \(size)"
                _ = try fs.setattr(inode: file.inode, changes: AttributeChanges(size: size), context: context)
            case 10:
                guard let file = someOpenFile() else { return (kind, "no file to punch or preallocate") }
                let offset = pick(150_000), length = 1 + pick(60_000)
                if pick(2) == 0 {
                    line = "punch \(length) at \(offset) of inode \(file.inode.rawValue)"
                    try fs.fallocate(inode: file.inode, handle: file.handle, offset: offset, length: length, mode: .punchHole)
                } else {
                    // Fresh blocks mapped unwritten: they read as zeros, whatever a crash left there.
                    let keepSize = pick(2) == 0
                    line = "preallocate \(length) at \(offset) of inode \(file.inode.rawValue)\(keepSize ? ", keeping the size" : "")"
                    try fs.fallocate(inode: file.inode, handle: file.handle, offset: offset, length: length,
                                     mode: .allocate(keepSize: keepSize))
                }
            case 11, 12:
                guard let a = someOpenFile(), let b = someOpenFile(), a.inode != b.inode else { return (kind, "no pair to clone") }
                let offset = pick(2) == 0 ? 0 : pick(40_000)
                line = "clone inode \(a.inode.rawValue) into inode \(b.inode.rawValue) at \(offset)"
                written = (b.inode.rawValue, offset..<offset + 200_000)
                _ = try fs.copyFileRange(from: a.inode, sourceHandle: a.handle, sourceOffset: 0, to: b.inode,
                                         destinationHandle: b.handle, destinationOffset: offset, length: 200_000)
            case 13, 14:
                let to = name(), toParent = directory()
                line = "rename \(n) over \(to)"
                try fs.rename(parent: parent, name: n, newParent: toParent, newName: to, flags: [])
            case 15:
                line = "unlink \(n)"
                try fs.unlink(parent: parent, name: n)
            case 16:
                line = "symlink \(n)"
                let made = try fs.symlink(parent: parent, name: n, target: Array("target-\(pick(1000))".utf8), context: context)
                lookups[made.inode, default: 0] += 1
            case 17:
                if pick(2) == 0 {
                    line = "mkdir d"
                    let made = try fs.mkdir(parent: .root, name: FileName(Array("d".utf8)), mode: 0o755, context: context)
                    lookups[made.inode, default: 0] += 1
                } else {
                    line = "rmdir d"
                    try fs.rmdir(parent: .root, name: FileName(Array("d".utf8)))
                }
            case 18:
                let target = try fs.lookup(parent: parent, name: n)
                lookups[target.inode, default: 0] += 1
                if pick(2) == 0 {
                    line = "setxattr \(n)"
                    try fs.setxattr(inode: target.inode, name: Array("user.k\(pick(3))".utf8), value: bytes(Int(pick(200))),
                                    mode: .createOrReplace)
                } else {
                    line = "chmod \(n)"
                    _ = try fs.setattr(inode: target.inode, changes: AttributeChanges(permissions: UInt32(pick(0o7777))),
                                       context: context)
                }
            case 19:
                let target = try fs.lookup(parent: parent, name: n)
                lookups[target.inode, default: 0] += 1
                let to = name()
                line = "link \(n) as \(to)"
                _ = try fs.link(inode: target.inode, newParent: directory(), newName: to)
                lookups[target.inode, default: 0] += 1
            case 20:
                guard let file = someOpenFile() else { return (kind, "no file to fsync") }
                line = "fsync inode \(file.inode.rawValue)"
                try fs.fsync(inode: file.inode, handle: file.handle, dataOnly: pick(2) == 0)
                kind = .sync
            case 21:
                line = "fsyncdir"
                let directory = directory()
                let handle = try fs.opendir(inode: directory)
                defer { fs.releasedir(inode: directory, handle: handle) }
                try fs.fsyncdir(inode: directory, handle: handle, dataOnly: false)
                kind = .sync
            default:
                // Format 1: 22 its maintenance sync, 23 a checkpoint; format 2: a commit.
                line = image.maintenanceName(checkpoint: choice != 22)
                line += try image.maintenance(checkpoint: choice != 22)
            }
        } catch let error as FSError {
            // Expected refusals of random operations (names that exist or not, a full image).
            switch error {
            case .notFound, .exists, .notEmpty, .isDirectory, .notDirectory, .notPermitted, .invalidArgument,
                 .noAttribute, .noSpace, .tooManyLinks, .symlinkLoop:
                return (.other, line + ": \(error)")
            default:
                throw error
            }
        }
        return (kind, line)
    }
}
