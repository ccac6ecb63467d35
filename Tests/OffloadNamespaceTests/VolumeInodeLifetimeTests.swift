#if canImport(Glibc)
import Glibc
#endif
@testable import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
import SplitMix
import XCTest

/// How format 2's namespace lets an inode go: the kernel's references it counts, and the
/// blocks of a file it drops. Two defects found by a review in the twenty-fourth session.
final class VolumeInodeLifetimeTests: XCTestCase {
    /// A readdirplus that fails on an entry (here an inode item of no known type, a
    /// damaged image's) counts no kernel reference for the entries before it: the kernel
    /// got none of them and will forget none. Counted as each entry was read, the first
    /// file kept a reference for the rest of the mount, so its unlink kept it as an orphan
    /// (with its blocks) instead of dropping it. (`lookup` counted after reading already.)
    func testAReaddirplusThatFailsCountsNoReference() throws {
        let capacity: UInt64 = 16 << 20
        let fileSystem = try VolumeFileSystem.create(storage: MemoryImageStorage(maximumBytes: Int(capacity)),
                                                     capacity: .set(capacity), memoryLimiter: MemoryLimiter(limitBytes: 1 << 20))
        let fs = fileSystem.namespace, volume = fileSystem.volume
        let directory = try fs.mkdir(parent: .root, name: FileName("d"), mode: 0o40755, context: .root).inode
        let (a, handle) = try fs.create(parent: directory, name: FileName("a"), mode: 0o100644, flags: O_RDWR, context: .root)
        fs.release(inode: a.inode, handle: handle)
        fs.forget(inode: a.inode, lookups: 1)
        // An entry naming an inode that has no item (as a lost leaf leaves it), after "a".
        // (An inode item of a type no file has did this before such items became
        // undecodable, and unwritable.)
        var item = try XCTUnwrap(volume.reader().inode(directory.rawValue))
        let number: UInt64 = 1_000_000
        let index = item.nextIndex
        item.nextIndex += 1
        try volume.perform([.link(directory: directory.rawValue, NamedEntry(name: Array("b".utf8), child: number, type: 8, index: index)),
                            .attributes(inode: directory.rawValue, item)])
        let listing = try fs.opendir(inode: directory)
        XCTAssertThrowsError(try fs.readdirplus(inode: directory, handle: listing, offset: 0, limit: 50)) {
            XCTAssertEqual($0 as? FSError, .staleInode, "\($0)")
        }
        fs.releasedir(inode: directory, handle: listing)
        // "a" has no reference, no handle: its unlink drops it.
        try fs.unlink(parent: directory, name: FileName("a"))
        XCTAssertNil(try volume.reader().inode(a.inode.rawValue), "a was kept: the failed listing left it referenced")
    }

    /// A cached file the namespace drops (unlinked while open, forgotten by the kernel,
    /// then closed) lets go of its blocks as a journaled change does: a block it shared (a
    /// clone's) is not overwritten in place by the other holder until a sync has made the
    /// drop's frame durable. Its blocks went back when the cached file was freed, without
    /// the marks a journaled release leaves (`VolumeFileBlocks.release(_:unsharing:)`), so
    /// the other holder wrote in place at once; a power cut that kept the clone's frame
    /// and that page, but not the unlink's and the drop's frames, brought the file back
    /// showing the other file's bytes. (Format 1 frees a dropped file through
    /// `releaseAll`, which leaves the marks.)
    func testADroppedFileLetsGoOfASharedBlockOnlyOnceASyncCoversTheDrop() throws {
        let capacity: UInt64 = 16 << 20
        let disk = CrashSimulatingStorage(maximumBytes: Int(capacity))
        // No RAM pieces: the writes go to image blocks.
        let fileSystem = try VolumeFileSystem.create(storage: disk, capacity: .set(capacity),
                                                     memoryLimiter: MemoryLimiter(limitBytes: 0))
        let fs = fileSystem.namespace, volume = fileSystem.volume
        let original = [UInt8](repeating: 0x33, count: 8192)
        let (f, fHandle) = try fs.create(parent: .root, name: FileName("f"), mode: 0o100644, flags: O_RDWR, context: .root)
        let (g, gHandle) = try fs.create(parent: .root, name: FileName("g"), mode: 0o100644, flags: O_RDWR, context: .root)
        _ = try original.withUnsafeBytes { try fs.write(inode: f.inode, handle: fHandle, offset: 0, data: $0) }
        XCTAssertEqual(try fs.copyFileRange(from: f.inode, sourceHandle: fHandle, sourceOffset: 0, to: g.inode,
                                            destinationHandle: gHandle, destinationOffset: 0, length: 8192), 8192)
        let gData = try XCTUnwrap(fs.fileCache.file(g.inode.rawValue)?.data)
        guard case .mmapOffload(let shared, _) = gData.extentList.first?.extent,
              case .mmapOffload(let fShared, _) = fs.fileCache.file(f.inode.rawValue)?.data.extentList.first?.extent,
              fShared == shared else {
            return XCTFail("setup: the clone does not share f's blocks")
        }
        try volume.sync()
        // f unlinked while open, forgotten by the kernel, then closed: the close drops it.
        try fs.unlink(parent: .root, name: FileName("f"))
        fs.forget(inode: f.inode, lookups: 1)
        fs.release(inode: f.inode, handle: fHandle)
        XCTAssertNil(try volume.reader().inode(f.inode.rawValue), "setup: the close did not drop f")
        // g overwrites the block it shared: a copy, while the drop is not durable.
        let changed = [UInt8](repeating: 0x44, count: 4096)
        _ = try changed.withUnsafeBytes { try fs.write(inode: g.inode, handle: gHandle, offset: 0, data: $0) }
        XCTAssertEqual(disk.readBytes(at: shared, count: 4096), Array(original[0..<4096]),
                       "the shared block was overwritten in place before the drop was durable")
        // The power cut keeps what the sync made durable and that block's page: f is back,
        // with its own bytes.
        var rng = SplitMix64(seed: 5)
        var image = disk.crashImage(using: &rng, keep: 0, torn: 0)
        image.replaceSubrange(Int(shared)..<Int(shared) + 4096, with: disk.readBytes(at: shared, count: 4096))
        let recovered = try TreeVolume.open(CrashSimulatingStorage(maximumBytes: Int(capacity), initial: image))
        let entry = try XCTUnwrap(recovered.reader().lookup(directory: 1, name: Array("f".utf8)), "f after the power cut")
        var bytes = [UInt8](repeating: 0, count: original.count)
        for (offset, extent) in try recovered.filesystem.extents(entry.child, overlapping: 0..<UInt64.max) {
            guard case .image(let at, let length) = extent else { continue }
            try bytes.withUnsafeMutableBytes { raw in
                _ = try recovered.storage.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset + length)]),
                                               at: at)
            }
        }
        XCTAssertTrue(bytes == original, "f, brought back by the power cut, shows g's write")
        // Once a sync covers the drop, g owns its blocks alone and rewrites in place.
        try volume.sync()
        let before = gData.extentList.map(\.extent)
        _ = try changed.withUnsafeBytes { try fs.write(inode: g.inode, handle: gHandle, offset: 4096, data: $0) }
        XCTAssertEqual(gData.extentList.map(\.extent), before, "after the sync the overwrite still copied")
        fs.release(inode: g.inode, handle: gHandle)
        XCTAssertNil(volume.failure)
        try fileSystem.close(meter: nil)
        let check = try VolumeCheck.run(disk)
        XCTAssertTrue(check.isClean, "\(check.problems.prefix(3))")
    }
}
