import OffloadCore

/// A POSIX access control list in the form the kernel passes it as the value of the
/// `system.posix_acl_access` and `system.posix_acl_default` xattrs: a little-endian u32
/// version (2), then 8-byte entries (u16 tag, u16 permissions, u32 id).
///
/// With FUSE_POSIX_ACL the kernel enforces ACLs itself, from these xattrs, but leaves
/// three jobs to the filesystem (fs/fuse/acl.c, dir.c; libfuse's FUSE_CAP_POSIX_ACL):
/// keeping the mode in step when an access ACL is set (`modeBits`), keeping the ACL in
/// step when the mode changes (`applyChmod`), and giving new inodes their parent's
/// default ACL (`maskForCreate`). Each follows the kernel function named in its comment,
/// which is what ext4, XFS and tmpfs do.
struct PosixACL: Equatable {
    enum Tag: UInt16 {
        case userObject = 0x01, user = 0x02, groupObject = 0x04, group = 0x08, mask = 0x10, other = 0x20
    }

    struct Entry: Equatable {
        var tag: Tag
        /// rwx as 4/2/1.
        var permissions: UInt32
        /// The uid or gid for `user` and `group` entries; `undefinedID` for the others.
        var id: UInt32
    }

    static let accessName = XattrItem.posixACLAccessName
    static let defaultName = XattrItem.posixACLDefaultName

    /// Whether `name` is one of the two ACLs' names.
    static func isName(_ name: [UInt8]) -> Bool { name == accessName || name == defaultName }
    static let xattrVersion: UInt32 = 2
    static let undefinedID: UInt32 = 0xFFFF_FFFF

    private(set) var entries: [Entry]

    /// Decodes and checks an ACL as posix_acl_from_xattr + posix_acl_valid do: EINVAL
    /// for a wrong version or size, an unknown tag, permission bits beyond rwx, or an
    /// ACL that is not valid (see `validate`).
    init(xattr bytes: [UInt8]) throws(FSError) {
        guard bytes.count >= 4, (bytes.count - 4) % 8 == 0 else {
            throw .invalidArgument("ACL of \(bytes.count) bytes")
        }
        // Read in place, little-endian (`cp -a` sets one on every file it copies: a copy
        // of the bytes per integer and a dictionary of counts made this 5,000 instructions).
        let decoded = bytes.withUnsafeBytes { raw -> Result<[Entry], FSError> in
            guard UInt32(littleEndian: raw.loadUnaligned(as: UInt32.self)) == Self.xattrVersion else {
                return .failure(.invalidArgument("ACL version"))
            }
            var entries: [Entry] = []
            entries.reserveCapacity((raw.count - 4) / 8)
            for offset in stride(from: 4, to: raw.count, by: 8) {
                guard let tag = Tag(rawValue: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))) else {
                    return .failure(.invalidArgument("ACL entry tag"))
                }
                let permissions = UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 2, as: UInt16.self)))
                guard permissions & ~0o7 == 0 else { return .failure(.invalidArgument("ACL entry permissions")) }
                let id = tag == .user || tag == .group
                    ? UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)) : Self.undefinedID
                entries.append(Entry(tag: tag, permissions: permissions, id: id))
            }
            return .success(entries)
        }
        self.entries = try decoded.get()
        try validate()
    }

    /// posix_acl_valid: one owner, owning-group and other entry; a mask when there are
    /// named entries (never more than one); entries in tag order. Named entries of one
    /// tag may come in any id order, and an id twice: the kernel's posix_acl_valid takes
    /// such an ACL from setxattr as it is, and ext4 and tmpfs keep it so (checked on this
    /// machine); setfacl always sends them sorted.
    private func validate() throws(FSError) {
        var owners = 0, owningGroups = 0, others = 0, named = 0, masks = 0
        for entry in entries {
            switch entry.tag {
            case .userObject: owners += 1
            case .groupObject: owningGroups += 1
            case .other: others += 1
            case .user, .group: named += 1
            case .mask: masks += 1
            }
        }
        guard owners == 1, owningGroups == 1, others == 1 else {
            throw .invalidArgument("ACL needs one owner, owning-group and other entry")
        }
        guard masks <= 1, named == 0 || masks == 1 else {
            throw .invalidArgument("ACL with named entries needs one mask entry")
        }
        for index in entries.indices.dropFirst() {
            let previous = entries[index - 1], next = entries[index]
            let ordered = previous.tag.rawValue < next.tag.rawValue
                || (previous.tag == next.tag && (next.tag == .user || next.tag == .group))
            guard ordered else { throw .invalidArgument("ACL entries out of tag order, or a one-of-a-kind entry repeated") }
        }
    }

    /// The ACL that says what `permissions` (the rwx bits of a mode) say.
    init(permissions: UInt32) {
        entries = [
            Entry(tag: .userObject, permissions: permissions >> 6 & 0o7, id: Self.undefinedID),
            Entry(tag: .groupObject, permissions: permissions >> 3 & 0o7, id: Self.undefinedID),
            Entry(tag: .other, permissions: permissions & 0o7, id: Self.undefinedID),
        ]
    }

    var xattr: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + 8 * entries.count)
        func append(_ value: UInt32, width: Int) {
            for byte in 0..<width { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * byte))) }
        }
        append(Self.xattrVersion, width: 4)
        for entry in entries {
            append(UInt32(entry.tag.rawValue), width: 2)
            append(entry.permissions, width: 2)
            append(entry.id, width: 4)
        }
        return bytes
    }

    /// posix_acl_equiv_mode: the rwx bits of the mode this ACL implies (the group bits
    /// are the mask's when there is one), and whether those bits say everything the ACL
    /// says (no named entries, no mask), in which case no ACL needs to be kept.
    var modeBits: (permissions: UInt32, equivalent: Bool) {
        var permissions: UInt32 = 0
        var equivalent = true
        for entry in entries {
            switch entry.tag {
            case .userObject: permissions |= entry.permissions << 6
            case .groupObject: permissions |= entry.permissions << 3
            case .other: permissions |= entry.permissions
            case .mask:
                permissions = permissions & ~0o070 | entry.permissions << 3
                equivalent = false
            case .user, .group: equivalent = false
            }
        }
        return (permissions, equivalent)
    }

    /// __posix_acl_chmod: a chmod sets the owner and other entries, and the mask (or the
    /// owning-group entry when there is no mask) from the new rwx bits; named entries
    /// keep their permissions, now limited by the new mask.
    mutating func applyChmod(_ permissions: UInt32) {
        let groupSlot = entries.firstIndex { $0.tag == .mask } ?? entries.firstIndex { $0.tag == .groupObject }
        for index in entries.indices {
            switch entries[index].tag {
            case .userObject: entries[index].permissions = permissions >> 6 & 0o7
            case .other: entries[index].permissions = permissions & 0o7
            default: break
            }
        }
        if let groupSlot { entries[groupSlot].permissions = permissions >> 3 & 0o7 }
    }

    /// posix_acl_create_masq: a new inode's ACL is its parent's default ACL limited by the
    /// mode the creator asked for (owner, mask or owning group, and other entries), and
    /// its mode is limited by the ACL in turn. The umask plays no part. Returns the new
    /// permission bits (set-id and sticky bits of `mode` kept) and whether the inode
    /// needs the ACL (false when the mode bits say it all).
    mutating func maskForCreate(_ mode: UInt32) -> (mode: UInt32, needsACL: Bool) {
        var mode = mode
        var needsACL = false
        for index in entries.indices {
            switch entries[index].tag {
            case .userObject:
                entries[index].permissions &= mode >> 6 & 0o7
                mode &= entries[index].permissions << 6 | ~0o700
            case .other:
                entries[index].permissions &= mode & 0o7
                mode &= entries[index].permissions | ~0o007
            case .user, .group, .mask:
                needsACL = true
            case .groupObject:
                break
            }
        }
        let groupSlot = entries.firstIndex { $0.tag == .mask } ?? entries.firstIndex { $0.tag == .groupObject }
        if let groupSlot {
            entries[groupSlot].permissions &= mode >> 3 & 0o7
            mode &= entries[groupSlot].permissions << 3 | ~0o070
        }
        return (mode, needsACL)
    }
}
