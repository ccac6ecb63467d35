import Foundation
import XCTest

/// `offloadfs fsck` on a format 2 image, as a person types it (`offloadfs-genimage
/// --format 2` makes them): `info` names its format, a made image checks clean (exit 0),
/// one with a zeroed tree leaf reports the problem (exit 1), and `fsck --repair` repairs
/// it (exit 1, "repaired"), naming every file it removed by path; the repaired image then
/// checks clean and mounts, and every other file reads back as the undamaged image's.
final class FormatTwoFsckTests: CommandLineTestCase {
    func testFsckChecksAndRepairsAFormatTwoImage() throws {
        let image = try generatedImage("two.img", files: 3000)

        let info = try offloadfs(["info", image])
        XCTAssertEqual(info.status, 0, info.transcript)
        XCTAssertTrue(info.output.contains("format version: 2\n"), info.transcript)
        XCTAssertFalse(info.output.contains("upgrade:"), "a format 2 image has nothing to upgrade: \(info.transcript)")
        XCTAssertTrue(info.output.contains("capacity bytes: "), info.transcript)
        // The commit slot's count, as statfs reads it (info left it out, as `info --help`
        // did not say: the admin hunt of the thirty-fifth session).
        XCTAssertTrue(info.output.contains("inodes: 3004\n"), info.transcript)
        XCTAssertTrue(info.output.contains("last unmount: "), info.transcript)

        let clean = try offloadfs(["fsck", image])
        XCTAssertEqual(clean.status, 0, clean.transcript)
        XCTAssertTrue(clean.output.contains("format 2, 3004 inodes"), clean.transcript)
        XCTAssertTrue(clean.output.contains("clean"), clean.transcript)
        let cleanRepair = try offloadfs(["fsck", "--repair", image])
        XCTAssertEqual(cleanRepair.status, 0, cleanRepair.transcript)
        XCTAssertFalse(cleanRepair.output.contains("repaired"), cleanRepair.transcript)

        // One leaf of the filesystem tree, in the middle of the tree's blocks, zeroed.
        let damaged = scratch + "/damaged.img"
        let leaf = try middleLeaf(of: image)
        let copied = try Shell.run("cp '\(image)' '\(damaged)' && dd if=/dev/zero of='\(damaged)' bs=4096 seek=\(leaf) count=1 conv=notrunc status=none")
        XCTAssertTrue(copied.succeeded, copied.transcript)
        let check = try offloadfs(["fsck", damaged])
        XCTAssertEqual(check.status, 1, check.transcript)
        XCTAssertTrue(check.output.contains("problem: "), check.transcript)
        // One damaged leaf is one problem, said in the singular (it said "1 problems").
        XCTAssertTrue(check.output.hasSuffix("; 1 problem\n"), check.transcript)

        let repair = try offloadfs(["fsck", "--repair", damaged])
        XCTAssertEqual(repair.status, 1, repair.transcript)
        XCTAssertTrue(repair.output.contains("repaired: filesystem tree: the leaf at block \(leaf) "), repair.transcript)
        XCTAssertTrue(repair.output.hasSuffix("; repaired\n"), repair.transcript)
        let removed = Set(repair.output.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("removed: "), let end = line.range(of: " (it named inode") else { return nil }
            return String(line[line.index(line.startIndex, offsetBy: 9)..<end.lowerBound])
        })
        XCTAssertGreaterThan(removed.count, 0, repair.transcript)
        XCTAssertLessThan(removed.count, 100, "one leaf holds the items of a few dozen files at most")

        let again = try offloadfs(["fsck", damaged])
        XCTAssertEqual(again.status, 0, again.transcript)
        XCTAssertTrue(again.output.hasSuffix("; clean\n"), again.transcript)

        // Through the daemon: the undamaged image (read-only) and the repaired one.
        let original = try filesByHash(image, mountPoint: scratch + "/original", extra: ["-o", "ro"])
        let repaired = try filesByHash(damaged, mountPoint: scratch + "/repaired", extra: [])
        XCTAssertEqual(original.count, 3000)
        XCTAssertEqual(Set(original.keys).subtracting(repaired.keys), removed, "the files gone are the ones the repair named")
        XCTAssertEqual(repaired.count, original.count - removed.count)
        for (path, hash) in repaired { XCTAssertEqual(original[path], hash, path) }
    }

    /// A commit slot that holds no commit beside the current one (a slot write a crash cut
    /// short, or damage): the image is clean, opens from the other, and fsck says so in a
    /// note, not silently (the admin hunt of the thirty-fifth session).
    func testFsckNotesACommitSlotThatHoldsNoCommit() throws {
        let image = try generatedImage("slots.img", files: 10)
        let info = try offloadfs(["info", image])
        let generationLine = try XCTUnwrap(info.output.split(separator: "\n").first { $0.hasPrefix("generation: ") }, info.transcript)
        let generation = try XCTUnwrap(UInt64(generationLine.dropFirst("generation: ".count)))
        let spare = (generation + 1) % 2
        XCTAssertFalse(try offloadfs(["fsck", image]).output.contains("note: commit slot"))
        let damaged = try Shell.run("printf 'XXXXXXXX' | dd of='\(image)' bs=1 seek=\(spare * 4096 + 104) conv=notrunc status=none")
        XCTAssertTrue(damaged.succeeded, damaged.transcript)
        let check = try offloadfs(["fsck", image])
        XCTAssertEqual(check.status, 0, check.transcript)
        XCTAssertTrue(check.output.contains("note: commit slot \(spare) holds no commit ("), check.transcript)
        XCTAssertTrue(check.output.contains("the image opens from commit \(generation)"), check.transcript)
    }

    /// A format 2 image of `files` files that `offloadfs-genimage` makes in the scratch
    /// folder under `name`; its path.
    private func generatedImage(_ name: String, files: Int) throws -> String {
        let generator = URL(fileURLWithPath: DaemonBinary.path!).deletingLastPathComponent()
            .appendingPathComponent("offloadfs-genimage").path
        let image = scratch + "/" + name
        let made = try Shell.runProgram(generator, [image, "--files", "\(files)", "--format", "2"])
        XCTAssertEqual(made.status, 0, made.transcript)
        return image
    }

    /// The block of a filesystem-tree leaf (node magic "OFTN", tree 1, level 0) halfway
    /// through the image's leaves.
    private func middleLeaf(of image: String) throws -> Int {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        var leaves: [Int] = []
        bytes.withUnsafeBytes { raw in
            for block in 2..<raw.count / 4096 {
                let base = block * 4096
                guard raw[base] == 0x4F, raw[base + 1] == 0x46, raw[base + 2] == 0x54, raw[base + 3] == 0x4E else { continue }
                let tree = raw.loadUnaligned(fromByteOffset: base + 32, as: UInt32.self)
                if UInt32(littleEndian: tree) == 1 && raw[base + 36] == 0 { leaves.append(block) }
            }
        }
        XCTAssertGreaterThan(leaves.count, 10)
        return leaves[leaves.count / 2]
    }

    /// Every regular file of `image` mounted at `mountPoint`, by path, with its SHA-256.
    private func filesByHash(_ image: String, mountPoint: String, extra: [String]) throws -> [String: String] {
        try mountInBackground(mountPoint, image: image, extra: extra)
        defer { _ = try? offloadfs(["unmount", mountPoint]) }
        let listing = try BoundedRun.shell("find . -type f -print0 | sort -z | xargs -0 sha256sum", in: mountPoint, timeout: 120)
        XCTAssertTrue(listing.succeeded, listing.transcript)
        var files: [String: String] = [:]
        for line in listing.output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            files[String(parts[1].trimmingCharacters(in: .whitespaces).dropFirst(1))] = String(parts[0])
        }
        let unmount = try offloadfs(["unmount", mountPoint])
        XCTAssertEqual(unmount.status, 0, unmount.transcript)
        return files
    }
}
