import OffloadCore
import OffloadNamespace
import OffloadSimulation
import SplitMix
#if canImport(Glibc)
import Glibc
#endif

/// Small real images, made in memory by a fixed workload: the fuzzer's seeds and the
/// starting point of the byte-flip tests. Every kind of record and extent appears:
/// directories, regular files with data in image blocks and in RAM pieces, a sparse file,
/// a clone sharing blocks, a hard link, a symlink, a FIFO, extended attributes, a file
/// unlinked while open; a checkpoint (format 1) or a commit (format 2) holds the first
/// half, the journal the rest.
public enum SampleImage {
    /// 8 MiB of capacity, so the image fits in a `FuzzInput` as it is.
    public static let capacityBytes: UInt64 = UInt64(FuzzInput.maximumBytes) - 2 * UInt64(BackingStore.blockSize)

    /// The image a daemon killed (`kill -9`) after the workload would leave (`clean:
    /// false`: a checkpoint, or a commit, and a journal tail to replay), or the one a
    /// clean unmount leaves (`clean: true`: nothing to replay), in `format`. `seed` varies
    /// names, sizes and contents.
    public static func make(seed: UInt64, clean: Bool = false, format: ImageFormat = .one) throws(FSError) -> [UInt8] {
        switch format {
        case .one: return try makeFormatOne(seed: seed, clean: clean)
        case .two: return try makeFormatTwo(seed: seed, clean: clean)
        }
    }

    private static func makeFormatOne(seed: UInt64, clean: Bool) throws(FSError) -> [UInt8] {
        let storage = MemoryImageStorage(maximumBytes: FuzzInput.maximumBytes)
        do {
            let fileSystem = try ImageFileSystem.open(storage: storage, capacityBytes: capacityBytes,
                                                      memoryLimiter: MemoryLimiter(limitBytes: 16 << 10))
            var work = Workload(fs: fileSystem.namespace, random: SplitMix64(seed: seed))
            try work.checkpointedHalf()
            // Opened read-write, so it has a journal.
            try fileSystem.journal!.checkpoint(fileSystem.namespace)
            try work.journaledHalf()
            if clean { try fileSystem.close() }
            // Otherwise dropped without close: what a killed daemon leaves.
        }
        return storage.bytes
    }

    /// Format 2: the first half committed, the rest in the journal. A killed daemon's
    /// image is the bytes as they stand after the last operation (its journal frames are
    /// in the mapping, as a `kill -9` leaves them in the page cache).
    private static func makeFormatTwo(seed: UInt64, clean: Bool) throws(FSError) -> [UInt8] {
        let storage = MemoryImageStorage(maximumBytes: FuzzInput.maximumBytes)
        let fileSystem = try VolumeFileSystem.create(storage: storage, capacity: .set(capacityBytes),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 16 << 10))
        var work = Workload(fs: fileSystem.operations, random: SplitMix64(seed: seed))
        try work.checkpointedHalf()
        _ = try fileSystem.namespace.commitIfChanged()
        try work.journaledHalf()
        if clean {
            try fileSystem.close(meter: nil)
            return storage.bytes
        }
        let bytes = storage.bytes
        // The bytes above are what a kill leaves; the volume is then closed as usual
        // (its unmount's commit is not in them).
        if let (inode, handle) = work.openHandle { fileSystem.operations.release(inode: inode, handle: handle) }
        try fileSystem.close(meter: nil)
        return bytes
    }

    /// The fuzzer's seeds, as `FuzzInput`s, in both formats: sample images left by a kill
    /// and by a clean unmount, one as raw bytes (checksums as written, not fixed), one cut
    /// short, and a filesystem that was never used.
    public static func seeds() throws(FSError) -> [(name: String, input: [UInt8])] {
        var seeds: [(name: String, input: [UInt8])] = []
        for format in ImageFormat.allCases {
            let tag = format == .one ? "" : "format2-"
            for seed: UInt64 in 1...3 {
                seeds.append(("\(tag)killed-\(seed)", FuzzInput.encode(try make(seed: seed, format: format))))
                seeds.append(("\(tag)unmounted-\(seed)", FuzzInput.encode(try make(seed: seed, clean: true, format: format))))
            }
            seeds.append(("\(tag)killed-raw", FuzzInput.encode(try make(seed: 4, format: format), flags: 0)))
            seeds.append(("\(tag)killed-short", FuzzInput.encode(try make(seed: 5, format: format),
                                                                   flags: FuzzInput.fixChecksums | FuzzInput.unalignedEnd)))
            seeds.append(("\(tag)empty", FuzzInput.encode(try empty(format: format))))
        }
        return seeds
    }

    /// A filesystem made and unmounted with nothing in it.
    private static func empty(format: ImageFormat) throws(FSError) -> [UInt8] {
        let storage = MemoryImageStorage(maximumBytes: FuzzInput.maximumBytes)
        switch format {
        case .one:
            try ImageFileSystem.open(storage: storage, capacityBytes: capacityBytes,
                                     memoryLimiter: MemoryLimiter(limitBytes: 0)).close()
        case .two:
            try VolumeFileSystem.create(storage: storage, capacity: .set(capacityBytes),
                                        memoryLimiter: MemoryLimiter(limitBytes: 0)).close(meter: nil)
        }
        return storage.bytes
    }

    private struct Workload {
        let fs: any FileSystemOperations
        var random: SplitMix64
        let user = RequestContext(uid: 1000, gid: 1000)
        var openHandle: (InodeNumber, FileHandle)?

        /// `count` bytes of file data: random at the start, zeros after. Recovery never
        /// reads file data, so zeros cost the fuzzer nothing and keep seeds small.
        mutating func bytes(_ count: Int) -> [UInt8] {
            (0..<count).map { $0 < 48 ? UInt8(truncatingIfNeeded: random.next()) : 0 }
        }

        mutating func size(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }

        @discardableResult
        func write(_ name: String, in parent: InodeNumber, _ data: [UInt8], at offset: UInt64 = 0) throws(FSError) -> InodeNumber {
            let existing = try? fs.lookup(parent: parent, name: FileName(name))
            let inode: InodeNumber, handle: FileHandle
            if let existing {
                inode = existing.inode
                handle = try fs.open(inode: inode, flags: O_RDWR)
            } else {
                (inode, handle) = try { () throws(FSError) in
                    let (attributes, handle) = try fs.create(parent: parent, name: FileName(name), mode: 0o100644,
                                                             flags: O_RDWR, context: user)
                    return (attributes.inode, handle)
                }()
            }
            defer { fs.release(inode: inode, handle: handle) }
            _ = try data.withBytes { (buffer) throws(FSError) in
                try fs.write(inode: inode, handle: handle, offset: offset, data: buffer)
            }
            return inode
        }

        /// What the checkpoint will hold.
        mutating func checkpointedHalf() throws(FSError) {
            let docs = try fs.mkdir(parent: .root, name: FileName("docs"), mode: 0o755, context: user).inode
            let deep = try fs.mkdir(parent: docs, name: FileName("deep"), mode: 0o700, context: user).inode
            try write("note.txt", in: docs, bytes(size(10...300)))            // a RAM piece
            let big = try write("big.bin", in: .root, bytes(size(9000...20000)))  // image blocks
            try write("sparse", in: deep, bytes(100), at: UInt64(size(20000...70000)))
            try fs.setxattr(inode: big, name: Array("user.origin".utf8), value: bytes(size(1...40)), mode: .createOrReplace)
            try fs.setxattr(inode: docs, name: Array("user.tag".utf8), value: Array("d".utf8), mode: .createOrReplace)
            _ = try fs.symlink(parent: docs, name: FileName("to-big"), target: Array("../big.bin".utf8), context: user)
            _ = try fs.link(inode: big, newParent: deep, newName: FileName("big-link"))
            _ = try fs.mknod(parent: .root, name: FileName("fifo"), mode: 0o010644, rdev: 0, context: user)
            // A clone: blocks shared by two files.
            let source = try fs.open(inode: big, flags: O_RDONLY)
            let (copy, copyHandle) = try fs.create(parent: .root, name: FileName("clone.bin"), mode: 0o100644,
                                                   flags: O_RDWR, context: user)
            _ = try fs.copyFileRange(from: big, sourceHandle: source, sourceOffset: 0, to: copy.inode,
                                     destinationHandle: copyHandle, destinationOffset: 0, length: 8192)
            fs.release(inode: big, handle: source)
            fs.release(inode: copy.inode, handle: copyHandle)
        }

        /// What only the journal will hold (replayed on top of the checkpoint).
        mutating func journaledHalf() throws(FSError) {
            let docs = try fs.lookup(parent: .root, name: FileName("docs")).inode
            let deep = try fs.lookup(parent: docs, name: FileName("deep")).inode
            try write("tail.log", in: .root, bytes(size(1...3000)))
            try write("big.bin", in: .root, bytes(size(1...5000)), at: UInt64(size(0...4000)))  // in place and past the clone
            try fs.rename(parent: docs, name: FileName("note.txt"), newParent: deep, newName: FileName("moved.txt"), flags: [])
            try fs.unlink(parent: .root, name: FileName("fifo"))
            let clone = try fs.lookup(parent: .root, name: FileName("clone.bin")).inode
            _ = try fs.setattr(inode: clone, changes: AttributeChanges(permissions: 0o600, size: UInt64(size(100...5000))),
                               context: user)
            try fs.setxattr(inode: deep, name: Array("user.more".utf8), value: bytes(size(0...100)), mode: .createOrReplace)
            try fs.removexattr(inode: docs, name: Array("user.tag".utf8))
            // Unlinked while open: the journal drops its name, the inode stays until close.
            let (orphan, handle) = try fs.create(parent: .root, name: FileName("open.tmp"), mode: 0o100644,
                                                 flags: O_RDWR, context: user)
            _ = try bytes(size(1...6000)).withBytes { (buffer) throws(FSError) in
                try fs.write(inode: orphan.inode, handle: handle, offset: 0, data: buffer)
            }
            try fs.unlink(parent: .root, name: FileName("open.tmp"))
            openHandle = (orphan.inode, handle)
        }
    }
}
