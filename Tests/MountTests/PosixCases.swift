import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Named POSIX cases in the style of go-fuse's `posixtest`: each takes a fresh, empty
/// directory on the mount and throws a `PosixFailure` describing what went wrong. They
/// use system calls directly (no Foundation file APIs) so every step is one syscall whose
/// errno can be checked.
struct PosixCase: Sendable {
    let name: String
    let run: @Sendable (_ directory: String) throws -> Void
}

struct PosixFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum PosixCases {
    static let all: [PosixCase] = [
        PosixCase(name: "AppendWrite", run: appendWrite),
        PosixCase(name: "TruncateOpenFile", run: truncateOpenFile),
        PosixCase(name: "FstatDeleted", run: fstatDeleted),
        PosixCase(name: "UnlinkedStillWritable", run: unlinkedStillWritable),
        PosixCase(name: "RenameOverOpenFile", run: renameOverOpenFile),
        PosixCase(name: "ExclusiveCreate", run: exclusiveCreate),
        PosixCase(name: "OpenTruncate", run: openTruncate),
        PosixCase(name: "WriteBeyond4GiB", run: writeBeyond4GiB),
        PosixCase(name: "ReaddirWhileRemoving", run: readdirWhileRemoving),
        PosixCase(name: "ParallelCreateInOneDirectory", run: parallelCreate),
        PosixCase(name: "SeekDataAndHole", run: seekDataAndHole),
        PosixCase(name: "MmapSharedWrite", run: mmapSharedWrite),
        PosixCase(name: "UtimensNowAndOmit", run: utimensNowAndOmit),
        PosixCase(name: "DirectoryErrors", run: directoryErrors),
        PosixCase(name: "NameTooLong", run: nameTooLong),
        PosixCase(name: "XattrFlagsAndErrors", run: xattrFlagsAndErrors),
        PosixCase(name: "LinkCountsAndInodes", run: linkCountsAndInodes),
        PosixCase(name: "CopyFileRangeThenDiverge", run: copyFileRangeThenDiverge),
        PosixCase(name: "FallocateModes", run: fallocateModes),
    ]

    // MARK: Cases

    static func appendWrite(_ dir: String) throws {
        let path = dir + "/append"
        let fd = try check(open(path, O_CREAT | O_WRONLY | O_APPEND, 0o644), "open O_APPEND")
        defer { close(fd) }
        try writeAll(fd, "abc")
        // pwrite on an O_APPEND descriptor still appends on Linux (see pwrite(2) BUGS).
        try check(pwrite(fd, "def", 3, 0), "pwrite O_APPEND")
        let other = try check(open(path, O_WRONLY | O_APPEND), "second open O_APPEND")
        try writeAll(other, "ghi")
        close(other)
        try writeAll(fd, "jkl")
        try expectEqual(try contents(path), "abcdefghijkl", "appended contents")
    }

    static func truncateOpenFile(_ dir: String) throws {
        let path = dir + "/truncated"
        let fd = try check(open(path, O_CREAT | O_RDWR, 0o644), "open")
        defer { close(fd) }
        try writeAll(fd, String(repeating: "x", count: 10_000))
        try check(ftruncate(fd, 10), "ftruncate shrink")
        try expectEqual(try size(fd), 10, "size after shrinking an open file")
        try expectEqual(try contents(path), String(repeating: "x", count: 10), "contents after shrink")
        try check(ftruncate(fd, 5000), "ftruncate grow")
        let grown = try readAll(path)
        try expectEqual(grown.count, 5000, "size after growing")
        try expect(grown[10...].allSatisfy { $0 == 0 }, "the grown tail reads as zeros")
        try check(truncate(path, 3), "truncate by path while open")
        try expectEqual(try size(fd), 3, "fstat sees truncate(2) by path")
    }

    static func fstatDeleted(_ dir: String) throws {
        let path = dir + "/deleted"
        let fd = try check(open(path, O_CREAT | O_RDWR, 0o600), "open")
        defer { close(fd) }
        try writeAll(fd, "still here")
        try check(unlink(path), "unlink")
        var status = stat()
        try check(fstat(fd, &status), "fstat of a deleted file")
        try expectEqual(status.st_nlink, 0, "link count of a deleted file")
        try expectEqual(status.st_size, 10, "size of a deleted file")
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = try check(pread(fd, &buffer, buffer.count, 0), "pread of a deleted file")
        try expectEqual(String(decoding: buffer.prefix(count), as: UTF8.self), "still here", "contents of a deleted file")
        try expect(access(path, F_OK) != 0 && errno == ENOENT, "the name is gone")
    }

    static func unlinkedStillWritable(_ dir: String) throws {
        let path = dir + "/scratch"
        let fd = try check(open(path, O_CREAT | O_RDWR | O_EXCL, 0o600), "open")
        defer { close(fd) }
        try check(unlink(path), "unlink")
        let block = [UInt8](repeating: 0x5A, count: 1 << 20)
        for index in 0..<4 { try check(pwrite(fd, block, block.count, off_t(index << 20)), "pwrite after unlink") }
        try check(fsync(fd), "fsync after unlink")
        try expectEqual(try size(fd), 4 << 20, "size of an unlinked file")
        var back = [UInt8](repeating: 0, count: block.count)
        try expectEqual(try check(pread(fd, &back, back.count, 3 << 20), "pread"), block.count, "read length")
        try expect(back == block, "an unlinked file keeps its data")
    }

    static func renameOverOpenFile(_ dir: String) throws {
        let target = dir + "/target", source = dir + "/source"
        try write(target, "old contents")
        let fd = try check(open(target, O_RDONLY), "open target")
        defer { close(fd) }
        try write(source, "new")
        try check(rename(source, target), "rename over an open file")
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = try check(pread(fd, &buffer, buffer.count, 0), "read from the replaced file's descriptor")
        try expectEqual(String(decoding: buffer.prefix(count), as: UTF8.self), "old contents",
                        "an open descriptor keeps the replaced file")
        try expectEqual(try contents(target), "new", "the name shows the new file")
        try expect(access(source, F_OK) != 0, "the source name is gone")
        var status = stat()
        try check(fstat(fd, &status), "fstat of the replaced file")
        try expectEqual(status.st_nlink, 0, "the replaced file has no links left")
    }

    static func exclusiveCreate(_ dir: String) throws {
        let path = dir + "/exclusive"
        let fd = try check(open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600), "first O_EXCL create")
        close(fd)
        let again = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o600)
        try expect(again < 0 && errno == EEXIST, "second O_EXCL create must fail with EEXIST (got fd \(again), errno \(errno))")
        try check(symlink("exclusive", dir + "/link"), "symlink")
        let throughLink = open(dir + "/link", O_CREAT | O_EXCL | O_WRONLY, 0o600)
        try expect(throughLink < 0 && errno == EEXIST, "O_EXCL on a symlink must fail with EEXIST")
    }

    static func openTruncate(_ dir: String) throws {
        let path = dir + "/otrunc"
        try write(path, String(repeating: "z", count: 100_000))
        let fd = try check(open(path, O_WRONLY | O_TRUNC), "open O_TRUNC")
        try expectEqual(try size(fd), 0, "size right after O_TRUNC")
        try writeAll(fd, "short")
        close(fd)
        try expectEqual(try contents(path), "short", "contents after O_TRUNC and a write")
        let readOnly = try check(open(path, O_RDONLY | O_TRUNC), "open O_RDONLY|O_TRUNC")
        close(readOnly)
    }

    static func writeBeyond4GiB(_ dir: String) throws {
        let path = dir + "/huge"
        let fd = try check(open(path, O_CREAT | O_RDWR, 0o644), "open")
        defer { close(fd) }
        let offsets: [off_t] = [(1 << 32) - 3, (5 << 30) + 12345]
        for offset in offsets {
            try expectEqual(try check(pwrite(fd, "edge", 4, offset), "pwrite at \(offset)"), 4, "written")
        }
        try check(fsync(fd), "fsync")
        try expectEqual(try size(fd), Int(offsets[1]) + 4, "size after the far write")
        for offset in offsets {
            var buffer = [UInt8](repeating: 0, count: 4)
            try expectEqual(try check(pread(fd, &buffer, 4, offset), "pread at \(offset)"), 4, "read length")
            try expectEqual(String(decoding: buffer, as: UTF8.self), "edge", "data at \(offset)")
        }
        var zeros = [UInt8](repeating: 1, count: 4096)
        try check(pread(fd, &zeros, zeros.count, 1 << 31), "pread in the hole")
        try expect(zeros.allSatisfy { $0 == 0 }, "the hole reads as zeros")
        var status = stat()
        try check(fstat(fd, &status), "fstat")
        try expect(status.st_blocks <= 64, "a 5 GiB sparse file must occupy only its written blocks (st_blocks \(status.st_blocks))")
    }

    static func readdirWhileRemoving(_ dir: String) throws {
        let count = 400
        for index in 0..<count { try write(dir + "/entry-\(index)", "") }
        guard let stream = opendir(dir) else { throw PosixFailure("opendir: \(String(cString: strerror(errno)))") }
        defer { closedir(stream) }
        var seen: [String] = []
        var removed = false
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            seen.append(name)
            if !removed && seen.count == 50 {
                // Remove every even entry (seen or not) in the middle of the listing.
                for index in stride(from: 0, to: count, by: 2) { try check(unlink(dir + "/entry-\(index)"), "unlink") }
                removed = true
            }
        }
        try expectEqual(Set(seen).count, seen.count, "no name may be listed twice")
        let odd = Set(stride(from: 1, to: count, by: 2).map { "entry-\($0)" })
        try expect(odd.isSubset(of: Set(seen)), "entries that stayed must all be listed; missing \(odd.subtracting(seen).sorted().prefix(5))")
        let names = try listing(dir)
        try expectEqual(names, odd, "the directory after removal")
    }

    static func parallelCreate(_ dir: String) throws {
        let threads = 8, perThread = 100
        let failures = FailureList()
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for index in 0..<perThread {
                let path = dir + "/t\(thread)-f\(index)"
                let fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o644)
                guard fd >= 0 else { failures.add("create \(path): \(String(cString: strerror(errno)))"); return }
                let text = "\(thread):\(index)"
                if write(fd, text, text.utf8.count) != text.utf8.count { failures.add("write \(path)") }
                close(fd)
            }
        }
        if let first = failures.first { throw PosixFailure(first) }
        let names = try listing(dir)
        try expectEqual(names.count, threads * perThread, "files in the directory")
        for thread in 0..<threads {
            for index in stride(from: 0, to: perThread, by: 17) {
                try expectEqual(try contents(dir + "/t\(thread)-f\(index)"), "\(thread):\(index)", "contents")
            }
        }
        var status = stat()
        try check(stat(dir, &status), "stat dir")
        try expectEqual(status.st_nlink, 2, "a directory with only files has 2 links")
    }

    /// The mount runs with the writeback cache, under which the kernel answers SEEK_DATA
    /// and SEEK_HOLE itself (see `Handlers.lseek`): all data up to the size. What must
    /// hold is that data is never reported as a hole, written data still in the page
    /// cache included, and that SEEK_DATA at EOF is ENXIO.
    static func seekDataAndHole(_ dir: String) throws {
        let seekData: Int32 = 3, seekHole: Int32 = 4  // SEEK_DATA, SEEK_HOLE (Linux ABI)
        let path = dir + "/holes"
        let fd = try check(open(path, O_CREAT | O_RDWR, 0o644), "open")
        defer { close(fd) }
        let block = [UInt8](repeating: 7, count: 100_000)
        try check(pwrite(fd, block, block.count, 0), "pwrite at 0 (not flushed)")
        try expectEqual(lseek(fd, 0, seekData), 0, "SEEK_DATA from 0 before any flush")
        try expectEqual(lseek(fd, 0, seekHole), 100_000, "SEEK_HOLE must not find a hole in unflushed data")
        try check(pwrite(fd, block, 4096, 1 << 20), "pwrite at 1 MiB")
        try check(ftruncate(fd, 2 << 20), "extend to 2 MiB")
        try check(fsync(fd), "fsync")
        let hole = lseek(fd, 0, seekHole)
        try expect(hole >= 100_000 && hole <= 2 << 20, "SEEK_HOLE after the data, got \(hole)")
        let data = lseek(fd, 200_000, seekData)
        try expect(data >= 200_000 && data <= 1 << 20, "SEEK_DATA never skips the block at 1 MiB, got \(data)")
        let past = lseek(fd, 2 << 20, seekData)
        try expect(past < 0 && errno == ENXIO, "SEEK_DATA at EOF must be ENXIO")
    }

    static func mmapSharedWrite(_ dir: String) throws {
        let path = dir + "/mapped"
        let fd = try check(open(path, O_CREAT | O_RDWR, 0o644), "open")
        defer { close(fd) }
        let length = 64 * 1024
        try check(ftruncate(fd, off_t(length)), "ftruncate")
        guard let map = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw PosixFailure("mmap: \(String(cString: strerror(errno)))")
        }
        let bytes = map.assumingMemoryBound(to: UInt8.self)
        for index in 0..<length { bytes[index] = UInt8(truncatingIfNeeded: index * 7) }
        try check(msync(map, length, MS_SYNC), "msync")
        munmap(map, length)
        let data = try readAll(path)
        try expectEqual(data.count, length, "size")
        try expect(data.enumerated().allSatisfy { $0.element == UInt8(truncatingIfNeeded: $0.offset * 7) },
                   "bytes written through a shared mapping are read back")
    }

    static func utimensNowAndOmit(_ dir: String) throws {
        let path = dir + "/times"
        try write(path, "t")
        let utimeNow = (1 << 30) - 1, utimeOmit = (1 << 30) - 2
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_200_000_000, tv_nsec: 5)]
        try check(utimensat(AT_FDCWD, path, &times, 0), "utimensat explicit")
        var status = stat()
        try check(stat(path, &status), "stat")
        try expectEqual(status.st_atim.tv_sec, 1_000_000_000, "atime seconds")
        try expectEqual(status.st_atim.tv_nsec, 123_456_789, "atime nanoseconds")
        try expectEqual(status.st_mtim.tv_sec, 1_200_000_000, "mtime seconds")
        try expectEqual(status.st_mtim.tv_nsec, 5, "mtime nanoseconds")
        var before = timespec()
        clock_gettime(CLOCK_REALTIME, &before)
        times = [timespec(tv_sec: 0, tv_nsec: utimeOmit), timespec(tv_sec: 0, tv_nsec: utimeNow)]
        try check(utimensat(AT_FDCWD, path, &times, 0), "utimensat OMIT/NOW")
        try check(stat(path, &status), "stat")
        try expectEqual(status.st_atim.tv_sec, 1_000_000_000, "UTIME_OMIT keeps atime")
        try expect(status.st_mtim.tv_sec >= before.tv_sec - 1, "UTIME_NOW sets mtime to now (\(status.st_mtim.tv_sec) vs \(before.tv_sec))")
    }

    static func directoryErrors(_ dir: String) throws {
        try check(mkdir(dir + "/full", 0o755), "mkdir")
        try write(dir + "/full/file", "x")
        try expectErrno(rmdir(dir + "/full"), ENOTEMPTY, "rmdir of a non-empty directory")
        try expectErrno(rmdir(dir + "/full/file"), ENOTDIR, "rmdir of a file")
        try expectErrno(unlink(dir + "/full"), EISDIR, "unlink of a directory")
        try expectErrno(mkdir(dir + "/full", 0o755), EEXIST, "mkdir of an existing name")
        try expectErrno(rename(dir + "/full", dir + "/full/inside"), EINVAL, "moving a directory into itself")
        try check(mkdir(dir + "/empty", 0o755), "mkdir")
        try check(rename(dir + "/empty", dir + "/full/file2"), "rename dir to a new name")
        try expectErrno(open(dir + "/missing/file", O_CREAT | O_WRONLY, 0o644), ENOENT, "create in a missing directory")
        try expectErrno(open(dir + "/full/file/x", O_RDONLY), ENOTDIR, "a file used as a directory")
    }

    static func nameTooLong(_ dir: String) throws {
        let longest = String(repeating: "n", count: 255)
        try write(dir + "/" + longest, "ok")
        try expectErrno(open(dir + "/" + longest + "n", O_CREAT | O_WRONLY, 0o644), ENAMETOOLONG, "a 256-byte name")
    }

    static func xattrFlagsAndErrors(_ dir: String) throws {
        let path = dir + "/attrs"
        try write(path, "")
        let xattrCreate: Int32 = 1, xattrReplace: Int32 = 2
        try check(setxattr(path, "user.k", "v1", 2, xattrCreate), "XATTR_CREATE")
        try expectErrno(setxattr(path, "user.k", "v2", 2, xattrCreate), EEXIST, "XATTR_CREATE of an existing name")
        try expectErrno(setxattr(path, "user.none", "v", 1, xattrReplace), ENODATA, "XATTR_REPLACE of a missing name")
        try check(setxattr(path, "user.k", "value-2", 7, xattrReplace), "XATTR_REPLACE")
        try expectEqual(getxattr(path, "user.k", nil, 0), 7, "getxattr size query")
        var value = [UInt8](repeating: 0, count: 16)
        let length = try check(getxattr(path, "user.k", &value, value.count), "getxattr")
        try expectEqual(String(decoding: value.prefix(length), as: UTF8.self), "value-2", "getxattr value")
        var small = [UInt8](repeating: 0, count: 3)
        try expectErrno(getxattr(path, "user.k", &small, small.count), ERANGE, "getxattr into a small buffer")
        try expectErrno(getxattr(path, "user.none", nil, 0), ENODATA, "getxattr of a missing name")
        var names = [CChar](repeating: 0, count: 256)
        let listed = try check(listxattr(path, &names, names.count), "listxattr")
        try expectEqual(listed, 7, "listxattr returns \"user.k\\0\"")
        var tiny = [CChar](repeating: 0, count: 2)
        try expectErrno(listxattr(path, &tiny, tiny.count), ERANGE, "listxattr into a small buffer")
        try check(removexattr(path, "user.k"), "removexattr")
        try expectErrno(removexattr(path, "user.k"), ENODATA, "removexattr of a missing name")
    }

    static func linkCountsAndInodes(_ dir: String) throws {
        try write(dir + "/a", "shared")
        try check(link(dir + "/a", dir + "/b"), "link")
        var a = stat(), b = stat()
        try check(stat(dir + "/a", &a), "stat a")
        try check(stat(dir + "/b", &b), "stat b")
        try expectEqual(a.st_ino, b.st_ino, "hard links share an inode")
        try expectEqual(a.st_nlink, 2, "link count")
        try check(mkdir(dir + "/sub", 0o755), "mkdir")
        var parent = stat()
        try check(stat(dir, &parent), "stat parent")
        try expectEqual(parent.st_nlink, 3, "a subdirectory adds a link to its parent")
        try check(unlink(dir + "/a"), "unlink")
        try check(stat(dir + "/b", &b), "stat b")
        try expectEqual(b.st_nlink, 1, "link count after unlink")
        try expectEqual(try contents(dir + "/b"), "shared", "the other name keeps the data")
    }
}

extension PosixCases {
    static func copyFileRangeThenDiverge(_ dir: String) throws {
        let size = 1 << 20
        let source = try check(open(dir + "/source", O_CREAT | O_RDWR, 0o644), "open source")
        defer { close(source) }
        let destination = try check(open(dir + "/destination", O_CREAT | O_RDWR, 0o644), "open destination")
        defer { close(destination) }
        let original = [UInt8](repeating: 0x41, count: size)
        try check(pwrite(source, original, size, 0), "pwrite source")
        try check(fsync(source), "fsync source")
        try expectEqual(try check(copyFileRange(source, 0, destination, 0, size), "copy_file_range"), size,
                        "bytes copied")
        // Past the source's end only what exists is copied.
        try expectEqual(try check(copyFileRange(source, Int64(size - 100), destination, Int64(size), size),
                                  "copy_file_range at EOF"), 100, "bytes copied from the tail")
        // Both files change independently afterwards, even where they shared storage.
        try check(pwrite(source, [UInt8](repeating: 0x42, count: 4096), 4096, 0), "overwrite source")
        try check(pwrite(destination, [UInt8](repeating: 0x43, count: 4096), 4096, 8192), "overwrite destination")
        try check(fsync(source), "fsync")
        try check(fsync(destination), "fsync")
        let sourceBytes = try readAll(dir + "/source"), destinationBytes = try readAll(dir + "/destination")
        var expectedSource = original
        expectedSource.replaceSubrange(0..<4096, with: repeatElement(0x42, count: 4096))
        var expectedDestination = original + [UInt8](repeating: 0x41, count: 100)
        expectedDestination.replaceSubrange(8192..<12288, with: repeatElement(0x43, count: 4096))
        try expect(sourceBytes == expectedSource, "the source keeps only its own write")
        try expect(destinationBytes == expectedDestination, "the copy keeps only its own write")
    }

    static func fallocateModes(_ dir: String) throws {
        let keepSize: Int32 = 0x01, punchHole: Int32 = 0x02, collapseRange: Int32 = 0x08, zeroRange: Int32 = 0x10
        let fd = try check(open(dir + "/space", O_CREAT | O_RDWR, 0o644), "open")
        defer { close(fd) }
        try check(fallocate(fd, 0, 0, 64 * 1024), "fallocate mode 0")
        try expectEqual(try size(fd), 64 * 1024, "mode 0 extends the file")
        try check(fallocate(fd, keepSize, 64 * 1024, 64 * 1024), "fallocate KEEP_SIZE")
        try expectEqual(try size(fd), 64 * 1024, "KEEP_SIZE keeps the size")
        try check(pwrite(fd, [UInt8](repeating: 9, count: 64 * 1024), 64 * 1024, 0), "fill")
        try check(fallocate(fd, punchHole | keepSize, 4096, 8192), "PUNCH_HOLE|KEEP_SIZE")
        try check(fallocate(fd, zeroRange, 32 * 1024, 4096), "ZERO_RANGE")
        try check(fallocate(fd, zeroRange | keepSize, 60 * 1024, 16 * 1024), "ZERO_RANGE|KEEP_SIZE past EOF")
        try expectEqual(try size(fd), 64 * 1024, "ZERO_RANGE|KEEP_SIZE keeps the size")
        let bytes = try readAll(dir + "/space")
        for (index, byte) in bytes.enumerated() {
            let zeroed = (4096..<12288).contains(index) || (32 * 1024..<36 * 1024).contains(index) || index >= 60 * 1024
            if byte != (zeroed ? 0 : 9) { throw PosixFailure("byte \(index) is \(byte) after punch/zero") }
        }
        try check(fallocate(fd, zeroRange, 64 * 1024, 4096), "ZERO_RANGE past EOF")
        try expectEqual(try size(fd), 68 * 1024, "ZERO_RANGE without KEEP_SIZE extends")
        try expectErrno(fallocate(fd, collapseRange, 0, 4096), EOPNOTSUPP, "COLLAPSE_RANGE is not supported")
        try expectErrno(fallocate(fd, punchHole, 0, 4096), EOPNOTSUPP, "PUNCH_HOLE without KEEP_SIZE")
    }
}

// MARK: Helpers

/// Collects failures from worker threads.
final class FailureList: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ item: String) { lock.withLock { items.append(item) } }
    var first: String? { lock.withLock { items.first } }
}

@discardableResult
func check<T: BinaryInteger>(_ result: T, _ what: String) throws -> T {
    if result < 0 { throw PosixFailure("\(what): \(String(cString: strerror(errno)))") }
    return result
}

func expect(_ condition: Bool, _ what: String) throws {
    if !condition { throw PosixFailure(what) }
}

func expectEqual<T: Equatable>(_ actual: T, _ expected: T, _ what: String) throws {
    if actual != expected { throw PosixFailure("\(what): expected \(expected), got \(actual)") }
}

func expectErrno<T: BinaryInteger>(_ result: T, _ expected: Int32, _ what: String) throws {
    let error = errno
    if result >= 0 { throw PosixFailure("\(what): succeeded, expected \(String(cString: strerror(expected)))") }
    if error != expected {
        throw PosixFailure("\(what): expected \(String(cString: strerror(expected))), got \(String(cString: strerror(error)))")
    }
}

func writeAll(_ fd: Int32, _ text: String) throws {
    let bytes = Array(text.utf8)
    try expectEqual(try check(write(fd, bytes, bytes.count), "write"), bytes.count, "bytes written")
}

func write(_ path: String, _ text: String) throws {
    let fd = try check(open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644), "create \(path)")
    defer { close(fd) }
    try writeAll(fd, text)
}

func readAll(_ path: String) throws -> [UInt8] {
    let fd = try check(open(path, O_RDONLY), "open \(path)")
    defer { close(fd) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = try check(read(fd, &buffer, buffer.count), "read \(path)")
        if count == 0 { return result }
        result += buffer.prefix(count)
    }
}

func contents(_ path: String) throws -> String {
    String(decoding: try readAll(path), as: UTF8.self)
}

func size(_ fd: Int32) throws -> Int {
    var status = stat()
    try check(fstat(fd, &status), "fstat")
    return status.st_size
}

/// Names in `dir`, without "." and "..".
func listing(_ dir: String) throws -> Set<String> {
    guard let stream = opendir(dir) else { throw PosixFailure("opendir \(dir): \(String(cString: strerror(errno)))") }
    defer { closedir(stream) }
    var names = Set<String>()
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.insert(name) }
    }
    return names
}
