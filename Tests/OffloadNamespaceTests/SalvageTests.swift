import Foundation
import XCTest
import OffloadCore
@testable import OffloadNamespace
import SplitMix

/// `fsck --repair` after one damaged checkpoint frame, in-process: an image of about 100
/// files built over two mounts, each frame of its last checkpoint damaged in turn.
///
/// - With the previous commit kept (the normal case) the repaired tree equals the tree
///   before the damage, and every path whose records were in the damaged frame is named
///   as restored.
/// - With no previous commit (an image from before it was kept), every file the repair
///   emptied, cut short, moved to /lost+found or unnamed is named by path, and every other
///   file is unchanged.
final class SalvageTests: XCTestCase {
    private var directory: URL!
    private var image: String { directory.appendingPathComponent("image.bin").path }
    private var pristine: String { directory.appendingPathComponent("pristine.bin").path }
    private let context = RequestContext(uid: 0, gid: 0)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("offloadfs-salvage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(at: directory)
    }

    func testADamagedCheckpointFrameIsRestoredFromThePreviousCommit() throws {
        let before = try buildImage()
        let frames = try checkpointFrames()
        XCTAssertGreaterThanOrEqual(frames.count, 3, "the checkpoint spans several frames")
        for (index, frame) in frames.enumerated() {
            let (after, lines) = try repairAfterDamaging(frame)
            XCTAssertEqual(after, before, "frame \(index): the repaired tree is the tree before the damage")
            for path in paths(of: frame.inodes, in: before) {
                XCTAssertTrue(lines.contains("restored: \(path) (from the previous checkpoint)"),
                              "frame \(index): \(path) is named: \(lines.prefix(5))")
            }
            XCTAssertTrue(lines.allSatisfy { $0.hasPrefix("restored: ") }, "frame \(index): \(lines.prefix(5))")
            print("[salvage] frame \(index) of \(frames.count) damaged, previous commit kept: \(lines.count) paths restored")
        }
    }

    func testWithoutAPreviousCommitEveryAffectedFileIsNamed() throws {
        let before = try buildImage()
        try dropPreviousCommit()
        try FileManager.default.removeItem(atPath: pristine)
        try FileManager.default.copyItem(atPath: image, toPath: pristine)
        let frames = try checkpointFrames()
        for (index, frame) in frames.enumerated() {
            let (after, lines) = try repairAfterDamaging(frame)
            // Every path whose node changed is named in a line, by its old path (emptied,
            // lost data, removed) or, for a file moved to /lost+found, by its new one.
            var unnamed: [String] = []
            for (path, node) in before.nodes where path != "/" {
                if after.nodes[path] == node && after.contents[node.inode] == before.contents[node.inode] { continue }
                let moved = after.nodes.first { $0.key.hasPrefix("/lost+found/#") && $0.value.inode == node.inode }?.key
                let named = lines.contains { $0.contains(" \(path) ") || $0.contains(" \(path):") }
                    || moved.map { m in lines.contains { $0.hasPrefix("moved: \(m) ") } } ?? false
                if !named && after.nodes[path] == nil && moved == nil && frame.lostEntirely(node) { continue }
                if !named { unnamed.append(path) }
            }
            XCTAssertEqual(unnamed, [], "frame \(index): changed but not named; lines: \(lines.prefix(8))")
            // Paths outside the damage are untouched.
            for (path, node) in before.nodes where !frame.inodes.contains(node.inode) && path != "/" {
                if let now = after.nodes[path], now.inode == node.inode, now.kind == .regular {
                    XCTAssertEqual(after.contents[node.inode], before.contents[node.inode], "frame \(index): \(path) kept its bytes")
                }
            }
            print("[salvage] frame \(index) of \(frames.count) damaged, no previous commit: \(lines.count) lines, "
                  + "e.g. \(lines.prefix(3))")
        }
    }

    // MARK: The image

    /// Two mounts' worth of work: 60 files in three directories, then 40 more and some of
    /// the first ones rewritten; closed cleanly each time. Returns the tree.
    private func buildImage() throws -> TreeSnapshot {
        var random = SplitMix64(seed: 7)
        func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) } }
        var tree: TreeSnapshot?
        for session in 0..<2 {
            let fileSystem = try open()
            let fs = fileSystem.namespace
            var directories: [InodeNumber] = []
            for d in 0..<3 {
                let name = try FileName("d\(d)")
                let number = session == 0 ? try fs.mkdir(parent: .root, name: name, mode: 0o755, context: context).inode
                                          : try fs.lookup(parent: .root, name: name).inode
                directories.append(number)
            }
            let range = session == 0 ? 0..<60 : 60..<100
            for i in range {
                let (attributes, handle) = try fs.create(parent: directories[i % 3], name: FileName("f\(i)"),
                                                         mode: 0o100644, flags: O_RDWR, context: context)
                let data = bytes(i % 7 == 0 ? 20_000 + i : 100 + i * 37)
                _ = try data.withUnsafeBytes { try fs.write(inode: attributes.inode, handle: handle, offset: 0, data: $0) }
                fs.release(inode: attributes.inode, handle: handle)
                try fs.setxattr(inode: attributes.inode, name: Array("user.note".utf8), value: bytes(1200), mode: .createOrReplace)
            }
            if session == 1 {
                for i in stride(from: 0, to: 60, by: 9) {
                    let file = try fs.lookup(parent: directories[i % 3], name: FileName("f\(i)")).inode
                    let handle = try fs.open(inode: file, flags: O_RDWR)
                    _ = try bytes(3000).withUnsafeBytes { try fs.write(inode: file, handle: handle, offset: 50, data: $0) }
                    fs.release(inode: file, handle: handle)
                }
                tree = try TreeSnapshot(fs)
            }
            try fileSystem.close()
        }
        try FileManager.default.copyItem(atPath: image, toPath: pristine)
        return try XCTUnwrap(tree)
    }

    private func open(repair: Bool = false) throws -> ImageFileSystem {
        try ImageFileSystem.open(path: image, capacityBytes: 256 << 20, memoryLimiter: MemoryLimiter(limitBytes: 4096),
                                 repair: repair)
    }

    /// The pristine image with `frame` damaged, repaired: the tree it then holds, and the
    /// lines naming what the repair did to which path.
    private func repairAfterDamaging(_ frame: Frame) throws -> (tree: TreeSnapshot, lines: [String]) {
        try restorePristine()
        try damage(frame)
        let repaired = try open(repair: true)
        XCTAssertFalse(repaired.report.repairs.isEmpty, "the damage was found")
        let tree = try TreeSnapshot(repaired.namespace)
        try repaired.close()
        return (tree, repaired.report.affected)
    }

    private func restorePristine() throws {
        try FileManager.default.removeItem(atPath: image)
        try FileManager.default.copyItem(atPath: pristine, toPath: image)
    }

    // MARK: Frames and damage

    /// One frame of the checkpoint chain: where its payload is and which inodes its
    /// records describe.
    struct Frame {
        var payloadStart: UInt64
        var payloadLength: Int
        /// Inodes with an inode record, an entry naming them, or a file range here.
        var inodes: Set<UInt64> = []
        var inodeRecords: Set<UInt64> = []
        var entryChildren: Set<UInt64> = []
        var fileRanges: Set<UInt64> = []

        /// True when the inode's record, its name and (for a file) its contents were all
        /// here: nothing survives to name it by, so only an older copy could.
        func lostEntirely(_ node: TreeSnapshot.Node) -> Bool {
            let number = node.inode
            return inodeRecords.contains(number) && entryChildren.contains(number)
                && (node.kind != .regular || fileRanges.contains(number))
        }
    }

    private func superblock() throws -> Superblock {
        let fd = Glibc.open(image, O_RDONLY)
        defer { Glibc.close(fd) }
        guard case .image(let superblock, _) = try ImageIdentity.read(fd: fd) else { throw FSError.io("no image") }
        return superblock
    }

    /// The records frames of the current checkpoint, parsed from the file, following
    /// link frames from segment to segment.
    private func checkpointFrames() throws -> [Frame] {
        let superblock = try superblock()
        let fd = Glibc.open(image, O_RDONLY)
        defer { Glibc.close(fd) }
        var frames: [Frame] = []
        var segment = superblock.checkpoint
        var bytes = BackingStore.readBytes(fd: fd, at: segment.start, count: Int(segment.length))
        var position = 0
        while position + FrameHeader.size <= bytes.count {
            guard let (header, _) = bytes.withUnsafeBytes({ FrameHeader.decode(UnsafeRawBufferPointer(rebasing: $0[position..<position + FrameHeader.size])) }),
                  header.stream == superblock.checkpointStream else { break }
            let start = position + FrameHeader.size
            let payload = Array(bytes[start..<start + Int(header.length)])
            if header.kind == .link {
                let next = payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
                let length = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }
                segment = LogSegment(start: UInt64(littleEndian: next), length: UInt64(littleEndian: length))
                bytes = BackingStore.readBytes(fd: fd, at: segment.start, count: Int(segment.length))
                position = 0
                continue
            }
            var frame = Frame(payloadStart: segment.start + UInt64(start), payloadLength: payload.count)
            for record in try payload.withUnsafeBytes({ try MetadataRecord.decodeAll($0) }) {
                switch record {
                case .inode(let r): frame.inodes.insert(r.number); frame.inodeRecords.insert(r.number)
                case .entry(_, _, let child): frame.inodes.insert(child); frame.entryChildren.insert(child)
                case .fileRange(let inode, _, _, _): frame.inodes.insert(inode); frame.fileRanges.insert(inode)
                default: break
                }
            }
            frames.append(frame)
            position = start + payload.count
        }
        return frames
    }

    /// Overwrites 64 bytes in the middle of the frame's payload: its checksum fails.
    private func damage(_ frame: Frame) throws {
        let handle = try Foundation.FileHandle(forWritingTo: URL(fileURLWithPath: image))
        defer { try? handle.close() }
        try handle.seek(toOffset: frame.payloadStart + UInt64(frame.payloadLength / 2))
        try handle.write(contentsOf: Data(repeating: 0xA5, count: min(64, frame.payloadLength)))
    }

    /// Rewrites both superblocks without the previous commit, as an older offloadfs left them.
    private func dropPreviousCommit() throws {
        var superblock = try superblock()
        XCTAssertNotNil(superblock.previous, "a checkpoint after a mount names the previous commit")
        superblock.previous = nil
        let handle = try Foundation.FileHandle(forWritingTo: URL(fileURLWithPath: image))
        defer { try? handle.close() }
        for copy in 0..<2 {
            try handle.seek(toOffset: UInt64(copy * BackingStore.blockSize))
            try handle.write(contentsOf: Data(superblock.encoded()))
        }
    }

    private func paths(of inodes: Set<UInt64>, in tree: TreeSnapshot) -> [String] {
        tree.nodes.filter { inodes.contains($0.value.inode) }.keys.sorted()
    }
}
