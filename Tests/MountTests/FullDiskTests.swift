import Foundation
import XCTest

/// Running out of space, with the image on a 64 MiB tmpfs: either the host filesystem
/// fills first (`--size 1G`, larger than the disk) or offloadfs's own capacity does
/// (`--size 16M`). Either way the writer gets ENOSPC, the mount keeps answering with the
/// files it had intact, space comes back within 10 s of `rm`, and after unmount and mount
/// the files are all still there with the same sha256.
final class FullDiskTests: XCTestCase {
    private var scratch: ScratchDisk?
    private var root: String! { scratch?.root }
    private var disk: String { scratch!.path }
    private var mountPoint: String { root + "/mnt" }
    private var image: String { disk + "/image.bin" }
    private var references: String { root + "/references" }
    private var daemon: DaemonUnderTest?

    override func setUpWithError() throws {
        try super.setUpWithError()
        try requireMountPrerequisites()
        scratch = try ScratchDisk(megabytes: 64)
        for directory in [mountPoint, references] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        // The reference files, on the host's own disk (not the tmpfs): what the mount must keep.
        let make = try BoundedRun.shell("""
            set -e
            printf 'a small text file\\n' > small.txt
            head -c 204800 /dev/urandom > medium.bin
            head -c 3145728 /dev/urandom > large.bin
            head -c 8388608 /dev/urandom > ../eight.bin
            """, in: references, timeout: 60)
        XCTAssertTrue(make.succeeded, make.transcript)
    }

    override func tearDown() {
        if let daemon {
            for problem in daemon.stop() { XCTFail(problem) }
        }
        daemon = nil
        if let scratch {
            DaemonUnderTest.forceUnmount(mountPoint)
            for problem in scratch.unmount() { XCTFail(problem) }
        }
        scratch = nil
        super.tearDown()
    }

    /// `--size 1G` on a 64 MiB disk: the host filesystem runs out first.
    func testHostDiskFillsFirst() throws {
        try fillAndRecover(size: "1G", fillMiB: 128)
    }

    /// `--size 16M` on a 64 MiB disk: offloadfs's own capacity runs out first. With 2,000
    /// files made just before the fill (their generation not committed when the image
    /// fills), a chmod, a new file and a directory on the full image are answered or
    /// refused with ENOSPC, the rm after them works, and so do they once space came back:
    /// before, the fill took the blocks the commit of those 2,000 files needed, the first
    /// chmod answered ENOSPC, the commit failed the volume, and rm and the unmount's commit
    /// failed with it (docs/ARCHITECTURE.md, "Commits that fit a full image"). The old code passes when the maintenance's tick (every 5 s on an image this
    /// low on space) commits the 2,000 files before the fill: the in-process test
    /// (`VolumeFullImageMetadataTests`) is the one that always fails on it.
    func testOwnCapacityFillsFirst() throws {
        try fillAndRecover(size: "16M", fillMiB: 64, changingMetadataWhenFull: true)
    }

    /// `--size 1G` on a 64 MiB disk filled with small files, whose bytes wait in RAM for
    /// the commit that places them and whose items need the commit's tree nodes: they
    /// were admitted against the image's free space, not the disk's, so the commit that
    /// had to place them found no disk space, failed, and failed the volume; `rm -rf`
    /// then answered ENOSPC to every name, and the next mount served the image read-only
    /// (the twenty-eighth session's hunt, on ext4). The disk's room is now what they are
    /// admitted against: the writer gets ENOSPC, `rm -rf` works, and the space comes back.
    func testSmallFilesFillingTheHostDiskCanBeRemoved() throws {
        // Format 2 (format 1's checkpoints still fail here: docs/ARCHITECTURE.md, "The
        // disk under the image is the room", left).
        try startDaemon(["--size", "1G", "--format", "2"])
        // Most of the disk in one file, then small files; bash's printf is its own (no
        // process a file) and names the errno of a failed write (dash says "I/O error").
        let fill = try BoundedRun.shell("""
            dd if=/dev/zero of=big bs=1M count=44 conv=fsync status=none || exit 2
            exec bash -c 'i=0
            while [ $i -lt 100000 ]; do
              printf "%02000d" $i > f$i || { echo "refused at $i"; exit 1; }
              i=$((i + 1))
            done'
            """, in: mountPoint, timeout: 300)
        print("[full disk] small files: \(fill.summary): \(fill.output.trimmingCharacters(in: .whitespacesAndNewlines))")
        XCTAssertTrue(fill.output.contains("refused at "), fill.transcript)
        XCTAssertTrue(fill.error.contains("No space left on device"), "the failure must be ENOSPC: \(fill.transcript)")
        XCTAssertTrue(daemon?.isRunning == true, "the daemon survives the full disk: \(daemon?.log ?? "")")
        let status = try BoundedRun.offloadfs(["status", mountPoint], timeout: 30)
        XCTAssertTrue(status.output.contains("\nproblem: -\n"), "no commit failed: \(status.transcript)")

        let remove = try BoundedRun.shell("rm -rf ./f* big && ls | wc -l", in: mountPoint, timeout: 300)
        XCTAssertTrue(remove.succeeded, "rm -rf on the full disk: \(remove.transcript)")
        XCTAssertEqual(remove.output, "0\n", remove.transcript)
        let deadline = Date().addingTimeInterval(15)
        var write: BoundedResult
        repeat {
            write = try BoundedRun.shell("rm -f after && dd if=\(root!)/eight.bin of=after bs=1M conv=fsync status=none",
                                         in: mountPoint, timeout: 60)
            if write.succeeded { break }
            usleep(250_000)
        } while Date() < deadline
        XCTAssertTrue(write.succeeded, "an 8 MiB write succeeds within 15 s of the rm: \(write.transcript)")
        for problem in daemon?.stop() ?? [] { XCTFail(problem) }
        daemon = nil
        let fsck = try BoundedRun.offloadfs(["fsck", image], timeout: 60)
        XCTAssertEqual(fsck.status, 0, fsck.transcript)
    }

    /// The disk filled by another program while the image was unmounted: the mount opens
    /// it read-only, as it must, and says to free space on that disk. It said to mount it
    /// again with a larger --size first, which gives nothing there, and the same advice
    /// came back (the admin hunt of the thirty-fifth session).
    func testAnImageOnAFullDiskSaysToFreeTheDiskNotToGrowTheImage() throws {
        // Format 2's advice: format 1 refuses a recovery on a full disk with its own
        // (`UnmountFailureTests`), and does not open read-only.
        guard MountTestFormat.isTwo else { return }
        try startDaemon(["--size", "48M"])
        try mustSucceed("cp \(references)/large.bin . && sync -f .")
        for problem in daemon?.stop() ?? [] { XCTFail(problem) }
        daemon = nil
        let fill = try BoundedRun.shell("dd if=/dev/zero of=other bs=1M status=none; sync", in: disk, timeout: 120)
        XCTAssertTrue(fill.error.contains("No space left on device"), "setup: the disk is full: \(fill.transcript)")
        defer { unlink(disk + "/other") }
        try startDaemon(["--size", "48M"])
        // The daemon logs the open's warnings after the mount appears: read the log once
        // they are there (it was read at once, and failed 2 runs in 12 beside a CI run).
        var log = daemon?.log ?? ""
        let deadline = Date().addingTimeInterval(10)
        while !log.contains("no room left for a commit"), Date() < deadline {
            usleep(50_000)
            log = daemon?.log ?? ""
        }
        XCTAssertTrue(log.contains("the disk holding the image has no room left for a commit"), log)
        XCTAssertTrue(log.contains("free space on that disk and mount it again"), log)
        XCTAssertFalse(log.contains("--size 56M gives a commit room enough"), log)
        try mustSucceed("cmp large.bin \(references)/large.bin")
    }

    private func fillAndRecover(size: String, fillMiB: Int, changingMetadataWhenFull: Bool = false) throws {
        let arguments = ["--size", size]
        try startDaemon(arguments)
        let expected = try sha256Listing(in: references, files: "small.txt medium.bin large.bin")
        try mustSucceed("mkdir refs && cp \(references)/* refs/ && sync -f .")
        XCTAssertEqual(try sha256Listing(in: mountPoint + "/refs", files: "small.txt medium.bin large.bin"), expected)
        if changingMetadataWhenFull { try mustSucceed("mkdir many && cd many && seq -f f%g 2000 | xargs touch") }

        // Fill until the writer is told there is no space. (Under the writeback cache the
        // error may come from write() or only from fsync(); conv=fsync makes dd ask.)
        let fill = try BoundedRun.shell("dd if=/dev/urandom of=fill bs=1M count=\(fillMiB) conv=fsync status=none",
                                        in: mountPoint, timeout: 180)
        let df = try BoundedRun.shell("df -k \(disk) \(mountPoint) | tail -2", timeout: 30).output
        print("[full disk] --size \(size): dd \(fill.summary): \(fill.error.trimmingCharacters(in: .whitespacesAndNewlines))\n\(df)")
        XCTAssertNotEqual(fill.ending, .timedOut, "filling must end: \(fill.transcript)")
        XCTAssertNotEqual(fill.status, 0, "writing \(fillMiB) MiB must run out of space: \(fill.transcript)")
        XCTAssertTrue(fill.error.contains("No space left on device"), "the failure must be ENOSPC: \(fill.transcript)")
        XCTAssertFalse(fill.error.contains("Input/output error"), fill.transcript)

        // The full mount still answers, with its files intact.
        XCTAssertTrue(daemon?.isRunning == true, "the daemon must survive a full disk: \(daemon?.log ?? "")")
        try mustSucceed("ls -la . refs > /dev/null && stat fill > /dev/null")
        XCTAssertEqual(try sha256Listing(in: mountPoint + "/refs", files: "small.txt medium.bin large.bin"), expected,
                       "the reference files read back unchanged while the disk is full")

        if changingMetadataWhenFull {
            // Each answered, or refused with ENOSPC having changed nothing (its commit would
            // not fit the room left: docs/ARCHITECTURE.md, "Commits that fit a full image").
            for change in ["chmod 600 f2000", "touch new", "mkdir dir"] {
                let result = try BoundedRun.shell("cd many && \(change)", in: mountPoint, timeout: 60)
                XCTAssertTrue(result.succeeded || result.error.contains("No space left on device"),
                              "\(change) on the full image: \(result.transcript)")
            }
            XCTAssertTrue(daemon?.isRunning == true, "the daemon must survive metadata changes on a full image: \(daemon?.log ?? "")")
        }

        // Space comes back after rm, within 10 s.
        try mustSucceed("rm fill")
        let deadline = Date().addingTimeInterval(10)
        var write: BoundedResult
        var attempts = 0
        repeat {
            attempts += 1
            write = try BoundedRun.shell("rm -f after && dd if=\(root!)/eight.bin of=after bs=1M conv=fsync status=none",
                                         in: mountPoint, timeout: 60)
            if write.succeeded { break }
            usleep(250_000)
        } while Date() < deadline
        print("[full disk] --size \(size): 8 MiB write after rm: \(write.summary) after \(attempts) attempt(s)")
        XCTAssertTrue(write.succeeded, "an 8 MiB write must succeed within 10 s of rm: \(write.transcript)")
        try mustSucceed("cmp after \(root!)/eight.bin")
        if changingMetadataWhenFull { try mustSucceed("cd many && chmod 600 f2000 && touch new && mkdir -p dir") }
        XCTAssertTrue(daemon?.isRunning == true, "the daemon is still running: \(daemon?.log ?? "")")

        // Unmount, mount again: everything is still there.
        for problem in daemon?.stop() ?? [] { XCTFail(problem) }
        daemon = nil
        try startDaemon(arguments)
        XCTAssertEqual(try sha256Listing(in: mountPoint + "/refs", files: "small.txt medium.bin large.bin"), expected,
                       "the reference files survive unmount and mount")
        if changingMetadataWhenFull {
            let kept = try BoundedRun.shell("ls many | wc -l && stat -c %a many/f2000 && test -d many/dir", in: mountPoint, timeout: 60)
            XCTAssertTrue(kept.succeeded, "the full image's changes survive: \(kept.transcript)")
            XCTAssertEqual(kept.output.split(separator: "\n"), ["2002", "600"], "the full image's changes survive: \(kept.transcript)")
        }
        let after = try BoundedRun.shell("cmp after \(root!)/eight.bin && test ! -e fill", in: mountPoint, timeout: 60)
        XCTAssertTrue(after.succeeded, "the 8 MiB file survives unmount and mount, fill stays removed: \(after.transcript)")
        for problem in daemon?.stop() ?? [] { XCTFail(problem) }
        daemon = nil
    }

    // MARK: Helpers

    private func startDaemon(_ arguments: [String]) throws {
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image, logPath: root + "/daemon-\(UUID()).log")
        let start = try daemon.start(arguments: arguments + ["--log-level", "warning"])
        guard case .mounted = start else {
            if case .exited(let result) = start { throw MountTestError("offloadfs did not mount: \(result.transcript)") }
            return
        }
        self.daemon = daemon
    }

    private func mustSucceed(_ script: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try BoundedRun.shell(script, in: mountPoint, timeout: 60)
        XCTAssertTrue(result.succeeded, "\(script): \(result.transcript)", file: file, line: line)
        if !result.succeeded { throw MountTestError("failed: \(script)") }
    }

    private func sha256Listing(in directory: String, files: String) throws -> String {
        let result = try BoundedRun.shell("cd '\(directory)' && sha256sum \(files)", timeout: 60)
        return result.succeeded ? result.output : "sha256sum failed: \(result.transcript)"
    }
}
