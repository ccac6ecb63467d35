import Foundation
import FuseBridge
import OffloadCore
import XCTest

/// The small library types behind the CLI and the bridge, without a mount.
final class ByteSizeTests: XCTestCase {
    func testSuffixesArePowersOf1024() throws {
        XCTAssertEqual(try ByteSize(parsing: "4096").bytes, 4096)
        XCTAssertEqual(try ByteSize(parsing: "0").bytes, 0)
        XCTAssertEqual(try ByteSize(parsing: "1K").bytes, 1024)
        XCTAssertEqual(try ByteSize(parsing: "64M").bytes, 64 << 20)
        XCTAssertEqual(try ByteSize(parsing: "64m").bytes, 64 << 20)
        XCTAssertEqual(try ByteSize(parsing: "10G").bytes, 10 << 30)
        XCTAssertEqual(try ByteSize(parsing: "2T").bytes, 2 << 40)
        XCTAssertEqual(try ByteSize(parsing: "3MiB").bytes, 3 << 20)
        XCTAssertEqual(try ByteSize(parsing: "3MB").bytes, 3 << 20)
        XCTAssertEqual(try ByteSize(parsing: " 8G ").bytes, 8 << 30)
    }

    func testMalformedSizesAreRefused() {
        XCTAssertThrowsError(try ByteSize(parsing: "")) { XCTAssertEqual($0 as? ByteSize.ParseError, .empty) }
        XCTAssertThrowsError(try ByteSize(parsing: "M"))
        XCTAssertThrowsError(try ByteSize(parsing: "-1"))
        XCTAssertThrowsError(try ByteSize(parsing: "1.5G"))
        XCTAssertThrowsError(try ByteSize(parsing: "12Q")) {
            XCTAssertEqual($0 as? ByteSize.ParseError, .unknownSuffix("12Q"))
        }
        XCTAssertThrowsError(try ByteSize(parsing: "iB"))
        XCTAssertThrowsError(try ByteSize(parsing: "16777216T")) {
            XCTAssertEqual($0 as? ByteSize.ParseError, .tooLarge("16777216T"))
        }
    }

    func testDescriptionUsesTheLargestExactUnit() {
        XCTAssertEqual(ByteSize(bytes: 64 << 20).description, "64M")
        XCTAssertEqual(ByteSize(bytes: 1 << 30).description, "1G")
        XCTAssertEqual(ByteSize(bytes: 4097).description, "4097")
        XCTAssertEqual(ByteSize(bytes: 1536).description, "1536")
    }
}

final class MountConfigurationTests: XCTestCase {
    func testFixedOptionsAndPassThrough() {
        let configuration = MountConfiguration(mountPoint: "/mnt/x", imagePath: "/data/a,b\\c.img",
                                               userOptions: ["ro,allow_other", "noatime"])
        XCTAssertEqual(configuration.libfuseArguments, [
            "offloadfs", "-o", "default_permissions,fsname=/data/a\\,b\\\\c.img,subtype=offloadfs",
            "-o", "ro,allow_other", "-o", "noatime",
        ])
        let plain = MountConfiguration(mountPoint: "/m", imagePath: "/i")
        XCTAssertFalse(plain.libfuseArguments.joined().contains("allow_other"), "allow_other only when asked for")
    }
}

final class ErrnoMappingTests: XCTestCase {
    func testEveryErrorHasItsErrno() {
        let expected: [(FSError, Int32)] = [
            (.notFound, ENOENT), (.exists, EEXIST), (.notDirectory, ENOTDIR), (.isDirectory, EISDIR),
            (.notEmpty, ENOTEMPTY), (.invalidArgument("x"), EINVAL), (.nameTooLong, ENAMETOOLONG),
            (.fileTooLarge, EFBIG), (.noSpace, ENOSPC), (.noAttribute, ENODATA), (.rangeTooSmall, ERANGE),
            (.argumentListTooLong, E2BIG), (.permissionDenied, EACCES), (.notPermitted, EPERM),
            (.tooManyLinks, EMLINK), (.symlinkLoop, ELOOP), (.noSuchOffset, ENXIO), (.notSupported, EOPNOTSUPP),
            (.badHandle, EBADF), (.readOnly, EROFS), (.busy, EBUSY), (.staleInode, ESTALE), (.io("x"), EIO),
            (.system(errno: EDQUOT, call: "fallocate"), EDQUOT),
            (.system(errno: 0, call: "bogus"), EIO), (.system(errno: -5, call: "bogus"), EIO),
        ]
        for (error, code) in expected {
            XCTAssertEqual(error.errnoValue, code, "\(error)")
        }
    }
}

final class PreflightTests: XCTestCase {
    func testMissingFuseDeviceIsOneClearLine() throws {
        // Under a fresh directory: a path such as /nonexistent/fuse depends on the machine
        // (a stray file named /nonexistent made it ENOTDIR once).
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let missing = directory + "/missing/fuse"
        XCTAssertThrowsError(try Preflight.checkFuseDevice(path: missing)) { error in
            let message = (error as? MountError)?.message ?? ""
            XCTAssertTrue(message.contains("\(missing) does not exist"), message)
            XCTAssertFalse(message.contains("\n"))
        }
    }

    func testParentDirectory() {
        XCTAssertEqual(Preflight.parentDirectory(of: "/a/b/c"), "/a/b")
        XCTAssertEqual(Preflight.parentDirectory(of: "/c"), "/")
        XCTAssertEqual(Preflight.parentDirectory(of: "c"), ".")
    }
}
