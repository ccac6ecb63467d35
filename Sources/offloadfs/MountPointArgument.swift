import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// A mount point as the user typed it, matched against the mount table the way umount(8)
/// and `fusermount3 -u` match it.
///
/// The kernel lists mount points canonically (absolute, no `.`/`..`, no doubled or
/// trailing slash, no symlinks), so the argument must be made canonical too. Three
/// spellings are tried, in order, and the first the mount table lists wins:
/// 1. `realpath` of the whole argument: resolves symlinks to the mount point, `./m`,
///    `m/`, `//`, `..`. It fails on a dead FUSE mount (stat answers ENOTCONN), hence:
/// 2. `realpath` of the parent directory plus the last component, which is what
///    fusermount3 does (it never stats the mount point itself);
/// 3. the argument made absolute with `//`, `/./` and trailing slashes removed.
/// When none is mounted, `path` is spelling 1 if it resolved, else spelling 3, for the
/// "is not mounted" message.
struct MountPointArgument {
    let typed: String
    /// The canonical path (see above).
    let path: String
    /// The topmost mount at `path`, if any.
    let entry: MountTable.Entry?

    init(_ typed: String, table: [MountTable.Entry] = MountTable.entries()) {
        self.typed = typed
        let candidates = Self.candidates(for: typed)
        let mounted = candidates.lazy.compactMap { candidate in
            table.last { $0.mountPoint == candidate }.map { (candidate, $0) }
        }.first
        self.path = mounted?.0 ?? candidates[0]
        self.entry = mounted?.1
    }

    /// Spellings 1-3 above, without repeats; never empty.
    static func candidates(for typed: String) -> [String] {
        let lexical = lexicallyNormalized(Preflight.absolutePath(typed))
        var result: [String] = []
        if let resolved = realPath(typed) { result.append(resolved) }
        let parent = Preflight.parentDirectory(of: lexical)
        let last = String(lexical[lexical.index(after: lexical.lastIndex(of: "/")!)...])
        if !last.isEmpty && last != "..", let resolvedParent = realPath(parent) {
            result.append(resolvedParent == "/" ? "/" + last : resolvedParent + "/" + last)
        }
        result.append(lexical)
        var seen = Set<String>()
        return result.filter { seen.insert($0).inserted }
    }

    /// An absolute path with empty and `.` components and trailing slashes removed
    /// (`..` is kept: without resolving symlinks it cannot be removed safely).
    static func lexicallyNormalized(_ absolute: String) -> String {
        let components = absolute.split(separator: "/").filter { $0 != "." }
        return "/" + components.joined(separator: "/")
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
