import CLinuxShims

/// Whether a mount answers requests: a `statfs` of the mount point. FUSE sends STATFS to
/// the daemon every time (the kernel caches no answer for it), so a reply proves that a
/// worker thread took a request and answered it. Used for `ready` / `READY=1` (the mount
/// answers before anyone is told it is live) and the systemd watchdog (it is pinged only
/// while requests are answered). The call blocks while the daemon does not answer, so
/// it runs on helper threads only.
enum MountProbe {
    /// The f_type of a FUSE mount (FUSE_SUPER_MAGIC).
    static let fuseMagic = 0x6573_5546

    static func answers(_ mountPoint: String) -> Bool {
        var type = 0
        return offloadfs_filesystem_type(mountPoint, &type) == 0 && type == fuseMagic
    }
}
