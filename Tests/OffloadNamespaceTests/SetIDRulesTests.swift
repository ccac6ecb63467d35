import Foundation
import XCTest
import OffloadCore
import OffloadSimulation
@testable import OffloadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's set-id rules a FUSE filesystem applies itself (`SetIDRules`): O_TRUNC of an
/// open, and an access ACL, each in both namespaces; and where a request's groups and
/// capabilities come from.
final class SetIDRulesTests: XCTestCase {
    private let user = RequestContext(uid: 1000, gid: 1000)
    private let root = RequestContext.root

    func testTheRulesAreTheKernels() {
        // setattr_should_drop_suidgid: S_ISUID always; S_ISGID with group-execute, or
        // for a caller outside the group; nothing for a holder of CAP_FSETID.
        XCTAssertEqual(SetIDRules.droppedByTruncatingOpen(permissions: 0o6777, fileGID: 1000, caller: user), 0o6000)
        XCTAssertEqual(SetIDRules.droppedByTruncatingOpen(permissions: 0o6767, fileGID: 1000, caller: user), 0o4000)
        XCTAssertEqual(SetIDRules.droppedByTruncatingOpen(permissions: 0o2767, fileGID: 0, caller: user), 0o2000)
        XCTAssertEqual(SetIDRules.droppedByTruncatingOpen(permissions: 0o0777, fileGID: 0, caller: user), 0)
        XCTAssertEqual(SetIDRules.droppedByTruncatingOpen(permissions: 0o6777, fileGID: 5, caller: root), 0)
        // posix_acl_update_mode: S_ISGID for a caller outside the group without CAP_FSETID.
        XCTAssertEqual(SetIDRules.droppedBySettingAccessACL(permissions: 0o6770, fileGID: 0, caller: user), 0o2000)
        XCTAssertEqual(SetIDRules.droppedBySettingAccessACL(permissions: 0o6770, fileGID: 1000, caller: user), 0)
        XCTAssertEqual(SetIDRules.droppedBySettingAccessACL(permissions: 0o6770, fileGID: 5, caller: root), 0)
    }

    func testAProcesssGroupsAndCapabilitiesComeFromItsStatus() throws {
        let status = ProcessStatus(parsing: "Name:\tsh\nGroups:\t4 24 27 \nCapEff:\t0000000000000010\nCapBnd:\t000001ffffffffff\n")
        XCTAssertEqual(status.groups, [4, 24, 27])
        XCTAssertEqual(status.effectiveCapabilities, 1 << 4)
        let caller = CallerPrivileges(RequestContext(uid: getuid(), gid: 999_999, pid: getpid(), privileges: .ofProcess))
        XCTAssertTrue(caller.isInGroup(999_999), "the request's own gid")
        let supplementary = try XCTUnwrap(ProcessStatus(pid: getpid())).groups
        for gid in supplementary { XCTAssertTrue(caller.isInGroup(gid)) }
        XCTAssertFalse(caller.isInGroup(999_998))
        if geteuid() == 0 {
            XCTAssertTrue(ProcessStatus.isInTheInitialUserNamespace(pid: getpid()), "the tests run in the initial user namespace")
            XCTAssertTrue(caller.holds(SetIDRules.capabilityFsetid, inTheInitialNamespace: true), "root holds CAP_FSETID")
            XCTAssertTrue(RequestContext(uid: 0, gid: 0, pid: getpid(), privileges: .ofProcess).maySeeTrustedAttributes)
        }
        // A process whose status cannot be read (gone, or of another pid namespace: pid 0)
        // is judged by its ids, as in-process callers are: uid 0 holds every capability.
        let gone = RequestContext(uid: 1000, gid: 1, pid: Int32.max, privileges: .ofProcess)
        XCTAssertFalse(CallerPrivileges(gone).isInGroup(2))
        XCTAssertFalse(CallerPrivileges(gone).holds(SetIDRules.capabilityFsetid, inTheInitialNamespace: false))
        XCTAssertTrue(CallerPrivileges(RequestContext(uid: 0, gid: 0, pid: 0, privileges: .ofProcess))
            .holds(SetIDRules.capabilityFsetid, inTheInitialNamespace: true))
        // A root of a user namespace holds its capabilities there, not in the initial one.
        let sleeper = try XCTUnwrap(Self.runInUserNamespace())
        defer { sleeper.terminate(); sleeper.waitUntilExit() }
        let inner = sleeper.processIdentifier
        let namespaced = CallerPrivileges(RequestContext(uid: 0, gid: 0, pid: inner, privileges: .ofProcess))
        XCTAssertFalse(ProcessStatus.isInTheInitialUserNamespace(pid: inner))
        XCTAssertTrue(namespaced.holds(SetIDRules.capabilityFsetid, inTheInitialNamespace: false))
        XCTAssertFalse(namespaced.holds(SetIDRules.capabilityFsetid, inTheInitialNamespace: true))
        XCTAssertEqual(ExtendedAttributes.visibleNames([Array("trusted.a".utf8), Array("user.b".utf8)], to: gone),
                       [Array("user.b".utf8)])
        XCTAssertEqual(ExtendedAttributes.visibleNames([Array("trusted.a".utf8)], to: root), [Array("trusted.a".utf8)])
    }

    func testAnOpenThatTruncatesTakesTheBitsInBothNamespaces() throws {
        for (format, fs) in try Self.namespaces() {
            for (name, mode, caller, flags, left) in [
                ("a", UInt32(0o6777), user, O_WRONLY | O_TRUNC, UInt32(0o777)),
                ("b", 0o2767, user, O_WRONLY | O_TRUNC, 0o2767),  // the caller's own group, no g+x
                ("c", 0o6777, root, O_WRONLY | O_TRUNC, 0o6777),
                ("d", 0o6777, user, O_WRONLY, 0o6777),
            ] {
                let (made, handle) = try fs.create(parent: .root, name: FileName(name), mode: 0o100000 | 0o644, flags: O_RDWR | O_CREAT,
                                                   context: user)
                _ = try [UInt8]("data".utf8).withUnsafeBytes { try fs.write(inode: made.inode, handle: handle, offset: 0, data: $0) }
                fs.release(inode: made.inode, handle: handle)
                _ = try fs.setattr(inode: made.inode, changes: AttributeChanges(permissions: mode), context: root)
                let opened = try fs.open(inode: made.inode, flags: flags, context: caller)
                fs.release(inode: made.inode, handle: opened)
                XCTAssertEqual(try fs.getattr(inode: made.inode).permissions, left, "\(format), \(name)")
            }
            // create over an existing file answers the attributes the kernel then keeps.
            let existing = try fs.lookup(parent: .root, name: FileName("c")).inode
            let (answered, handle) = try fs.create(parent: .root, name: FileName("c"), mode: 0o100644,
                                                   flags: O_WRONLY | O_CREAT | O_TRUNC, context: user)
            fs.release(inode: existing, handle: handle)
            XCTAssertEqual(answered.permissions, 0o777, format)
            XCTAssertEqual(answered.size, 0, format)
            XCTAssertEqual(try fs.getattr(inode: existing).permissions, 0o777, format)
        }
    }

    func testAnAccessACLTakesSetGIDInBothNamespaces() throws {
        let minimal: [UInt8] = [2, 0, 0, 0] + [1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff]
            + [4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff] + [0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        for (format, fs) in try Self.namespaces() {
            for (name, gid, caller, left) in [("outside", UInt32(0), user, UInt32(0o4750)), ("member", 1000, user, 0o6750),
                                              ("root", 0, root, 0o6750)] {
                let (made, handle) = try fs.create(parent: .root, name: FileName(name), mode: 0o100644, flags: O_RDWR | O_CREAT,
                                                   context: user)
                fs.release(inode: made.inode, handle: handle)
                _ = try fs.setattr(inode: made.inode, changes: AttributeChanges(permissions: 0o6770, gid: gid), context: root)
                try fs.setxattr(inode: made.inode, name: PosixACL.accessName, value: minimal, mode: .createOrReplace, context: caller)
                XCTAssertEqual(try fs.getattr(inode: made.inode).permissions, left, "\(format), \(name)")
            }
        }
    }

    /// A `sleep` run as root of a new user namespace (`unshare --user --map-root-user`),
    /// once it runs with its uid map written; nil when that cannot be made.
    private static func runInUserNamespace() throws -> Process? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--user", "--map-root-user", "/bin/sleep", "30"]
        try process.run()
        let pid = process.processIdentifier
        // unshare writes the map and then execs sleep: its name says the map is there.
        // (Not "sleep" anywhere in the status: "State: S (sleeping)" holds it too.)
        for _ in 0..<500 {
            if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
               status.split(separator: "\n").contains("Name:\tsleep") { return process }
            usleep(10_000)
        }
        process.terminate()
        return nil
    }

    /// A format 1 and a format 2 namespace, each on a fresh image in memory.
    private static func namespaces() throws -> [(String, any FileSystemOperations)] {
        let store = try BackingStore(storage: MemoryImageStorage(maximumBytes: 65 << 20), capacityBytes: 64 << 20)
        let one = Namespace(store: store, memoryLimiter: MemoryLimiter(limitBytes: 0))
        let volume = try TreeVolume.format(MemoryImageStorage(maximumBytes: 64 << 20), capacityBytes: 64 << 20,
                                           imageID: 7, nameHashKey: SipHash24(key0: 7, key1: 3))
        let two = try VolumeNamespace(volume: volume, memoryLimiter: MemoryLimiter(limitBytes: 0))
        return [("format 1", one), ("format 2", two)]
    }
}
