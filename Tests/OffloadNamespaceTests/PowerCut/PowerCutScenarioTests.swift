import Glibc
import XCTest
import OffloadCore
@testable import OffloadNamespace
import SplitMix

/// Short operation sequences right after a sync, with a power cut before every change of
/// the image and many page subsets per cut (CrashMonkey found its bugs with workloads of
/// three operations or fewer after an fsync). Each pins down one defect the random test
/// found on format 1 or a reading of the code suggested, and runs on both formats.
final class PowerCutScenarioTests: XCTestCase {
    private let context = RequestContext(uid: 0, gid: 0)

    /// Runs `scenario` on each format, with every cut taken, and checks that no crash image
    /// had a violation.
    private func onEachFormat(_ label: String = "", _ scenario: (PowerCutRun, any FileSystemOperations) throws -> Void,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        for format in ImageFormat.allCases {
            let run = try PowerCutRun(seed: 7, format: format, capacity: 24 << 20, cutPercent: 100, imagesPerCut: 12,
                                      memoryLimit: 0)
            try scenario(run, run.fs)
            assertNoViolations(run, label, file: file, line: line)
        }
    }

    private func distinct(_ count: Int, _ tag: UInt64) -> [UInt8] {
        var random = SplitMix64(seed: tag)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) | 1 }
    }

    private func create(_ name: String, _ run: PowerCutRun, bytes: [UInt8]) throws -> (InodeNumber, FileHandle) {
        let fs = run.fs
        var made: (InodeNumber, FileHandle)!
        try run.perform(armed: false) {
            let (a, h) = try fs.create(parent: .root, name: FileName(Array(name.utf8)), mode: 0o100644, flags: O_RDWR,
                                       context: context)
            _ = try bytes.withUnsafeBytes { try fs.write(inode: a.inode, handle: h, offset: 0, data: $0) }
            made = (a.inode, h)
            return .init(kind: .other, line: "create \(name) with \(bytes.count) bytes",
                         written: (a.inode.rawValue, 0..<UInt64(bytes.count)))
        }
        return made
    }

    private func fsync(_ run: PowerCutRun, _ file: (InodeNumber, FileHandle), armed: Bool) throws {
        try run.perform(armed: armed) {
            try run.fs.fsync(inode: file.0, handle: file.1, dataOnly: false)
            return .init(kind: .sync, line: "fsync")
        }
    }

    private func assertNoViolations(_ run: PowerCutRun, _ label: String = "", file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThan(run.totals.images, 0, "no crash image was taken", file: file, line: line)
        XCTAssertEqual(run.violations.count, 0, "\(label) (format \(run.format.rawValue)): \(run.violations.first ?? "")", file: file, line: line)
        print("power-cut scenario \(label) (format \(run.format.rawValue)): \(run.totals.cuts) cuts, \(run.totals.images) images, \(run.violations.count) violations")
    }

    /// a and b share blocks (a clone), fsync; a goes away (unlink, rename over it, or a
    /// truncate); b is overwritten in place. Until a's removal is durable, a cut can
    /// bring a back, so its blocks must still hold a's bytes: b must copy on write.
    func testACloneWhoseSiblingWentAwayIsNotOverwrittenInPlaceBeforeASync() throws {
        for removal in ["unlink", "rename over", "truncate"] {
            try onEachFormat(removal) { run, fs in
                let a = try create("a", run, bytes: distinct(16384, 1))
                let b = try create("b", run, bytes: [])
                try run.perform(armed: false) {
                    _ = try fs.copyFileRange(from: a.0, sourceHandle: a.1, sourceOffset: 0, to: b.0, destinationHandle: b.1,
                                             destinationOffset: 0, length: 16384)
                    return .init(kind: .other, line: "clone a into b", written: (b.0.rawValue, 0..<16384))
                }
                let c = try create("c", run, bytes: distinct(100, 3))
                try fsync(run, b, armed: false)
                try run.perform {
                    switch removal {
                    case "unlink": try fs.unlink(parent: .root, name: FileName(Array("a".utf8)))
                    case "rename over": try fs.rename(parent: .root, name: FileName(Array("c".utf8)), newParent: .root,
                                                      newName: FileName(Array("a".utf8)), flags: [])
                    default: _ = try fs.setattr(inode: a.0, changes: AttributeChanges(size: 0), context: context)
                    }
                    return .init(kind: .other, line: "\(removal) a")
                }
                // The kernel lets go of both (close, then forget): a's inode and its claim on
                // the shared blocks are gone from memory, not yet from the disk.
                for file in [a, c] {
                    fs.release(inode: file.0, handle: file.1)
                    fs.forget(inode: file.0, lookups: 1)
                }
                try run.perform {
                    _ = try distinct(4096, 4).withUnsafeBytes { try fs.write(inode: b.0, handle: b.1, offset: 4096, data: $0) }
                    return .init(kind: .other, line: "overwrite b in place", written: (b.0.rawValue, 4096..<8192))
                }
                try fsync(run, b, armed: true)
            }
        }
    }

    /// a is synced, then rewritten in place, then cloned into b. Until the rewrite is
    /// durable the disk may hold a's older bytes; b, which never held them, must not show
    /// them after a power cut: the clone makes the source's blocks durable before sharing.
    func testACloneOfBlocksRewrittenInPlaceNeverShowsTheirOlderBytes() throws {
        try onEachFormat { run, fs in
            let a = try create("a", run, bytes: distinct(16384, 8))
            let b = try create("b", run, bytes: [])
            try fsync(run, a, armed: false)
            try run.perform {
                _ = try distinct(8192, 9).withUnsafeBytes { try fs.write(inode: a.0, handle: a.1, offset: 4096, data: $0) }
                return .init(kind: .other, line: "overwrite a in place", written: (a.0.rawValue, 4096..<12288))
            }
            try run.perform {
                _ = try fs.copyFileRange(from: a.0, sourceHandle: a.1, sourceOffset: 0, to: b.0, destinationHandle: b.1,
                                         destinationOffset: 0, length: 16384)
                return .init(kind: .other, line: "clone a into b", written: (b.0.rawValue, 0..<16384))
            }
            try run.perform {
                _ = try distinct(100, 10).withUnsafeBytes { try fs.write(inode: a.0, handle: a.1, offset: 0, data: $0) }
                return .init(kind: .other, line: "write a again", written: (a.0.rawValue, 0..<100))
            }
        }
    }

    /// A file is cut to end inside a block (the rest of the block keeps its old bytes)
    /// and synced; then it grows by a small append. Filling that block's tail in place
    /// would, after a power cut that kept the append's frame but not its page, show the
    /// bytes the truncate removed: only a tail known to be zeros is filled in place.
    func testAnAppendNeverBringsBackBytesATruncateRemoved() throws {
        try onEachFormat { run, fs in
            let a = try create("a", run, bytes: distinct(8192, 11))
            try run.perform(armed: false) {
                _ = try fs.setattr(inode: a.0, changes: AttributeChanges(size: 5000), context: context)
                return .init(kind: .other, line: "truncate a to 5000")
            }
            try fsync(run, a, armed: false)
            try run.perform {
                _ = try distinct(700, 12).withUnsafeBytes { try fs.write(inode: a.0, handle: a.1, offset: 5000, data: $0) }
                return .init(kind: .other, line: "append 700 bytes to a", written: (a.0.rawValue, 5000..<5700))
            }
            try fsync(run, a, armed: true)
        }
    }

    /// A truncate (setattr with only a size) is one operation: a power cut brings back the
    /// file as before it or as after it, its size and times together. Format 2 journaled
    /// the size change (with the time of the file's change) and then the setattr's own
    /// frame with an earlier time: a cut between the two showed the new size with a time
    /// the file never had (the random test found it, seed 1).
    func testATruncateComesBackWholeOrNotAtAll() throws {
        try onEachFormat("truncate") { run, fs in
            let a = try create("a", run, bytes: distinct(9000, 13))
            try fsync(run, a, armed: false)
            for size: UInt64 in [5000, 5000, 12000] {
                try run.perform {
                    _ = try fs.setattr(inode: a.0, changes: AttributeChanges(size: size), context: context)
                    return .init(kind: .other, line: "truncate a to \(size)")
                }
            }
            try fsync(run, a, armed: true)
        }
    }

    /// A closed file the kernel still references is unlinked: its data goes (nothing can
    /// open it again), and the unlink is one operation: a power cut brings the file back
    /// whole with its name, or not at all, never named and empty.
    func testAnUnlinkOfAClosedFileTheKernelStillReferencesIsWhole() throws {
        try onEachFormat("unlink") { run, fs in
            let a = try create("a", run, bytes: distinct(9000, 14))
            try fsync(run, a, armed: false)
            try run.perform(armed: false) {
                fs.release(inode: a.0, handle: a.1)
                return .init(kind: .other, line: "close a")
            }
            try run.perform {
                try fs.unlink(parent: .root, name: FileName(Array("a".utf8)))
                return .init(kind: .other, line: "unlink a")
            }
            let marker = try create("marker", run, bytes: [1])
            try fsync(run, marker, armed: true)
        }
    }

    /// A large file is deleted and synced (its blocks are punched and freed); a new file
    /// reuses them. Its frames can reach the disk before its data pages: the new file may
    /// then read zeros, never the deleted file's bytes, so a freed block's punch must be
    /// durable before the block is handed out again.
    func testReusedBlocksNeverShowTheDeletedFilesBytes() throws {
        try onEachFormat { run, fs in
            let big = try create("big", run, bytes: distinct(300_000, 5))
            try fsync(run, big, armed: false)
            try run.perform(armed: false) {
                fs.release(inode: big.0, handle: big.1)
                try fs.unlink(parent: .root, name: FileName(Array("big".utf8)))
                fs.forget(inode: big.0, lookups: 1)
                return .init(kind: .other, line: "unlink big")
            }
            let marker = try create("marker", run, bytes: [1])
            try fsync(run, marker, armed: false)
            let new = try create("new", run, bytes: [])
            try run.perform {
                _ = try distinct(300_000, 6).withUnsafeBytes { try fs.write(inode: new.0, handle: new.1, offset: 0, data: $0) }
                return .init(kind: .other, line: "write 300000 bytes to new", written: (new.0.rawValue, 0..<300_000))
            }
            try fsync(run, marker, armed: true)
        }
    }
}
