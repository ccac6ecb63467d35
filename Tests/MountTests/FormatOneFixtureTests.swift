import Foundation
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
