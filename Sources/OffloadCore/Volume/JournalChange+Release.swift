extension JournalChange {
    /// True when `changes` free something once committed: a name or an xattr removed, or
    /// an inode dropped (carried on any frame). `TreeVolume.releaseCount` counts them.
    static func frees(_ changes: [JournalChange]) -> Bool {
        for change in changes {
            switch change {
            case .unlink, .removeXattr, .drop: return true
            default: continue
            }
        }
        return false
    }

    /// True for the changes of an operation that gives space back once committed: one
    /// with a name removed or an xattr removed (an rm, a rename, a removexattr), or a frame
    /// of drops of forgotten inodes alone (with their orphan items' removals: a drop of an
    /// inode unlinked while the kernel referenced it removes both; counted as no release,
    /// such a frame was refused on a full image, and an `rm` of a big file gave its space
    /// back only at a later operation's frame). `TreeVolume.admit` lets those through.
    /// Drops carried on another operation's frame (`VolumeNamespace.writeFrame` adds them
    /// to any) do not make a create one.
    static func release(_ changes: [JournalChange]) -> Bool {
        var onlyDrops = true
        for change in changes {
            switch change {
            case .unlink, .removeXattr: return true
            case .drop, .orphan(_, nil): continue
            default: onlyDrops = false
            }
        }
        return onlyDrops && !changes.isEmpty
    }
}
