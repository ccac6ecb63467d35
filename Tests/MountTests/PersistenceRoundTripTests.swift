import Foundation
import XCTest

/// The image keeps the whole tree: populate through the mount with the shell tools a person
/// uses, record everything (stat fields, sha256sum, xattrs, link targets) and a `cp -a`
/// reference copy on a normal disk, end the daemon (unmount, SIGTERM, or `sync` + kill -9),
/// mount the same image again without --fresh, and compare.
final class PersistenceRoundTripTests: XCTestCase {
    private var fixture: MountFixture!
    /// A writer that keeps a file open (testSyncThenKillNineKeepsEverything).
    private var holder: Process?
    private var reference: String { fixture.root + "/reference" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        fixture = try MountFixture()
    }

    override func tearDown() {
        if let fixture {
            stopHolder()
            for problem in fixture.stop() { XCTFail(problem) }
        }
        fixture = nil
        super.tearDown()
    }

    private func stopHolder() {
        guard let holder else { return }
        if holder.isRunning { kill(holder.processIdentifier, SIGKILL) }
        holder.waitUntilExit()
        self.holder = nil
    }

    // MARK: The tree

    /// Builds the tree in the mount point. Times are set last, children before parents, so
    /// nothing moves them afterwards (chown comes before chmod: it clears set-id bits).
    static let populateScript = """
        set -e
        mkdir -p tree/a/b/c tree/deep/1/2/3/4/5 tree/sticky tree/empty-dir
        printf 'hello, persistent world\\n' > tree/a/small.txt     # < 4 KiB: may stay in RAM
        head -c 3000 /dev/urandom > tree/a/b/small.bin
        printf x > tree/deep/1/2/3/4/5/leaf
        : > tree/empty-file
        for i in $(seq 1 300); do echo "line $i" >> tree/a/appended.log; done
        head -c 6M /dev/urandom > tree/a/b/c/large.bin             # several MiB of random data
        head -c 5000 /dev/urandom | dd of=tree/a/b/c/large.bin bs=1 seek=1000000 conv=notrunc status=none
        truncate -s 10M tree/sparse                                # a file with holes
        head -c 8192 /dev/urandom | dd of=tree/sparse bs=4096 seek=100 conv=notrunc status=none
        printf 'middle' | dd of=tree/sparse bs=1 seek=5000000 conv=notrunc status=none
        head -c 100 /dev/urandom | dd of=tree/sparse bs=1 seek=10485000 conv=notrunc status=none
        truncate -s 1M tree/all-hole
        head -c 1M /dev/urandom > tree/shrunk && truncate -s 12345 tree/shrunk
        cp tree/a/b/c/large.bin tree/large-copy                    # copy_file_range: shared blocks
        setfattr -n user.colour -v blue tree/a/small.txt
        setfattr -n user.empty tree/a/small.txt
        setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\\0' x)" tree/a/b/c/large.bin
        setfattr -n user.bin -v 0x00ff10 tree/sparse
        setfattr -n user.dir -v on-a-directory tree/a
        setfattr -n trusted.t -v 1 tree/deep
        setfattr -n user.root -v yes .
        ln -s small.txt tree/a/rel-link
        ln -s /etc/hostname tree/abs-link
        ln -s does/not/exist tree/dangling
        ln -s "$(head -c 300 /dev/zero | tr '\\0' n)" tree/long-link
        ln tree/a/small.txt tree/a/b/hard1
        ln tree/a/small.txt tree/hard2
        mkfifo tree/fifo-node
        mknod tree/chardev-node c 1 3
        chown 1234:5678 tree/a/b/small.bin && chmod 4755 tree/a/b/small.bin
        chown 42:43 tree/sticky && chmod 1777 tree/sticky
        chown 0:100 tree/deep && chmod 2750 tree/deep
        chmod 0600 tree/a/b/c/large.bin
        chmod 0 tree/empty-file
        chown -h 77:88 tree/abs-link
        chown 65534:65534 tree/fifo-node
        chown 3:4 . && chmod 0751 .
        """

    /// Sets distinct mtimes and atimes on every entry (children first), from `base`.
    static func timesScript(base: Int) -> String {
        """
        set -e
        find . -depth | { n=0; while IFS= read -r p; do
            n=$((n+1))
            touch -h -m -d "@$((\(base) + n * 86461)).$n" "$p"
            touch -h -a -d "@$((\(base) + 100000000 + n * 3607)).5" "$p"
        done; }
        """
    }

    /// Changes for a second round: content, names, links, xattrs, modes.
    static let mutateScript = """
        set -e
        echo 'appended through a hard link' >> tree/hard2
        rm tree/a/b/small.bin tree/dangling
        mv tree/deep tree/a/moved-deep
        head -c 20000 /dev/urandom | dd of=tree/large-copy bs=1 seek=3000000 conv=notrunc status=none
        truncate -s 3M tree/a/b/c/large.bin
        setfattr -x user.colour tree/a/small.txt
        setfattr -n user.new -v second-round tree/a/appended.log
        chmod 0644 tree/empty-file
        rmdir tree/empty-dir
        mkdir tree/new-dir && echo new > tree/new-dir/new-file
        ln -s ../a/small.txt tree/new-dir/link
        """

    @discardableResult
    private func sh(_ script: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try fixture.sh(script)
        XCTAssertTrue(result.succeeded, "\(script)\n\(result.transcript)", file: file, line: line)
        if !result.succeeded { throw MountTestError("script failed: \(script)") }
        return result.output
    }

    /// Populates the tree, checks what the live mount shows, and returns its state
    /// (after a `cp -a` reference copy of it).
    private func populate(times base: Int) throws -> TreeState {
        try sh(Self.populateScript)
        try sh(Self.timesScript(base: base))
        try checkLiveDetails()
        return try recordReference()
    }

    /// Copies the mount to the reference directory (a normal disk) and captures the state.
    private func recordReference() throws -> TreeState {
        let state = try TreeState.capture(in: fixture.mountPoint)
        let copy = try Shell.run("rm -rf '\(reference)' && mkdir '\(reference)' && cp -a '\(fixture.mountPoint)/.' '\(reference)/'")
        XCTAssertTrue(copy.succeeded, copy.transcript)
        try assertMatchesReference("before unmounting")
        return state
    }

    private func assertMatchesReference(_ context: String, file: StaticString = #filePath, line: UInt = #line) throws {
        // diff cannot compare FIFOs or devices; the stat listing covers them.
        let diff = try Shell.run("diff -r --no-dereference -x fifo-node -x chardev-node '\(reference)' '\(fixture.mountPoint)'")
        XCTAssertTrue(diff.succeeded, "\(context): diff -r against the cp -a copy:\n\(diff.transcript)", file: file, line: line)
    }

    /// What the stat listing cannot show: holes stay holes, hard links stay one inode.
    private func checkLiveDetails(file: StaticString = #filePath, line: UInt = #line) throws {
        let sparse = Int(try sh("stat -c %b tree/sparse").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue((0...128).contains(sparse), "tree/sparse must keep its holes: \(sparse) sectors", file: file, line: line)
        let hole = Int(try sh("stat -c %b tree/all-hole").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue((0...8).contains(hole), "tree/all-hole must take no space: \(hole) sectors", file: file, line: line)
        let inodes = try sh("stat -c %i tree/a/small.txt tree/a/b/hard1 tree/hard2 | sort -u | wc -l")
        XCTAssertEqual(inodes, "1\n", "the three hard links are one inode", file: file, line: line)
        XCTAssertEqual(try sh("cat tree/a/rel-link | head -c 5"), "hello", file: file, line: line)
    }

    private enum Ending { case unmountCommand, sigterm }

    /// Ends the daemon the given way (cleanly) and checks it exited 0 and unmounted.
    private func end(_ ending: Ending, file: StaticString = #filePath, line: UInt = #line) throws {
        switch ending {
        case .unmountCommand:
            let result = try runOffloadfs(["unmount", fixture.mountPoint])
            XCTAssertEqual(result.status, 0, result.transcript, file: file, line: line)
        case .sigterm:
            let pid = try XCTUnwrap(fixture.pid)
            XCTAssertEqual(kill(pid, SIGTERM), 0, file: file, line: line)
            fixture.daemon?.waitUntilExit()
        }
        XCTAssertFalse(MountTable.isMounted(fixture.mountPoint), "\(ending) unmounts", file: file, line: line)
        for problem in fixture.stop(removingFiles: false) { XCTFail("\(ending): \(problem)", file: file, line: line) }
    }

    private func remount(_ extra: [String] = []) throws {
        try fixture.start(arguments: ["--size", "8G"] + extra, skipIfCannotMount: false)
    }

    private func checkRoundTrip(_ ending: Ending) throws {
        try fixture.start(arguments: ["--size", "8G"])
        let first = try populate(times: 1_000_000_000)

        try end(ending)
        try remount()
        TreeState.assertSame(first, try TreeState.capture(in: fixture.mountPoint), "after \(ending) and remount")
        try assertMatchesReference("after \(ending) and remount")
        try checkLiveDetails()

        // Second round on the remounted image: changes to what was recovered must persist too.
        try sh(Self.mutateScript)
        try sh(Self.timesScript(base: 1_200_000_000))
        XCTAssertEqual(try sh("tail -1 tree/a/small.txt"), "appended through a hard link\n")
        let second = try recordReference()
        XCTAssertNotEqual(first, second)
        try end(ending)
        try remount()
        TreeState.assertSame(second, try TreeState.capture(in: fixture.mountPoint), "round 2, after \(ending) and remount")
        try assertMatchesReference("round 2, after \(ending) and remount")
        XCTAssertEqual(try sh("stat -c %h tree/a/small.txt; tail -1 tree/hard2"), "3\nappended through a hard link\n")
    }

    // MARK: Tests

    func testTreeSurvivesUnmountAndRemount() throws { try checkRoundTrip(.unmountCommand) }

    func testTreeSurvivesSigtermAndRemount() throws { try checkRoundTrip(.sigterm) }

    /// `sync` pushes everything to the daemon, after which kill -9 loses nothing, even the
    /// bytes of a file still held open by a writer.
    func testSyncThenKillNineKeepsEverything() throws {
        try fixture.start(arguments: ["--size", "8G"])
        try sh(Self.populateScript)
        try sh(Self.timesScript(base: 1_000_000_000))
        // A writer that keeps its file open: with `--writeback-cache` its data would sit in
        // the kernel's cache, and `sync` would not get it to the daemon (close() would).
        // (A direct child, not a shell's background job: that would keep Shell.run waiting.)
        let heldPath = fixture.mountPoint + "/tree/held-open"
        XCTAssertTrue(FileManager.default.createFile(atPath: heldPath, contents: nil))
        let held = try FileHandle(forWritingTo: URL(fileURLWithPath: heldPath))
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/sh")
        writer.arguments = ["-c", "head -c 3M /dev/urandom; echo tail-of-held; exec sleep 600"]
        writer.standardInput = FileHandle.nullDevice
        writer.standardOutput = held
        try writer.run()
        holder = writer
        try held.close()
        try sh("""
            for i in $(seq 1 100); do [ "$(stat -c %s tree/held-open)" = 3145741 ] && break; sleep 0.1; done
            test "$(stat -c %s tree/held-open)" = 3145741
            """)
        try sh("sync")
        let before = try recordReference()

        fixture.killDaemon()
        stopHolder()
        XCTAssertTrue(MountTable.isMounted(fixture.mountPoint), "kill -9 leaves a dead mount")
        let dead = try Shell.run("ls '\(fixture.mountPoint)'")
        XCTAssertTrue(dead.error.contains("Transport endpoint is not connected"), dead.transcript)
        XCTAssertTrue(fixture.detachDeadMount(), "the dead mount detaches lazily")

        try remount()
        // Without the writeback cache every write(2) that returned is in the image, mtime
        // included, so everything compares exactly.
        let after = try TreeState.capture(in: fixture.mountPoint)
        TreeState.assertSame(before, after, "after sync, kill -9 and remount")
        try assertMatchesReference("after sync, kill -9 and remount")
        XCTAssertEqual(try sh("tail -c 13 tree/held-open"), "tail-of-held\n")
        try checkLiveDetails()
    }

    /// `--fresh` starts empty, and the empty start is itself what the image then keeps.
    func testFreshStartsEmpty() throws {
        try fixture.start(arguments: ["--size", "8G"])
        try sh("mkdir -p x/y && echo data > x/y/f && setfattr -n user.k -v v x && chmod 0700 .")
        try end(.unmountCommand)

        try remount(["--fresh"])
        XCTAssertEqual(try sh("ls -A"), "", "--fresh gives an empty root")
        XCTAssertEqual(try sh("find . | wc -l"), "1\n")
        XCTAssertEqual(try sh("stat -c %h ."), "2\n")
        XCTAssertEqual(try sh("getfattr -d -m - . | grep -c user.k || true"), "0\n", "no xattr left on the root")
        try sh("echo after > after-fresh")
        try end(.unmountCommand)

        try remount()
        XCTAssertEqual(try sh("find . | LC_ALL=C sort"), ".\n./after-fresh\n", "the fresh tree is what persisted")
        XCTAssertEqual(try sh("cat after-fresh"), "after\n")
    }

    /// fsck and info: what they say on a clean image, that fsck refuses an image in use
    /// (info shows a mounted image's live figures: CommandLinePapercutTests), that they
    /// refuse an image not theirs, and do not call a damaged image clean.
    func testFsckAndInfo() throws {
        try fixture.start(arguments: ["--size", "8G"])
        try sh("mkdir d && head -c 2M /dev/urandom > d/big && echo small > d/small && ln -s small d/link")
        for command in [["fsck"], ["fsck", "--repair"]] {
            let busy = try runOffloadfs(command + [fixture.image])
            XCTAssertNotEqual(busy.status, 0, "\(command) on a mounted image: \(busy.transcript)")
            XCTAssertTrue((busy.output + busy.error).contains("in use"), "\(command): \(busy.transcript)")
            XCTAssertFalse(busy.error.contains("Fatal error"), busy.transcript)
        }
        XCTAssertEqual(try runOffloadfs(["fsck", fixture.image]).status, 2, "fsck of an image in use cannot check")
        XCTAssertEqual(try sh("cat d/small"), "small\n", "the mount is untouched by the refused commands")
        try end(.unmountCommand)

        let clean = try runOffloadfs(["fsck", fixture.image])
        XCTAssertEqual(clean.status, 0, "fsck after a clean unmount: \(clean.transcript)")
        let info = try runOffloadfs(["info", fixture.image])
        XCTAssertEqual(info.status, 0, info.transcript)
        let lines = info.output.split(separator: "\n")
        XCTAssertGreaterThanOrEqual(lines.count, 3, info.output)
        for line in lines {
            XCTAssertNotNil(line.range(of: #"^[^:]+: \S"#, options: .regularExpression), "not `key: value`: \(line)")
        }
        XCTAssertTrue(info.output.lowercased().contains("version"), "info shows the format version:\n\(info.output)")
        let repair = try runOffloadfs(["fsck", "--repair", fixture.image])
        XCTAssertEqual(repair.status, 0, "repair of a clean image: \(repair.transcript)")
        try remount()
        XCTAssertEqual(try sh("cat d/small; readlink d/link; stat -c %s d/big"), "small\nsmall\n2097152\n")
        try end(.unmountCommand)

        // Could not check: missing file, foreign file (left unchanged, also by --repair).
        XCTAssertEqual(try runOffloadfs(["fsck", fixture.root + "/no-such-image"]).status, 2)
        let foreign = fixture.root + "/foreign.bin"
        let bytes = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        XCTAssertTrue(FileManager.default.createFile(atPath: foreign, contents: bytes))
        for command in [["fsck"], ["fsck", "--repair"]] {
            let result = try runOffloadfs(command + [foreign])
            XCTAssertEqual(result.status, 2, "\(command) of a foreign file: \(result.transcript)")
        }
        XCTAssertEqual(FileManager.default.contents(atPath: foreign), bytes, "a foreign file is never written")
        XCTAssertNotEqual(try runOffloadfs(["info", foreign]).status, 0)

        // Damage: an image cut down to its first block is not clean.
        let damaged = fixture.root + "/damaged.img"
        XCTAssertTrue(try Shell.run("cp --sparse=always '\(fixture.image)' '\(damaged)' && truncate -s 4096 '\(damaged)'").succeeded)
        let check = try runOffloadfs(["fsck", damaged])
        XCTAssertTrue([1, 2].contains(check.status), "fsck of a truncated image must not say clean: \(check.transcript)")
        XCTAssertFalse(check.error.contains("Fatal error"), check.transcript)
    }
}

/// `sync` while writers still hold their files open, then `kill -9`: what they wrote is
/// there after a remount. (With the kernel's writeback cache this lost the data every
/// time: sync(2) returned before the WRITEs reached the daemon. It is off by default.)
final class SyncWithOpenWritersTests: XCTestCase {
    func testDataWrittenThroughOpenDescriptorsSurvivesSyncAndKillNine() throws {
        let fixture = try MountFixture()
        defer { for problem in fixture.stop() { XCTFail(problem) } }
        try fixture.start(arguments: ["--size", "1G"])
        let pid = try XCTUnwrap(fixture.pid)
        // Python keeps the descriptors open across sync and the kill.
        let script = """
            import os, sys, hashlib, signal
            sums = []
            fds = []
            for j in range(4):
                data = os.urandom(700000 + 1000 * j)
                fd = os.open("f%d" % j, os.O_RDWR | os.O_CREAT, 0o644)
                os.pwrite(fd, data, 0)
                fds.append(fd)
                sums.append("%s  f%d\\n" % (hashlib.sha256(data).hexdigest(), j))
            open(sys.argv[1], "w").write("".join(sums))
            os.sync()
            os.kill(int(sys.argv[2]), signal.SIGKILL)
            """
        let sums = fixture.root + "/sums"
        let run = try fixture.sh("python3 -c '\(script)' '\(sums)' \(pid)")
        XCTAssertTrue(run.succeeded, run.transcript)
        fixture.killDaemon()  // already killed by the script: this waits for it
        XCTAssertTrue(fixture.detachDeadMount(), "the dead mount detaches lazily")
        try fixture.start(arguments: ["--size", "1G"])
        let check = try fixture.sh("sha256sum -c '\(sums)'")
        XCTAssertTrue(check.succeeded, "data written before sync was lost:\n\(check.transcript)")
    }
}
