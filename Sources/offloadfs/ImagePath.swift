import ArgumentParser
import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// The image path as given on the command line, made absolute, with a symbolic link as
/// its last component followed (as every tool follows it).
///
/// The store opens the image with O_NOFOLLOW, so that a link swapped in later is never
/// followed by surprise; resolving the link here, once, keeps that and still lets people
/// keep images behind links. The resolved path is what the mount shows as its source, so
/// `df`, `offloadfs unmount` and `info` name the real file. A dangling link is refused
/// rather than followed to create a new image: it usually points at a disk that is not
/// mounted or a file that moved, and a fresh empty image there would hide the mistake
/// (an empty file at the target is a new image, so `touch` says "start one here").
enum ImagePath {
    static func resolve(_ typed: String) throws(MountError) -> String {
        let path = canonicalDirectory(of: Preflight.absolutePath(typed))
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFLNK else { return path }
        if let resolved = MountPointArgument.realPath(path) { return resolved }
        let error = errno
        let target = linkTarget(path) ?? "?"
        if error == ENOENT {
            throw MountError("image \(path) is a symbolic link to \(target), which does not exist "
                             + "(to start a new image there, create it first: touch it, or name it directly)")
        }
        throw MountError("image \(path) is a symbolic link to \(target), which cannot be followed: "
                         + String(cString: strerror(error)))
    }

    /// `path` with its directory's real path (`.`, `..`, doubled slashes and links in the
    /// directories resolved, as the kernel resolves them), its last component as typed:
    /// the image may not exist yet. `./img` and `sub/../img` were kept as typed, and the
    /// unmount, which compares the mount's source with the daemon's open file, took such an
    /// image for one moved while mounted (the admin hunt of the thirty-fifth session).
    /// Unchanged when the directory cannot be resolved (the open then says why).
    static func canonicalDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        let name = path[path.index(after: slash)...]
        guard !name.isEmpty, name != ".", name != ".." else { return MountPointArgument.realPath(path) ?? path }
        let directory = slash == path.startIndex ? "/" : String(path[..<slash])
        guard let real = MountPointArgument.realPath(directory) else { return path }
        return (real == "/" ? "" : real) + "/" + name
    }

    private static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return nil }
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `resolve`, or its reason on stderr and exit status `status`.
    static func resolveOrExit(_ typed: String, status: Int32) throws -> String {
        do {
            return try resolve(typed)
        } catch {
            printError(error.message)
            throw ExitCode(status)
        }
    }
}
