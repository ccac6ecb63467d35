import XCTest

/// renameat2(2) flags through the mount. Neither coreutils 9.1 nor Swift's Glibc module
/// offers renameat2, so the calls go through Python's ctypes, as a person would script it.
final class RenameFlagsTests: MountedTestCase {
    func testNoReplaceAndExchange() throws {
        let output = try sh("""
            set -e
            mkdir d
            echo A > a; echo B > b; echo C > d/c
            python3 - <<'PY'
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            AT_FDCWD, NOREPLACE, EXCHANGE = -100, 1, 2
            def rename2(old, new, flags):
                if libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags) == 0:
                    return "ok"
                return os.strerror(ctypes.get_errno())
            print("noreplace onto b:", rename2("a", "b", NOREPLACE))
            print("noreplace to new:", rename2("a", "n", NOREPLACE))
            print("exchange n and b:", rename2("n", "b", EXCHANGE))
            print("exchange missing:", rename2("n", "missing", EXCHANGE))
            print("exchange file and dir:", rename2("b", "d", EXCHANGE))
            print("both flags:", rename2("n", "b", NOREPLACE | EXCHANGE))
            PY
            echo "n=$(cat n) b/c=$(cat b/c) d=$(cat d)"
            """)
        XCTAssertEqual(output, """
            noreplace onto b: File exists
            noreplace to new: ok
            exchange n and b: ok
            exchange missing: No such file or directory
            exchange file and dir: ok
            both flags: Invalid argument
            n=B b/c=C d=A

            """)
    }
}

/// A file replaced by a rename, or unlinked, stays readable by whoever reached it before:
/// the kernel may open it after the rename (its path looked up before), or again through
/// `/proc/PID/fd` of an `O_PATH` descriptor. ext4 and tmpfs give the old bytes whole;
/// offloadfs emptied such a file at once, and a reader racing an editor's or a package
/// manager's save read it empty, or as zeros up to the size it had stat'ed.
final class ReplacedFileTests: MountedTestCase {
    func testAFileOpenedAgainAfterItsUnlinkKeepsItsBytes() throws {
        let output = try sh("""
            set -e
            python3 - <<'PY'
            import os
            for n in (100, 15000, 1 << 20):
                data = bytes((i * 7 + 3) % 251 for i in range(n))
                with open("v", "wb") as f: f.write(data)
                path = os.open("v", os.O_PATH)
                os.unlink("v")
                fd = os.open("/proc/self/fd/%d" % path, os.O_RDONLY)
                read = b""
                while True:
                    chunk = os.pread(fd, 1 << 20, len(read))
                    if not chunk: break
                    read += chunk
                print(n, os.fstat(fd).st_size, read == data)
                os.close(fd); os.close(path)
            PY
            """)
        XCTAssertEqual(output, "100 100 True\n15000 15000 True\n1048576 1048576 True\n")
    }

    func testReadersOfAFileReplacedByRenamesSeeOneVersionWhole() throws {
        let output = try sh("""
            set -e
            python3 - <<'PY'
            import os, multiprocessing as mp
            def save():
                for k in range(1500):
                    with open("t.tmp", "wb") as f: f.write(b"%06d|" % k * 50)
                    os.rename("t.tmp", "target")
            def read(results):
                bad = 0
                for _ in range(3000):
                    data = open("target", "rb").read()
                    parts = set(data.split(b"|")[:-1])
                    if len(data) != 350 or len(parts) != 1: bad += 1
                results.put(bad)
            with open("target", "wb") as f: f.write(b"000000|" * 50)
            results = mp.Queue()
            workers = [mp.Process(target=save), mp.Process(target=read, args=(results,))]
            for w in workers: w.start()
            for w in workers: w.join()
            print("torn reads:", results.get())
            PY
            """)
        XCTAssertEqual(output, "torn reads: 0\n")
    }
}
