import XCTest
import OffloadCore
@testable import OffloadNamespace

/// setxattr, getxattr, listxattr, removexattr: modes, namespaces, limits.
final class XattrTests: XCTestCase {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testSetGetListRemove() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")
        let t = f.clock.advance()
        try f.fs.setxattr(inode: inode, name: bytes("user.color"), value: bytes("blue"), mode: .createOrReplace)
        try f.fs.setxattr(inode: inode, name: bytes("trusted.x"), value: [], mode: .createOrReplace)
        try f.fs.setxattr(inode: inode, name: bytes("security.selinux"), value: [0, 1, 2], mode: .createOnly)
        XCTAssertEqual(try f.fs.getattr(inode: inode).changeTime, t)
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("user.color")), bytes("blue"))
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("trusted.x")), [])
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("security.selinux")), [0, 1, 2])
        XCTAssertEqual(try f.fs.listxattr(inode: inode),
                       [bytes("user.color"), bytes("trusted.x"), bytes("security.selinux")])
        try f.fs.setxattr(inode: inode, name: bytes("user.color"), value: bytes("red"), mode: .replaceOnly)
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("user.color")), bytes("red"))
        let t2 = f.clock.advance()
        try f.fs.removexattr(inode: inode, name: bytes("trusted.x"))
        XCTAssertEqual(try f.fs.getattr(inode: inode).changeTime, t2)
        XCTAssertEqual(try f.fs.listxattr(inode: inode), [bytes("user.color"), bytes("security.selinux")])
        assertThrows(.noAttribute) { try f.fs.getxattr(inode: inode, name: self.bytes("trusted.x")) }
        assertThrows(.noAttribute) { try f.fs.removexattr(inode: inode, name: self.bytes("trusted.x")) }
    }

    func testCreateAndReplaceModes() throws {
        let f = try Fixture()
        let inode = try f.mkdir("d").inode
        assertThrows(.noAttribute) {
            try f.fs.setxattr(inode: inode, name: self.bytes("user.a"), value: [1], mode: .replaceOnly)
        }
        try f.fs.setxattr(inode: inode, name: bytes("user.a"), value: [1], mode: .createOnly)
        assertThrows(.exists) {
            try f.fs.setxattr(inode: inode, name: self.bytes("user.a"), value: [2], mode: .createOnly)
        }
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("user.a")), [1])
        // XATTR_CREATE | XATTR_REPLACE fails either way, as on ext4.
        assertThrows(.exists) {
            try f.fs.setxattr(inode: inode, name: self.bytes("user.a"), value: [3], mode: .createAndReplace)
        }
        assertThrows(.noAttribute) {
            try f.fs.setxattr(inode: inode, name: self.bytes("user.b"), value: [3], mode: .createAndReplace)
        }
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("user.a")), [1])
    }

    func testNamespacesAndLimits() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")
        assertThrows(.notSupported) {
            try f.fs.setxattr(inode: inode, name: self.bytes("system.sockprotoname"), value: [1], mode: .createOrReplace)
        }
        assertThrows(.notSupported) { try f.fs.getxattr(inode: inode, name: self.bytes("os2.x")) }
        assertInvalidArgument { try f.fs.setxattr(inode: inode, name: self.bytes("user."), value: [], mode: .createOrReplace) }
        let longest = bytes("user.") + [UInt8](repeating: 0x6E, count: 250)
        try f.fs.setxattr(inode: inode, name: longest, value: [9], mode: .createOrReplace)
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: longest), [9])
        assertThrows(.rangeTooSmall) {
            try f.fs.setxattr(inode: inode, name: longest + [0x6E], value: [9], mode: .createOrReplace)
        }
        let biggest = [UInt8](repeating: 7, count: 65536)
        try f.fs.setxattr(inode: inode, name: bytes("user.big"), value: biggest, mode: .createOrReplace)
        XCTAssertEqual(try f.fs.getxattr(inode: inode, name: bytes("user.big")), biggest)
        assertThrows(.argumentListTooLong) {
            try f.fs.setxattr(inode: inode, name: self.bytes("user.big"), value: biggest + [7], mode: .createOrReplace)
        }
    }

    func testUserAttributesOnlyOnFilesAndDirectories() throws {
        let f = try Fixture()
        let link = try f.fs.symlink(parent: .root, name: FileName("l"), target: bytes("t"), context: .user).inode
        assertThrows(.notPermitted) {
            try f.fs.setxattr(inode: link, name: self.bytes("user.a"), value: [1], mode: .createOrReplace)
        }
        assertThrows(.noAttribute) { try f.fs.getxattr(inode: link, name: self.bytes("user.a")) }
        try f.fs.setxattr(inode: link, name: bytes("trusted.a"), value: [1], mode: .createOrReplace)
        XCTAssertEqual(try f.fs.listxattr(inode: link), [bytes("trusted.a")])
    }

    func testListOfNamesIsBounded() throws {
        let f = try Fixture()
        let inode = try f.makeFile("f")
        // 256 names of 255 bytes + NUL fill the 64 KiB listxattr limit exactly.
        func name(_ i: Int) -> [UInt8] {
            bytes("user.") + Array(String(format: "%03d", i).utf8) + [UInt8](repeating: 0x78, count: 247)
        }
        for i in 0..<256 {
            try f.fs.setxattr(inode: inode, name: name(i), value: [], mode: .createOnly)
        }
        XCTAssertEqual(try f.fs.listxattr(inode: inode).reduce(0) { $0 + $1.count + 1 }, 65536)
        assertThrows(.noSpace) { try f.fs.setxattr(inode: inode, name: self.bytes("user.z"), value: [], mode: .createOnly) }
        try f.fs.setxattr(inode: inode, name: name(3), value: [1, 2], mode: .replaceOnly)
        try f.fs.removexattr(inode: inode, name: name(0))
        try f.fs.setxattr(inode: inode, name: bytes("user.z"), value: [], mode: .createOnly)
    }
}
