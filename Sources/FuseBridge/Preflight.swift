#if canImport(Glibc)
import Glibc
#endif

/// Checks made before mounting, so the common mistakes get one clear line instead of
/// libfuse's or the kernel's wording (or a half-created image file).
public enum Preflight {
    /// The path of the FUSE device the kernel module provides.
    public static let fuseDevicePath = "/dev/fuse"

    /// The mount point must exist and be a directory.
    public static func checkMountPoint(_ path: String) throws(MountError) {
        var status = stat()
        guard stat(path, &status) == 0 else {
            let error = errno
            if error == ENOENT { throw MountError("mount point \(path) does not exist") }
            throw MountError("cannot use mount point \(path): \(String(cString: strerror(error)))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw MountError("mount point \(path) is not a directory")
        }
    }

    /// The image may be created, but the directory that holds it must exist.
    public static func checkImagePath(_ path: String) throws(MountError) {
        let directory = parentDirectory(of: path)
        var status = stat()
        guard stat(directory, &status) == 0 else {
            throw MountError("cannot create image \(path): directory \(directory) does not exist")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw MountError("cannot create image \(path): \(directory) is not a directory")
        }
        if stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFDIR {
            throw MountError("image \(path) is a directory")
        }
    }

    /// /dev/fuse must exist and be openable read-write (by the user: fusermount3 opens it
    /// with the user's rights too). Refused, it is named with its mode and owner and
    /// what would let this user in.
    public static func checkFuseDevice(path: String = fuseDevicePath) throws(MountError) {
        let descriptor = open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            let error = errno
            if error == ENOENT {
                throw MountError("\(path) does not exist: load the fuse kernel module (modprobe fuse) "
                                 + "or give the container the device")
            }
            if error == EACCES || error == EPERM, let access = FuseDeviceAccess(path: path) {
                throw MountError("cannot open \(path): \(String(cString: strerror(error))) \(access.advice)")
            }
            throw MountError("cannot open \(path): \(String(cString: strerror(error)))")
        }
        close(descriptor)
    }

    /// "/a/b/c" -> "/a/b", "c" -> ".", "/c" -> "/".
    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    /// `path` made absolute against the current directory (no symlinks resolved).
    public static func absolutePath(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let cwd = String(nulTerminated: buffer)
        return cwd == "/" ? "/" + path : cwd + "/" + path
    }
}
