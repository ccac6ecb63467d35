#if canImport(Glibc)
import Glibc
#endif

/// Who may open the FUSE device, for the message when this user may not.
///
/// Distributions differ: udev's default rule makes /dev/fuse 0666 (every user may mount
/// through fusermount3), some systems make it 0660 with a `fuse` group, and containers
/// often get a root-only 0600 node. The fix differs accordingly: join the group, or widen
/// the mode.
struct FuseDeviceAccess {
    /// `crw-rw----`, as ls shows it.
    let modeString: String
    let owner: String
    let group: String
    /// True when the device's group may read and write it (and is not root's).
    let groupGrantsAccess: Bool
    let userName: String

    init?(path: String) {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        modeString = Self.describe(mode: status.st_mode)
        owner = Self.userName(status.st_uid) ?? "\(status.st_uid)"
        group = Self.groupName(status.st_gid) ?? "\(status.st_gid)"
        groupGrantsAccess = status.st_gid != 0 && status.st_mode & 0o060 == 0o060
        userName = Self.userName(getuid()) ?? "uid \(getuid())"
    }

    /// "(crw-rw---- root:fuse): add alice to group fuse (...)".
    var advice: String {
        let state = "(\(modeString) \(owner):\(group))"
        if groupGrantsAccess {
            return "\(state): add \(userName) to group \(group) (`usermod -aG \(group) \(userName)`, then log in again)"
        }
        return "\(state): only root may use FUSE here; `chmod 0666 /dev/fuse` (the mode udev gives it on a "
            + "standard system) lets every user mount"
    }

    static func describe(mode: mode_t) -> String {
        let type: Character
        switch mode & S_IFMT {
        case S_IFCHR: type = "c"
        case S_IFBLK: type = "b"
        case S_IFDIR: type = "d"
        case S_IFREG: type = "-"
        default: type = "?"
        }
        let letters: [Character] = ["r", "w", "x"]
        var text = String(type)
        for shift in stride(from: 8, through: 0, by: -1) {
            text.append(mode & (1 << mode_t(shift)) != 0 ? letters[(8 - shift) % 3] : "-")
        }
        return text
    }

    private static func userName(_ uid: uid_t) -> String? {
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return nil }
        return String(cString: name)
    }

    private static func groupName(_ gid: gid_t) -> String? {
        guard let entry = getgrgid(gid), let name = entry.pointee.gr_name else { return nil }
        return String(cString: name)
    }
}
