import XCTest
import Dispatch
import OffloadCore
@testable import OffloadNamespace

/// Many threads at once on one directory: the namespace must stay consistent and every
/// byte written must read back.
final class ConcurrencyTests: XCTestCase {
    func testManyThreadsCreateWriteReadAndRemoveInOneDirectory() throws {
        let f = try Fixture(capacityBytes: 256 << 20, memoryLimitBytes: 1 << 20)
        let fs = f.fs
        let dir = try f.mkdir("shared").inode
        let threads = 8
        let filesPerThread = 150
        let failures = PthreadMutex<[String]>([])

        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            do {
                for i in 0..<filesPerThread {
                    let name = try FileName("t\(thread)-\(i)")
                    let (attributes, handle) = try fs.create(parent: dir, name: name, mode: 0o100644,
                                                             flags: O_RDWR | O_CREAT | O_EXCL,
                                                             context: .user)
                    let size = 1000 + (thread * 997 + i * 131) % 9000
                    let bytes = pattern(size, seed: thread + i)
                    _ = try bytes.withUnsafeBytes { buffer in
                        try fs.write(inode: attributes.inode, handle: handle, offset: 0, data: buffer)
                    }
                    let back = try fs.read(inode: attributes.inode, handle: handle, offset: 0, count: size + 10)
                    if back != bytes { failures.withLock { $0.append("\(name): wrong bytes") } }
                    fs.release(inode: attributes.inode, handle: handle)
                    _ = try fs.lookup(parent: dir, name: name)
                    if i % 3 == 0 { _ = try fs.mkdir(parent: dir, name: FileName("d\(thread)-\(i)"), mode: 0o755, context: .user) }
                    if i % 2 == 0 {
                        try fs.unlink(parent: dir, name: name)
                        fs.forget(inode: attributes.inode, lookups: 2)
                    }
                    if i % 10 == 0 {
                        let listing = try fs.opendir(inode: dir)
                        _ = try fs.readdirplus(inode: dir, handle: listing, offset: 0, limit: 50).forEach { entry in
                            if entry.attributes != nil { fs.forget(inode: entry.entry.inode, lookups: 1) }
                        }
                        fs.releasedir(inode: dir, handle: listing)
                    }
                }
            } catch {
                failures.withLock { $0.append("thread \(thread): \(error)") }
            }
        }

        XCTAssertEqual(failures.withLock { $0 }, [])
        let names = try f.names(dir)
        let expectedFiles = (0..<threads).flatMap { t in (0..<filesPerThread).filter { $0 % 2 != 0 }.map { "t\(t)-\($0)" } }
        let expectedDirs = (0..<threads).flatMap { t in (0..<filesPerThread).filter { $0 % 3 == 0 }.map { "d\(t)-\($0)" } }
        XCTAssertEqual(names, (expectedFiles + expectedDirs).sorted())
        XCTAssertEqual(try f.fs.getattr(inode: dir).linkCount, UInt32(2 + expectedDirs.count))
        // Each surviving file holds 3 kernel references after this: create, lookup, lookup.
        let survivorInodes = try expectedFiles.map { name in
            let attributes = try f.lookup(name, in: dir)
            XCTAssertEqual(attributes.linkCount, 1)
            return attributes.inode
        }
        XCTAssertGreaterThan(f.liveBytes + UInt64(f.limiter.usedBytes), 0)

        // Remove everything from many threads; all storage must come back.
        let survivors = expectedFiles
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            do {
                for (index, name) in survivors.enumerated() where index % threads == thread {
                    try fs.unlink(parent: dir, name: FileName(name))
                }
                for (index, name) in expectedDirs.enumerated() where index % threads == thread {
                    let removed = try fs.lookup(parent: dir, name: FileName(name)).inode
                    try fs.rmdir(parent: dir, name: FileName(name))
                    fs.forget(inode: removed, lookups: 2)  // mkdir's reference and this lookup's
                }
            } catch {
                failures.withLock { $0.append("removal on thread \(thread): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        XCTAssertEqual(try f.names(dir), [])
        XCTAssertEqual(try f.fs.getattr(inode: dir).linkCount, 2)
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for (index, inode) in survivorInodes.enumerated() where index % threads == thread {
                fs.forget(inode: inode, lookups: 3)
            }
        }
        XCTAssertEqual(fs.state.withLock { $0.handles.count }, 0, "no handle leaked")
        XCTAssertEqual(fs.state.withLock { $0.table.count }, 2, "only the root and the shared directory remain")
        XCTAssertEqual(f.liveBytes, 0, "every unlinked and forgotten file gave its blocks back")
        XCTAssertEqual(f.limiter.usedBytes, 0, "and its RAM")
        for inode in survivorInodes.prefix(10) {
            assertThrows(.staleInode) { try f.fs.getattr(inode: inode) }
        }
    }

    func testParallelWritersToDifferentFilesAndRenamesDoNotInterfere() throws {
        let f = try Fixture(capacityBytes: 256 << 20)
        let fs = f.fs
        let inodes = try (0..<4).map { try f.create("file\($0)") }
        let failures = PthreadMutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 5) { worker in
            do {
                if worker == 4 {
                    // Meanwhile rename directories around to stress the namespace lock.
                    for i in 0..<300 {
                        let a = try FileName("ping"), b = try FileName("pong")
                        if i == 0 { _ = try fs.mkdir(parent: .root, name: a, mode: 0o755, context: .user) }
                        try fs.rename(parent: .root, name: i % 2 == 0 ? a : b, newParent: .root,
                                      newName: i % 2 == 0 ? b : a, flags: [])
                    }
                    return
                }
                let (attributes, handle) = inodes[worker]
                for block in 0..<64 {
                    let bytes = pattern(4096, seed: worker * 1000 + block)
                    _ = try bytes.withUnsafeBytes { buffer in
                        try fs.write(inode: attributes.inode, handle: handle, offset: UInt64(block * 4096), data: buffer)
                    }
                }
                for block in 0..<64 {
                    let back = try fs.read(inode: attributes.inode, handle: handle, offset: UInt64(block * 4096), count: 4096)
                    if back != pattern(4096, seed: worker * 1000 + block) {
                        failures.withLock { $0.append("file\(worker) block \(block) differs") }
                    }
                }
            } catch {
                failures.withLock { $0.append("worker \(worker): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        for (attributes, handle) in inodes {
            XCTAssertEqual(try f.fs.getattr(inode: attributes.inode).size, 64 * 4096)
            fs.release(inode: attributes.inode, handle: handle)
        }
        XCTAssertEqual(f.liveBytes, 4 * 64 * 4096)
        XCTAssertEqual(try f.names(), ["file0", "file1", "file2", "file3", "ping"])
    }
}
