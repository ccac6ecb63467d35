import Foundation
import XCTest

/// What a person would type on the mount, through /bin/sh, each on a fresh mount.
final class ShellToolTests: MountedTestCase {
    /// The real tree copied in: all of /usr/include (about 9,000 files, 130 MB here).
    static let sourceTree = "/usr/include"

    func testCopyTreeInAndDiff() throws {
        try sh("cp -a \(Self.sourceTree) tree && diff -r \(Self.sourceTree) tree")
        let count = try sh("find tree | wc -l").trimmingCharacters(in: .whitespacesAndNewlines)
        let expected = try Shell.run("find \(Self.sourceTree) | wc -l").output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(count, expected)
        // cp -a keeps modes, owners, times and sizes (a directory's size is the
        // filesystem's own business, so directories are listed without it).
        let list = "find . -type d -printf '%p %m %U %G %T@ dir\\n' -o -printf '%p %m %U %G %T@ %s\\n' | sort"
        XCTAssertEqual(try sh("cd tree && " + list), try Shell.run("cd \(Self.sourceTree) && " + list).output)
    }

    func testTarRoundTrip() throws {
        try sh("""
            set -e
            mkdir unpacked back
            tar -C /usr/include/linux -cf - . | tar -C unpacked -xf -
            diff -r /usr/include/linux unpacked
            tar -C unpacked -cf archive.tar .
            tar -C back -xf archive.tar
            diff -r /usr/include/linux back
            """)
        XCTAssertEqual(try sh("tar -tf archive.tar | wc -l"), try Shell.run("cd /usr/include/linux && find . | wc -l").output)
    }

    func testCatAndAppends() throws {
        try sh("echo first > notes && echo second >> notes && echo third >> notes")
        XCTAssertEqual(try sh("cat notes"), "first\nsecond\nthird\n")
        XCTAssertEqual(try sh("wc -l < notes").trimmingCharacters(in: .whitespaces), "3\n")
    }

    func testMkdirPAndMoveAcrossDirectories() throws {
        try sh("mkdir -p a/b/c d/e && echo payload > a/b/c/file && mv a/b/c/file d/e/ && mv a/b d/e/")
        XCTAssertEqual(try sh("cat d/e/file"), "payload\n")
        XCTAssertEqual(try sh("find . | sort"),
                       ".\n./a\n./d\n./d/e\n./d/e/b\n./d/e/b/c\n./d/e/file\n")
        let moved = try fixture.sh("test -e a/b")
        XCTAssertFalse(moved.succeeded, "a/b must be gone after mv")
    }

    func testRemoveTree() throws {
        try sh("mkdir -p x/y/z && touch x/1 x/y/2 x/y/z/3 && ln -s 1 x/link && rm -rf x")
        XCTAssertEqual(try sh("ls -A"), "")
        XCTAssertEqual(try sh("stat -c %h ."), "2\n")
    }

    func testHardLinksAndSymlinks() throws {
        try sh("echo data > original && ln original hard && ln -s original soft && ln -s /etc/hostname abs")
        XCTAssertEqual(try sh("stat -c %h original"), "2\n")
        XCTAssertEqual(try sh("stat -c %i original") , try sh("stat -c %i hard"))
        XCTAssertEqual(try sh("readlink soft"), "original\n")
        XCTAssertEqual(try sh("readlink abs"), "/etc/hostname\n")
        XCTAssertEqual(try sh("cat soft"), "data\n")
        XCTAssertEqual(try sh("stat -c %F soft"), "symbolic link\n")
        try sh("rm original")
        XCTAssertEqual(try sh("cat hard; stat -c %h hard"), "data\n1\n")
        XCTAssertFalse(try fixture.sh("cat soft").succeeded, "a dangling symlink must not resolve")
    }

    func testChmodChownTouchTruncate() throws {
        // chown clears set-id bits (as on any Linux filesystem), so chmod comes second.
        try sh("echo 12345 > f && chown 1234:5678 f && chmod 4710 f")
        XCTAssertEqual(try sh("stat -c '%a %u %g' f"), "4710 1234 5678\n")
        try sh("touch -d '2001-02-03 04:05:06.789' f")
        XCTAssertEqual(try sh("stat -c '%y' f"), "2001-02-03 04:05:06.789000000 +0000\n")
        try sh("touch -a -d '1999-12-31 23:59:59' f")
        XCTAssertEqual(try sh("stat -c '%x|%y' f"),
                       "1999-12-31 23:59:59.000000000 +0000|2001-02-03 04:05:06.789000000 +0000\n")
        try sh("truncate -s 3 f")
        XCTAssertEqual(try sh("cat f"), "123")
        try sh("truncate -s 10K f")
        XCTAssertEqual(try sh("stat -c %s f; head -c 3 f; tail -c +4 f | tr -d '\\0' | wc -c"), "10240\n1230\n")
        try sh("mkdir d && chmod 1777 d && chown 42:43 d")
        XCTAssertEqual(try sh("stat -c '%a %u %g' d"), "1777 42 43\n")
    }

    func testSparseFilesShowHoles() throws {
        try sh("dd if=/dev/urandom of=sparse bs=4096 count=1 seek=2560 status=none")
        XCTAssertEqual(try sh("stat -c %s sparse"), "\(2561 * 4096)\n")
        let blocks = Int(try sh("stat -c %b sparse").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue((8...16).contains(blocks), "10 MiB with one 4 KiB block written must occupy ~8 sectors, got \(blocks)")
        let kilobytes = Int(try sh("du -k sparse | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue((4...8).contains(kilobytes), "du must not count the hole, got \(kilobytes) KiB")
        try sh("cp --sparse=always sparse copy && cmp sparse copy")
        let copyKilobytes = Int(try sh("du -k copy | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue((4...8).contains(copyKilobytes), "cp --sparse=always must keep the hole, got \(copyKilobytes) KiB")
        // Punch a hole into written data, and zero a range, through fallocate(1).
        try sh("head -c 1048576 /dev/urandom > dense && fallocate -p -o 0 -l 524288 dense")
        XCTAssertEqual(try sh("stat -c %s dense; head -c 524288 dense | tr -d '\\0' | wc -c"), "1048576\n0\n")
        let denseKilobytes = Int(try sh("du -k dense | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        XCTAssertTrue(denseKilobytes <= 520, "a punched hole must free its blocks, du says \(denseKilobytes) KiB")
    }

    func testFindAndDf() throws {
        try sh("mkdir -p p/q && touch p/a.c p/q/b.c p/q/c.h")
        XCTAssertEqual(try sh("find . -name '*.c' | sort"), "./p/a.c\n./p/q/b.c\n")
        XCTAssertEqual(try sh("find . -type d | sort"), ".\n./p\n./p/q\n")
        let df = try sh("df -P -k . | tail -1")
        let fields = df.split(separator: " ", omittingEmptySubsequences: true)
        XCTAssertEqual(fields.first.map(String.init), fixture.image, df)
        XCTAssertEqual(fields.dropFirst().first.map(String.init), "\(8 * 1024 * 1024)", "df must show --size 8G: \(df)")
        XCTAssertEqual(MountTable.type(of: mountPoint), "fuse.offloadfs")
    }

    func testExtendedAttributes() throws {
        try sh("touch f && setfattr -n user.colour -v blue f && setfattr -n user.empty f")
        XCTAssertEqual(try sh("getfattr -n user.colour --only-values f"), "blue")
        XCTAssertEqual(try sh("getfattr -d -m '^user\\.' f | grep -v '^#' | sort"), "\nuser.colour=\"blue\"\nuser.empty=\"\"\n")
        try sh("setfattr -x user.colour f")
        let missing = try fixture.sh("getfattr -n user.colour f")
        XCTAssertFalse(missing.succeeded)
        XCTAssertTrue(missing.error.contains("No such attribute"), missing.transcript)
        try sh("setfattr -n trusted.t -v 1 f && getfattr -n trusted.t --only-values f")
        // A value larger than a small first guess exercises the size-query (size 0) path.
        try sh("setfattr -n user.big -v \"$(head -c 3000 /dev/zero | tr '\\0' x)\" f")
        XCTAssertEqual(try sh("getfattr -n user.big --only-values f | wc -c"), "3000\n")
    }

    /// A write drops the file's capabilities (the kernel asks for "security.capability"
    /// before each write and removes it). Format 2 answers that question from memory for
    /// an open file once it found the attribute missing: set while the file stays open, it
    /// must still be seen by the next write.
    func testAWriteDropsCapabilitiesSetWhileTheFileIsOpen() throws {
        let capability = "0x0000000200040000000000000000000000000000"  // v2, cap_net_bind_service
        let found = try sh("""
            exec 3>f; echo a >&3
            setfattr -n security.capability -v \(capability) f
            getfattr -e hex -n security.capability f | grep =
            echo b >&3; exec 3>&-
            """)
        XCTAssertEqual(found, "security.capability=\(capability)\n")
        let after = try fixture.sh("getfattr -n security.capability f")
        XCTAssertFalse(after.succeeded, "the write kept the capability: \(after.transcript)")
        XCTAssertTrue(after.error.contains("No such attribute"), after.transcript)
        XCTAssertEqual(try sh("cat f"), "a\nb\n")
    }

    func testFifoWorks() throws {
        try sh("mkfifo pipe && test -p pipe")
        XCTAssertEqual(try sh("(echo through > pipe &) ; cat pipe"), "through\n")
        XCTAssertEqual(try sh("stat -c %F pipe"), "fifo\n")
    }

    func testOpenUnlinkedFileStillReadable() throws {
        try sh("seq 1 1000 > doomed")
        XCTAssertEqual(try sh("exec 3< doomed; rm doomed; test ! -e doomed; cat <&3 | tail -1; exec 3<&-"), "1000\n")
        XCTAssertEqual(try sh("ls -A"), "")
    }
}
