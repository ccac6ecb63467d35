import OffloadCore

/// The kernel's rules for the set-user-ID and set-group-ID bits that reach a FUSE
/// filesystem as its own job, because the request that should clear them does not say so:
///
/// - open(2) with O_TRUNC: with FUSE_CAP_ATOMIC_O_TRUNC the kernel truncates through the
///   OPEN and then drops its own SETATTR, the one carrying the mode without the bits
///   (`fuse_do_setattr`, ATTR_OPEN). `setattr_should_drop_suidgid`: a caller without
///   CAP_FSETID loses S_ISUID, and S_ISGID when group-execute is set or it is not in
///   the file's group.
/// - setxattr of `system.posix_acl_access`: `posix_acl_update_mode` clears S_ISGID when
///   the caller is neither in the file's group nor holds CAP_FSETID. The kernel says so
///   with FUSE_SETXATTR_ACL_KILL_SGID, which libfuse 3.14's setxattr does not pass on.
///
/// ext4 and tmpfs apply both (checked on this machine). Each rule reads the caller's
/// groups and capabilities only when a set-id bit is there to lose.
public enum SetIDRules {
    static let setUID: UInt32 = 0o4000
    static let setGID: UInt32 = 0o2000
    static let groupExecute: UInt32 = 0o010
    /// Both set-id bits: a file without either needs no rule.
    public static let bits: UInt32 = setUID | setGID
    /// CAP_FSETID and CAP_SYS_ADMIN (linux/capability.h).
    static let capabilityFsetid = 4
    static let capabilitySysAdmin = 21

    /// The set-id bits an open(O_TRUNC) of a regular file with `permissions`, owned by
    /// group `fileGID`, takes away.
    public static func droppedByTruncatingOpen(permissions: UInt32, fileGID: UInt32, caller: RequestContext) -> UInt32 {
        guard permissions & bits != 0 else { return 0 }
        let privileges = CallerPrivileges(caller)
        var dropped = permissions & setUID
        // in_group_or_capable: CAP_FSETID in the caller's own user namespace will do.
        if permissions & setGID != 0 && (permissions & groupExecute != 0
            || !(privileges.isInGroup(fileGID) || privileges.holds(capabilityFsetid, inTheInitialNamespace: false))) {
            dropped |= setGID
        }
        // capable(CAP_FSETID): in the initial user namespace.
        guard dropped != 0, !privileges.holds(capabilityFsetid, inTheInitialNamespace: true) else { return 0 }
        return dropped
    }

    /// The set-id bits setting an access ACL on a file with `permissions`, owned by group
    /// `fileGID`, takes away (capable_wrt_inode_uidgid: the caller's own namespace).
    public static func droppedBySettingAccessACL(permissions: UInt32, fileGID: UInt32, caller: RequestContext) -> UInt32 {
        guard permissions & setGID != 0 else { return 0 }
        let privileges = CallerPrivileges(caller)
        guard !privileges.isInGroup(fileGID), !privileges.holds(capabilityFsetid, inTheInitialNamespace: false) else { return 0 }
        return setGID
    }
}

extension RequestContext {
    /// CAP_SYS_ADMIN in the initial user namespace: what listing `trusted.*` attributes
    /// takes (ext4's and tmpfs's `trusted` handler lists them to it alone).
    public var maySeeTrustedAttributes: Bool {
        CallerPrivileges(self).holds(SetIDRules.capabilitySysAdmin, inTheInitialNamespace: true)
    }
}

/// A request's caller as one rule asks about it, read once per decision: its groups and
/// effective capabilities. `.fromIDs` (in-process callers): uid 0 holds every capability
/// and the gid is the only group. `.ofProcess`: /proc/PID/status; when that cannot be
/// read (a process gone, a caller in another pid namespace, whose pid is 0), as
/// `.fromIDs`, which is what the kernel most likely decided too: a mode the daemon
/// changes and the kernel does not would stay cached in the kernel unchanged.
struct CallerPrivileges {
    private let caller: RequestContext
    private let status: ProcessStatus?

    init(_ caller: RequestContext) {
        self.caller = caller
        status = caller.privileges == .ofProcess ? ProcessStatus(pid: caller.pid) : nil
    }

    /// True when `gid` is the caller's group or one of its supplementary groups.
    func isInGroup(_ gid: UInt32) -> Bool {
        gid == caller.gid || (status?.groups.contains(gid) ?? false)
    }

    /// True when the caller's effective capabilities hold `capability` (its number), in
    /// its own user namespace or, with `inTheInitialNamespace`, in the initial one
    /// (`capable`: a root of a user namespace holds nothing there).
    func holds(_ capability: Int, inTheInitialNamespace: Bool) -> Bool {
        guard let status else { return caller.uid == 0 }
        guard status.effectiveCapabilities >> UInt64(capability) & 1 == 1 else { return false }
        return !inTheInitialNamespace || ProcessStatus.isInTheInitialUserNamespace(pid: caller.pid)
    }
}

/// The `Groups:` and `CapEff:` lines of /proc/PID/status (PID may name a thread).
struct ProcessStatus {
    var groups: [UInt32] = []
    var effectiveCapabilities: UInt64 = 0

    init?(pid: Int32) {
        guard pid > 0, let text = ProcText.read("/proc/\(pid)/status") else { return nil }
        self.init(parsing: text)
    }

    init(parsing text: String) {
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Groups:") {
                groups = line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
            } else if line.hasPrefix("CapEff:") {
                effectiveCapabilities = UInt64(String(line.dropFirst("CapEff:".count).filter { !$0.isWhitespace }), radix: 16) ?? 0
            }
        }
    }

    /// True when /proc/PID/uid_map maps every uid to itself: the initial user namespace.
    static func isInTheInitialUserNamespace(pid: Int32) -> Bool {
        guard let map = ProcText.read("/proc/\(pid)/uid_map") else { return false }
        return map.split(whereSeparator: { $0.isWhitespace }) == ["0", "0", "4294967295"]
    }
}
