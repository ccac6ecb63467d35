import CFuse
import OffloadNamespace

/// The single table of C callbacks libfuse calls, one line per operation.
///
/// Each entry is a `@convention(c)` closure that captures nothing (C function pointers
/// cannot carry context) and only counts the request (`counted`) and forwards it to a handler; handlers reach the filesystem
/// through `BridgeContext.of(request)`. The closures live in this library, never in a
/// `main.swift`, whose top-level closures are MainActor-isolated and crash under Swift 6
/// when a libfuse worker thread calls them.
///
/// libfuse never passes a NULL request; the `guard let` only keeps a broken libfuse from
/// turning into a trap. Operations left nil (access, locks, bmap, ioctl, poll, write_buf)
/// get libfuse's ENOSYS, which the kernel remembers: `default_permissions` covers access,
/// and the kernel keeps locks locally.
enum Operations {
    /// Counts `request` in its session's `RequestCounters` and hands it on.
    @inline(__always)
    static func counted(_ request: fuse_req_t, _ operation: RequestCounters.Operation) -> fuse_req_t {
        BridgeContext.of(request).counters.count(operation)
        return request
    }

    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            guard let userdata, let conn else { return }
            Capabilities.negotiate(conn, context: BridgeContext.of(userdata: userdata))
        }
        ops.destroy = { userdata in
            guard let userdata else { return }
            BridgeContext.of(userdata: userdata).logger.info("FUSE session ended")
        }
        ops.lookup = { r, parent, name in if let r { NameHandlers.lookup(Operations.counted(r, .lookup), parent, name) } }
        ops.forget = { r, ino, lookups in if let r { NameHandlers.forget(Operations.counted(r, .forget), ino, lookups) } }
        ops.forget_multi = { r, count, forgets in if let r { NameHandlers.forgetMulti(Operations.counted(r, .forget), count, forgets) } }
        ops.getattr = { r, ino, _ in if let r { NameHandlers.getattr(Operations.counted(r, .getattr), ino) } }
        ops.setattr = { r, ino, attr, toSet, fi in if let r { NameHandlers.setattr(Operations.counted(r, .setattr), ino, attr, toSet, fi) } }
        ops.readlink = { r, ino in if let r { NameHandlers.readlink(Operations.counted(r, .readlink), ino) } }
        ops.mknod = { r, parent, name, mode, rdev in if let r { NameHandlers.mknod(Operations.counted(r, .mknod), parent, name, mode, rdev) } }
        ops.mkdir = { r, parent, name, mode in if let r { NameHandlers.mkdir(Operations.counted(r, .mkdir), parent, name, mode) } }
        ops.unlink = { r, parent, name in if let r { NameHandlers.unlink(Operations.counted(r, .unlink), parent, name) } }
        ops.rmdir = { r, parent, name in if let r { NameHandlers.rmdir(Operations.counted(r, .rmdir), parent, name) } }
        ops.symlink = { r, target, parent, name in if let r { NameHandlers.symlink(Operations.counted(r, .symlink), target, parent, name) } }
        ops.rename = { r, parent, name, newParent, newName, flags in
            if let r { NameHandlers.rename(Operations.counted(r, .rename), parent, name, newParent, newName, flags) }
        }
        ops.link = { r, ino, newParent, newName in if let r { NameHandlers.link(Operations.counted(r, .link), ino, newParent, newName) } }
        ops.open = { r, ino, fi in if let r { FileHandlers.open(Operations.counted(r, .open), ino, fi) } }
        ops.create = { r, parent, name, mode, fi in if let r { FileHandlers.create(Operations.counted(r, .create), parent, name, mode, fi) } }
        ops.read = { r, ino, size, off, fi in if let r { FileHandlers.read(Operations.counted(r, .read), ino, size, off, fi) } }
        ops.write = { r, ino, buf, size, off, fi in if let r { FileHandlers.write(Operations.counted(r, .write), ino, buf, size, off, fi) } }
        ops.flush = { r, ino, fi in if let r { FileHandlers.flush(Operations.counted(r, .flush), ino, fi) } }
        ops.release = { r, ino, fi in if let r { FileHandlers.release(Operations.counted(r, .release), ino, fi) } }
        ops.fsync = { r, ino, dataSync, fi in if let r { FileHandlers.fsync(Operations.counted(r, .fsync), ino, dataSync, fi) } }
        ops.fallocate = { r, ino, mode, off, len, fi in if let r { FileHandlers.fallocate(Operations.counted(r, .fallocate), ino, mode, off, len, fi) } }
        ops.lseek = { r, ino, off, whence, fi in if let r { FileHandlers.lseek(Operations.counted(r, .lseek), ino, off, whence, fi) } }
        ops.copy_file_range = { r, inIno, inOff, inFi, outIno, outOff, outFi, len, flags in
            if let r { FileHandlers.copyFileRange(Operations.counted(r, .copyFileRange), inIno, inOff, inFi, outIno, outOff, outFi, len, flags) }
        }
        ops.opendir = { r, ino, fi in if let r { DirectoryHandlers.opendir(Operations.counted(r, .opendir), ino, fi) } }
        ops.readdir = { r, ino, size, off, fi in if let r { DirectoryHandlers.readdir(Operations.counted(r, .readdir), ino, size, off, fi) } }
        ops.readdirplus = { r, ino, size, off, fi in if let r { DirectoryHandlers.readdirplus(Operations.counted(r, .readdirplus), ino, size, off, fi) } }
        ops.releasedir = { r, ino, fi in if let r { DirectoryHandlers.releasedir(Operations.counted(r, .releasedir), ino, fi) } }
        ops.fsyncdir = { r, ino, dataSync, fi in if let r { DirectoryHandlers.fsyncdir(Operations.counted(r, .fsyncdir), ino, dataSync, fi) } }
        ops.statfs = { r, ino in if let r { XattrHandlers.statfs(Operations.counted(r, .statfs), ino) } }
        ops.setxattr = { r, ino, name, value, size, flags in
            if let r { XattrHandlers.setxattr(Operations.counted(r, .setxattr), ino, name, value, size, flags) }
        }
        ops.getxattr = { r, ino, name, size in if let r { XattrHandlers.getxattr(Operations.counted(r, .getxattr), ino, name, size) } }
        ops.listxattr = { r, ino, size in if let r { XattrHandlers.listxattr(Operations.counted(r, .listxattr), ino, size) } }
        ops.removexattr = { r, ino, name in if let r { XattrHandlers.removexattr(Operations.counted(r, .removexattr), ino, name) } }
        return ops
    }
}
