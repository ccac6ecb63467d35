import Foundation
import OffloadCore
import OffloadSimulation
import XCTest

/// Images written by the format 1 release must keep mounting without loss while the
/// format moves on (issue 11: format 2 upgrades them in place at their first mount).
/// Tests/Fixtures/format1 keeps two, made by its `make-fixtures` through real mounts of
/// that release: one cleanly unmounted, holding every kind of object format 1 keeps
/// (hard links, a 4,006-byte symlink target, a 60,000-byte xattr, ACLs, a clone, holes,
/// devices, set-id bits, a directory of 1,000 names), and one left by `kill -9` after
/// more changes and with a file unlinked while open, whose journal must be replayed.
/// Each must show exactly the tree its manifest recorded (`scripts/tree-manifest`: every
/// name, type, mode, owner, link count, inode number, size, mtime, ctime, byte, data map
/// (holes) and xattr), at its first mount and again at the next, and be clean for `fsck`
/// before and after.
final class FormatOneFixtureTests: DaemonTestCase {
    func testACleanlyUnmountedFormatOneImageMountsWithEverything() throws {
        try checkFixture("clean")
    }

    func testAFormatOneImageLeftByKill9RecoversWithEverything() throws {
        try checkFixture("crash")
    }

    /// A power cut between the upgrade's two slots leaves format 2's first commit slot in
    /// block 0 and format 1's superblock in block 1, which the image still is. fsck and
    /// info say so (they said only that the two copies differ), and the mount upgrades it
    /// again with everything.
    func testAnUpgradeCutShortAfterItsFirstSlotIsNamedAndRunsAgain() throws {
        let folder = PackageLayout.root + "/Tests/Fixtures/format1"
        let packed = root + "/clean.img"
        let unpacked = try Shell.run("gzip -dc '\(folder)/clean.img.gz' > '\(packed)'")
        XCTAssertTrue(unpacked.succeeded, unpacked.transcript)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: packed)))
        let disk = CrashSimulatingStorage(maximumBytes: 80 << 20, initial: original)
        guard case .image(let superblock, _) = try ImageIdentity.read(disk) else { return XCTFail("not format 1") }
        let read = { (offset: UInt64, count: Int) in disk.readBytes(at: offset, count: count) }
        let replay = try ImageReplay.load(superblock: superblock, fileBytes: disk.length, read: read)
        // The image as the disk holds it at the first change after the first slot's write.
        final class Capture: @unchecked Sendable {
            let lock = PthreadMutex<(slotWritten: Bool, image: [UInt8]?)>((false, nil))
        }
        let capture = Capture()
        disk.beforeChange { change in
            capture.lock.withLock { state in
                if state.slotWritten, state.image == nil { state.image = disk.crashImage(keeping: { _, _ in true }) }
                if case .write(let range) = change, range.lowerBound == 0 { state.slotWritten = true }
            }
        }
        _ = try TreeVolume.upgrade(disk, from: replay, analysis: ImageAnalysis(replay, fileBytes: disk.length),
                                   previousSegments: ImageReplay.previousCommitSegments(of: superblock, fileBytes: disk.length,
                                                                                        read: read),
                                   nameHashKey: SipHash24(key0: 1, key1: 2))
        disk.beforeChange(nil)
        let cut = try XCTUnwrap(capture.lock.withLock { $0.image })
        let image = root + "/cut.img"
        try Data(cut).write(to: URL(fileURLWithPath: image))

        let said = "an upgrade to format 2 was cut short (block 0 holds its first commit, block 1 still format 1's superblock, "
            + "which the image is); the next read-write mount upgrades it again (`offloadfs mount --format 1` keeps it format 1)"
        let fsck = try runOffloadfs(["fsck", image])
        XCTAssertEqual(fsck.status, 0, fsck.transcript)
        XCTAssertTrue(fsck.output.contains("note: upgrade: " + said), fsck.transcript)
        XCTAssertFalse(fsck.output.contains("copies differ"), fsck.transcript)
        let info = try runOffloadfs(["info", image])
        XCTAssertEqual(info.status, 0, info.transcript)
        XCTAssertTrue(info.output.contains("upgrade: " + said), info.transcript)
        let plain = try runOffloadfs(["info", packed])
        XCTAssertTrue(plain.output.contains("upgrade: to format 2 at its next read-write mount"), plain.transcript)

        try mount(image, [])
        let manifest = try Shell.runProgram(PackageLayout.root + "/scripts/tree-manifest", [mountPoint])
        let expected = try String(contentsOfFile: folder + "/clean.manifest.jsonl", encoding: .utf8)
        XCTAssertTrue(manifest.output == expected, "the upgraded image differs from its manifest:\n" + lineDiff(expected, manifest.output))
        try unmountAll()
        let after = try runOffloadfs(["fsck", image])
        XCTAssertEqual(after.status, 0, after.transcript)
    }

    private func checkFixture(_ name: String) throws {
        let folder = PackageLayout.root + "/Tests/Fixtures/format1"
        let image = root + "/\(name).img"
        let unpacked = try Shell.run("gzip -dc '\(folder)/\(name).img.gz' > '\(image)'")
        XCTAssertTrue(unpacked.succeeded, unpacked.transcript)
        let expected = try String(contentsOfFile: folder + "/\(name).manifest.jsonl", encoding: .utf8)
        XCTAssertGreaterThan(expected.count, 0)

        let before = try runOffloadfs(["fsck", image])
        XCTAssertEqual(before.status, 0, "fsck of the \(name) fixture as written:\n\(before.transcript)")
        // The first mount recovers (and, from format 2 on, upgrades) the image; the second
        // reads back what the first one wrote.
        for mountNumber in 1...2 {
            try mount(image, [])
            let manifest = try Shell.runProgram(PackageLayout.root + "/scripts/tree-manifest", [mountPoint])
            XCTAssertEqual(manifest.status, 0, manifest.transcript)
            XCTAssertTrue(manifest.output == expected,
                          "the \(name) fixture at mount \(mountNumber) differs from its manifest:\n"
                          + lineDiff(expected, manifest.output))
            try unmountAll()
        }
        let after = try runOffloadfs(["fsck", image])
        XCTAssertEqual(after.status, 0, "fsck of the \(name) fixture after two mounts:\n\(after.transcript)")
    }
}
