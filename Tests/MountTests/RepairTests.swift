import Foundation
import XCTest

/// `offloadfs fsck --repair` after one damaged checkpoint block, through the commands a
/// person types, on an image of 100 files in four directories built by a real mount:
///
/// - as offloadfs leaves it (the previous checkpoint kept), the repair restores every
///   file from the previous checkpoint and names each path it restored;
/// - with the previous checkpoint gone (as an older offloadfs left images), the repair
///   names by path every file whose contents or name it could not keep, and every other
///   file keeps its bytes.
///
/// Format 1's checkpoint is damaged here: the daemons make and keep format 1 images
/// (format 2's repair is FormatTwoFsckTests').
final class RepairTests: DaemonTestCase {
    private var unpinFormat: (() -> Void)?

    override func setUpWithError() throws {
        try super.setUpWithError()
        unpinFormat = MountTestFormat.pinFormatOne()
    }

    override func tearDown() {
        super.tearDown()
        unpinFormat?()
        unpinFormat = nil
    }

    func testRepairRestoresAndNamesEveryAffectedFile() throws {
        let base = root + "/base.img"
        let before = try mountAndRun(base, script: """
            set -e
            for d in 0 1 2 3; do mkdir dir$d; done
            i=0
            while [ $i -lt 100 ]; do
                f=dir$((i % 4))/file$i
                head -c $((100 + i * 97)) /dev/urandom > $f
                setfattr -n user.note -v "$(head -c 900 /dev/zero | tr '\\0' n)" $f
                i=$((i + 1))
            done
            """)
        XCTAssertEqual(before.count, 100, "the manifest lists every file")

        // As offloadfs leaves it: everything comes back, each restored path named.
        let kept = try damagedCopy(of: base, named: "kept.img", dropPrevious: false)
        let check = try BoundedRun.offloadfs(["fsck", kept], timeout: 60)
        XCTAssertEqual(check.status, 1, check.transcript)
        XCTAssertTrue(check.output.contains("--repair \(kept)` restores everything from the previous checkpoint"),
                      check.transcript)
        let repaired = try BoundedRun.offloadfs(["fsck", "--repair", kept], timeout: 60)
        print("[repair] previous kept: \(repaired.summary); \(repaired.output.split(separator: "\n").prefix(6).joined(separator: " | "))")
        XCTAssertEqual(repaired.status, 1, "repaired: \(repaired.transcript)")
        let restored = lines(repaired.output, prefix: "restored: ")
        XCTAssertFalse(restored.isEmpty, repaired.transcript)
        for path in restored where path != "/" && !path.hasPrefix("/dir") {
            XCTFail("restored names a path that was never there: \(path)")
        }
        XCTAssertEqual(try manifest(of: kept), before, "every file came back with its bytes")

        // Without the previous checkpoint: every changed file is named by path.
        let bare = try damagedCopy(of: base, named: "bare.img", dropPrevious: true)
        let salvaged = try BoundedRun.offloadfs(["fsck", "--repair", bare], timeout: 60)
        print("[repair] no previous: \(salvaged.summary); \(salvaged.output.split(separator: "\n").prefix(6).joined(separator: " | "))")
        XCTAssertEqual(salvaged.status, 1, salvaged.transcript)
        let after = try manifest(of: bare)
        var unnamed: [String] = []
        for (path, hash) in before where after[path] != hash {
            let named = salvaged.output.split(separator: "\n").contains { $0.contains(" \(path) ") || $0.contains(" \(path):") }
            if !named { unnamed.append(path) }
        }
        XCTAssertEqual(unnamed, [], "changed but not named: \(salvaged.transcript)")
        XCTAssertLessThan(after.filter { before[$0.key] == $0.value }.count, 100, "the damage cost something")
        XCTAssertGreaterThan(after.filter { before[$0.key] == $0.value }.count, 0, "what was not damaged is kept")
        let clean = try BoundedRun.offloadfs(["fsck", bare], timeout: 60)
        XCTAssertEqual(clean.ending, .exited(0), "the repaired image checks clean: \(clean.transcript)")
    }

    // MARK: Helpers

    /// Mounts `image`, runs `script` in it, takes the manifest, unmounts.
    private func mountAndRun(_ image: String, script: String) throws -> [String: String] {
        try mount(image, ["--size", "256M"])
        try run(script)
        let listing = try hashes()
        try unmountAll()
        return listing
    }

    /// path -> sha256 of every regular file in the mount of `image`.
    private func manifest(of image: String) throws -> [String: String] {
        try mount(image, ["--size", "256M"])
        defer { try? unmountAll() }
        return try hashes()
    }

    private func hashes() throws -> [String: String] {
        let result = try BoundedRun.shell("find . -type f -exec sha256sum {} +", in: mountPoint, timeout: 60)
        guard result.succeeded else { throw MountTestError(result.transcript) }
        var listing: [String: String] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            listing[String(parts[1].trimmingCharacters(in: .whitespaces).dropFirst())] = String(parts[0])
        }
        return listing
    }

    /// A copy of `image` with one block of its checkpoint overwritten: the second block of
    /// the checkpoint chain when the previous checkpoint is kept; with `dropPrevious`, the
    /// last block the checkpoint uses, and the superblocks' previous-checkpoint extension
    /// (bytes 128..<192 of blocks 0 and 1, docs/FORMAT.md) zeroed.
    private func damagedCopy(of image: String, named name: String, dropPrevious: Bool) throws -> String {
        let copy = root + "/" + name
        try FileManager.default.copyItem(atPath: image, toPath: copy)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: copy)))
        func u64(_ offset: Int) -> Int { (0..<8).reduce(0) { $0 | Int(bytes[offset + $1]) << (8 * $1) } }
        let checkpointStart = u64(48)
        XCTAssertGreaterThan(checkpointStart, 0, "the image has a checkpoint")
        let info = try BoundedRun.offloadfs(["info", copy], timeout: 30)
        let used = Int(lines(info.output, prefix: "checkpoint bytes: ").first ?? "") ?? 0
        XCTAssertGreaterThan(used, 3 * 4096, "the checkpoint spans several blocks: \(info.transcript)")
        let block = dropPrevious ? checkpointStart + (used - 1) / 4096 * 4096 : checkpointStart + 4096
        bytes.replaceSubrange(block..<block + 4096, with: repeatElement(0x5A, count: 4096))
        if dropPrevious {
            for copyStart in [0, 4096] { bytes.replaceSubrange(copyStart + 128..<copyStart + 192, with: repeatElement(0, count: 64)) }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: copy))
        return copy
    }

    private func lines(_ output: String, prefix: String) -> [String] {
        output.split(separator: "\n").filter { $0.hasPrefix(prefix) }.map {
            String($0.dropFirst(prefix.count).split(separator: " (").first ?? "")
        }
    }
}
