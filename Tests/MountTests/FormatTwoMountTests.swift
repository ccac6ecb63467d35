import Foundation
import XCTest

/// Format 2 through the real daemon, as a person types it (format 2 is the default;
/// scripts/test runs the whole mount suite a second time on format 1,
/// `OFFLOADFS_TEST_FORMAT=1`): a format 1 image mounted without a flag is upgraded in
/// place with everything in it (names, bytes, hard links, symlinks, xattrs, modes), and
/// checks clean, while `--format 1` and a read-only mount leave it format 1; an existing
/// format 2 image mounts as format 2 without the flag; kill -9 loses nothing answered; a `--size` too small for what the
/// image holds is refused in one line, the image untouched, and a larger one grows it in
/// the same opening that replays the journal after a kill -9.
final class FormatTwoMountTests: DaemonTestCase {
    private var image: String { root + "/image.bin" }

    /// What the tree holds, as the shell sees it: paths, kinds, modes, sizes, links,
    /// targets and file hashes, one line each.
    private func listing() throws -> String {
        let result = try BoundedRun.shell("""
            find . -mindepth 1 | sort | while read -r p; do
              if [ -L "$p" ]; then echo "$p link $(readlink "$p")"
              elif [ -d "$p" ]; then echo "$p dir $(stat -c %a "$p")"
              else echo "$p file $(stat -c '%a %s %h' "$p") $(sha256sum < "$p" | cut -c1-16) $(getfattr --only-values -n user.tag "$p" 2>/dev/null)"
              fi
            done
            """, in: mountPoint, timeout: 120)
        guard result.succeeded else { throw MountTestError("listing: \(result.transcript)") }
        return result.output
    }

    /// kill -9 of the mount's daemon, then its mount point forced off.
    private func killDaemon() throws {
        let daemon = try XCTUnwrap(daemons.popLast())
        kill(daemon.pid, SIGKILL)
        _ = daemon.waitForExit()
        DaemonUnderTest.forceUnmount(mountPoint)
    }

    private func info() throws -> [String: String] {
        let result = try BoundedRun.offloadfs(["info", image], timeout: 30)
        var values: [String: String] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { values[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return values
    }

    func testAFormatOneImageIsUpgradedAtMountWithEverythingInIt() throws {
        // A format 1 image, as the release before format 2 made them.
        try mount(image, ["--size", "256M", "--format", "1"])
        try run("""
            mkdir -p a/b && head -c 3000000 /dev/urandom > a/big && echo small > a/b/small
            ln a/b/small a/hard && ln -s b/small a/link && chmod 640 a/big
            setfattr -n user.tag -v kept a/big && head -c 100 /dev/urandom > a/b/tiny
            """)
        let before = try listing()
        try unmountAll()
        let formatOne = try info()
        XCTAssertEqual(formatOne["format version"], "1", "\(formatOne)")
        XCTAssertTrue(formatOne["upgrade"]?.hasPrefix("to format 2 at its next read-write mount") == true, "\(formatOne)")

        // Kept format 1: by `--format 1`, and by a read-only mount (which writes nothing,
        // so it does not upgrade even when format 2 is named).
        try mount(image, ["--format", "1"])
        XCTAssertEqual(try listing(), before, "format 1 mounted as format 1")
        try unmountAll()
        XCTAssertTrue(try info()["format version"]?.hasPrefix("1") == true, "--format 1 does not upgrade")
        try mount(image, ["--format", "2", "-o", "ro"])
        XCTAssertEqual(try listing(), before, "format 1 mounted read-only")
        let readOnlyStatus = try BoundedRun.offloadfs(["status", mountPoint], timeout: 30)
        XCTAssertTrue(readOnlyStatus.output.contains("format: 1"), readOnlyStatus.transcript)
        try unmountAll()
        XCTAssertTrue(try info()["format version"]?.hasPrefix("1") == true, "a read-only mount does not upgrade")

        // The default upgrades it.
        try mount(image, [])
        XCTAssertEqual(try listing(), before, "the upgraded tree")
        try run("echo after > a/new && rm a/b/tiny")
        let after = try listing()
        try unmountAll()
        let values = try info()
        XCTAssertTrue(values["format version"]?.hasPrefix("2") == true, "\(values)")
        XCTAssertEqual(values["cleanly unmounted"], "yes", "\(values)")
        let fsck = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(fsck.status, 0, fsck.transcript)

        // Format 2 from now on, without the flag.
        try mount(image, [])
        XCTAssertEqual(try listing(), after)
        let status = try BoundedRun.offloadfs(["status", mountPoint], timeout: 30)
        XCTAssertTrue(status.output.contains("format: 2"), status.transcript)
        try unmountAll()
    }

    func testKillNineLosesNothingAnsweredAndSizeChangesAfterIt() throws {
        try mount(image, ["--size", "64M", "--format", "2"])
        try run("mkdir d && for i in $(seq 1 50); do echo $i > d/f$i; done && head -c 1000000 /dev/urandom > big && sync")
        try run("rm d/f7 && mv d/f8 d/eight && echo more >> big")
        let answered = try listing()
        // Operations right before the kill: the maintenance commits only after a second
        // without one, so the journal surely holds operations after the last commit for
        // the fsck below. Two leave the tree as listed; the mkdir adds a directory and a
        // name, which fsck's counts must show before the mount replays it (the commit's
        // counts do not).
        try run("touch .mark && rm .mark && mkdir .tail")
        try killDaemon()
        XCTAssertEqual(try info()["cleanly unmounted"], "no")
        // fsck before the mount that replays: it says that the journal holds operations
        // after the last commit, and checks the tree their replay leaves, replayed in
        // memory: the image is not written.
        let unreplayed = try FileSnapshot(image)
        let killed = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(killed.status, 0, killed.transcript)
        XCTAssertTrue(killed.output.hasPrefix("note: the journal holds ") && killed.output.contains(" operations answered after commit ")
                      && killed.output.contains("checked as that replay leaves the tree"), killed.transcript)
        XCTAssertEqual(try FileSnapshot(image), unreplayed, "fsck's check wrote the image")

        try mount(image, [])
        let replayed = try listing()
        XCTAssertTrue(replayed.contains("./.tail dir "), replayed)
        XCTAssertEqual(replayed.split(separator: "\n").filter { !$0.hasPrefix("./.tail ") },
                       answered.split(separator: "\n"), "after kill -9")
        try unmountAll()
        let fsck = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(fsck.status, 0, fsck.transcript)
        XCTAssertFalse(fsck.output.contains("note: the journal holds"), "a clean unmount leaves nothing to replay: \(fsck.transcript)")
        // The counts fsck gave before the mount are the tree the mount showed: its
        // directories and names (the inodes may count an orphan more: a file unlinked
        // while the kernel still referenced it, which the mount drops).
        func counts(_ output: String) -> String? {
            guard let start = output.range(of: " inodes, "),
                  let end = output.range(of: " names,", range: start.upperBound..<output.endIndex) else { return nil }
            return String(output[start.upperBound..<end.lowerBound])
        }
        XCTAssertNotNil(counts(fsck.output), fsck.transcript)
        XCTAssertEqual(counts(killed.output), counts(fsck.output), "\(killed.transcript)\n\(fsck.transcript)")

        // A --size too small for what it holds is refused in one line, the image untouched.
        let before = try FileSnapshot(image)
        if let refused = try refusedMount(image, ["--size", "2M"]) {
            XCTAssertEqual(refused.status, 1, refused.transcript)
            XCTAssertEqual(refused.errorLines.count, 1, refused.transcript)
            XCTAssertTrue(refused.error.contains("--size 2M is too small for image \(image)") && refused.error.contains("use --size 4M or more"), refused.transcript)
        }
        XCTAssertEqual(try FileSnapshot(image), before, "a refused mount writes nothing")
        // A larger one grows it, after another kill -9 (its journal replayed by the same
        // opening), and is kept.
        try mount(image, [])
        try run("echo after > late && sync")
        try killDaemon()
        try mount(image, ["--size", "128M"])
        let seen = try BoundedRun.shell("df -k --output=size . | tail -1 | tr -d ' ' && cat late && rm late && rmdir .tail",
                                        in: mountPoint, timeout: 30)
        XCTAssertEqual(seen.output, "131072\nafter\n", seen.transcript)
        XCTAssertEqual(try listing(), answered)
        try unmountAll()
        XCTAssertEqual(try info()["capacity bytes"], "\(128 << 20)")
        XCTAssertEqual(try info()["capacity set by"], "--size (kept for later mounts)")
        let fsckAfter = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(fsckAfter.status, 0, fsckAfter.transcript)
    }
}

/// The disk under a format 2 image fills up (another program's file), then a person makes
/// directories in the mount: they get ENOSPC, not EIO, the daemon goes on, and once the
/// other file is gone everything works again and the image checks clean. Before metadata
/// blocks got disk space when taken (`BlockSpace.prepareBlocks`), the first mkdir's journal
/// frame went into a hole of the full disk and failed the volume for good (review,
/// 2026-12-02).
final class FormatTwoHostFullTests: ScratchDiskDaemonTestCase {
    func testAFullDiskUnderTheImageIsENOSPCAndPassesOff() throws {
        let scratch = try XCTUnwrap(scratch)
        let mountPoint = scratch.root + "/mnt", image = scratch.path + "/image.bin"
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: scratch.root + "/daemon.log")
        guard case .mounted = try daemon.start(arguments: ["--size", "64M", "--format", "2", "--log-level", "warning"]) else {
            return XCTFail("did not mount: \(daemon.log)")
        }
        self.daemon = daemon
        XCTAssertTrue(try BoundedRun.shell("echo before > kept", in: mountPoint, timeout: 30).succeeded)
        // Another program fills the disk holding the image.
        _ = try BoundedRun.shell("dd if=/dev/zero of=\(scratch.path)/filler bs=64k status=none", timeout: 60)
        let full = try BoundedRun.shell("for i in $(seq 1 3000); do mkdir directory-with-a-long-name-$i || exit 1; done",
                                        in: mountPoint, timeout: 120)
        XCTAssertFalse(full.succeeded, "the mkdirs must run out of space: \(full.transcript)")
        XCTAssertTrue(full.error.contains("No space left on device"), full.transcript)
        XCTAssertFalse(full.error.contains("Input/output error"), full.transcript)
        XCTAssertTrue(processExists(daemon.pid), "the daemon must survive a full disk: \(daemon.log)")
        // The disk has room again: the mount works as before.
        XCTAssertEqual(unlink(scratch.path + "/filler"), 0)
        let again = try BoundedRun.shell("mkdir after && echo after > after/f && cat kept after/f", in: mountPoint, timeout: 30)
        XCTAssertEqual(again.output, "before\nafter\n", again.transcript)
        for problem in daemon.stop() { XCTFail(problem) }
        self.daemon = nil
        let fsck = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(fsck.status, 0, fsck.transcript)
    }
}
