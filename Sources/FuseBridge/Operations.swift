import CFuse
import OffloadNamespace

/// The single table of C callbacks libfuse calls, one line per operation.
///
/// Each entry is a `@convention(c)` closure that captures nothing (C function pointers
/// cannot carry context) and only forwards to a handler; handlers reach the filesystem
/// through `BridgeContext.of(request)`. The closures live in this library, never in a
/// `main.swift`, whose top-level closures are MainActor-isolated and crash under Swift 6
/// when a libfuse worker thread calls them.
///
/// libfuse never passes a NULL request; the `guard let` only keeps a broken libfuse from
/// turning into a trap. Operations left nil (access, locks, bmap, ioctl, poll, write_buf)
/// get libfuse's ENOSYS, which the kernel remembers: `default_permissions` covers access,
/// and the kernel keeps locks locally.
enum Operations {
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
        ops.lookup = { r, parent, name in if let r { NameHandlers.lookup(r, parent, name) } }
        ops.forget = { r, ino, lookups in if let r { NameHandlers.forget(r, ino, lookups) } }
        ops.forget_multi = { r, count, forgets in if let r { NameHandlers.forgetMulti(r, count, forgets) } }
        ops.getattr = { r, ino, _ in if let r { NameHandlers.getattr(r, ino) } }
        ops.setattr = { r, ino, attr, toSet, fi in if let r { NameHandlers.setattr(r, ino, attr, toSet, fi) } }
        ops.readlink = { r, ino in if let r { NameHandlers.readlink(r, ino) } }
        ops.mknod = { r, parent, name, mode, rdev in if let r { NameHandlers.mknod(r, parent, name, mode, rdev) } }
        ops.mkdir = { r, parent, name, mode in if let r { NameHandlers.mkdir(r, parent, name, mode) } }
        ops.unlink = { r, parent, name in if let r { NameHandlers.unlink(r, parent, name) } }
        ops.rmdir = { r, parent, name in if let r { NameHandlers.rmdir(r, parent, name) } }
        ops.symlink = { r, target, parent, name in if let r { NameHandlers.symlink(r, target, parent, name) } }
        ops.rename = { r, parent, name, newParent, newName, flags in
            if let r { NameHandlers.rename(r, parent, name, newParent, newName, flags) }
        }
        ops.link = { r, ino, newParent, newName in if let r { NameHandlers.link(r, ino, newParent, newName) } }
        ops.open = { r, ino, fi in if let r { FileHandlers.open(r, ino, fi) } }
        ops.create = { r, parent, name, mode, fi in if let r { FileHandlers.create(r, parent, name, mode, fi) } }
        ops.read = { r, ino, size, off, fi in if let r { FileHandlers.read(r, ino, size, off, fi) } }
        ops.write = { r, ino, buf, size, off, fi in if let r { FileHandlers.write(r, ino, buf, size, off, fi) } }
        ops.flush = { r, ino, fi in if let r { FileHandlers.flush(r, ino, fi) } }
        ops.release = { r, ino, fi in if let r { FileHandlers.release(r, ino, fi) } }
        ops.fsync = { r, ino, dataSync, fi in if let r { FileHandlers.fsync(r, ino, dataSync, fi) } }
        ops.fallocate = { r, ino, mode, off, len, fi in if let r { FileHandlers.fallocate(r, ino, mode, off, len, fi) } }
        ops.lseek = { r, ino, off, whence, fi in if let r { FileHandlers.lseek(r, ino, off, whence, fi) } }
        ops.copy_file_range = { r, inIno, inOff, inFi, outIno, outOff, outFi, len, flags in
            if let r { FileHandlers.copyFileRange(r, inIno, inOff, inFi, outIno, outOff, outFi, len, flags) }
        }
        ops.opendir = { r, ino, fi in if let r { DirectoryHandlers.opendir(r, ino, fi) } }
        ops.readdir = { r, ino, size, off, fi in if let r { DirectoryHandlers.readdir(r, ino, size, off, fi) } }
        ops.readdirplus = { r, ino, size, off, fi in if let r { DirectoryHandlers.readdirplus(r, ino, size, off, fi) } }
        ops.releasedir = { r, ino, fi in if let r { DirectoryHandlers.releasedir(r, ino, fi) } }
        ops.fsyncdir = { r, ino, dataSync, fi in if let r { DirectoryHandlers.fsyncdir(r, ino, dataSync, fi) } }
        ops.statfs = { r, ino in if let r { XattrHandlers.statfs(r, ino) } }
        ops.setxattr = { r, ino, name, value, size, flags in
            if let r { XattrHandlers.setxattr(r, ino, name, value, size, flags) }
        }
        ops.getxattr = { r, ino, name, size in if let r { XattrHandlers.getxattr(r, ino, name, size) } }
        ops.listxattr = { r, ino, size in if let r { XattrHandlers.listxattr(r, ino, size) } }
        ops.removexattr = { r, ino, name in if let r { XattrHandlers.removexattr(r, ino, name) } }
        return ops
    }
}
