#if canImport(Glibc)
import Glibc
#endif

/// Mounts as /proc/self/mountinfo lists them: with the device number (which names a
/// mount's status socket, see `RuntimeDirectory`) and the super options (FUSE's
/// `user_id=` names the mount's owner), neither of which /proc/self/mounts shows.
///
/// Reading this file never touches the mounts themselves, so a hung daemon cannot make
/// `offloadfs status` or `unmount` hang here.
struct MountInfo: Equatable {
    /// "MAJOR:MINOR" of the mount's device.
    var device: String
    var mountPoint: String
    var type: String
    var source: String
    var mountOptions: [String]
    var superOptions: [String]

    /// The uid FUSE records as the mount's owner (the user who mounted it).
    var ownerUID: UInt32? {
        superOptions.lazy.compactMap { $0.hasPrefix("user_id=") ? UInt32($0.dropFirst(8)) : nil }.first
    }

    var isOffloadfs: Bool { type == "fuse.offloadfs" }

    static func entries(path: String = "/proc/self/mountinfo") -> [MountInfo] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var result: [MountInfo] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            if let entry = parse(String(cString: line)) { result.append(entry) }
        }
        return result
    }

    /// One line: `ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`.
    static func parse(_ line: String) -> MountInfo? {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true).map {
            $0.hasSuffix("\n") ? $0.dropLast() : $0
        }
        guard let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 2 < fields.count else { return nil }
        return MountInfo(device: String(fields[2]), mountPoint: MountTable.unescape(fields[4]),
                         type: String(fields[dash + 1]), source: MountTable.unescape(fields[dash + 2]),
                         mountOptions: fields[5].split(separator: ",").map(String.init),
                         superOptions: dash + 3 < fields.count ? fields[dash + 3].split(separator: ",").map(String.init) : [])
    }

    /// The offloadfs mount at `path` (the topmost one), `path` spelt as umount(8) accepts
    /// it (`MountPointArgument`: relative, trailing slash, through a symlink).
    static func offloadfsMount(at path: String, in entries: [MountInfo] = entries()) -> MountInfo? {
        for candidate in MountPointArgument.candidates(for: path) {
            if let entry = entries.last(where: { $0.mountPoint == candidate }) { return entry.isOffloadfs ? entry : nil }
        }
        return nil
    }
}
