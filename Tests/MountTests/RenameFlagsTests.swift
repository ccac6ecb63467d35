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
