/// The kinds of items in format 2's filesystem tree (docs/ARCHITECTURE.md, "Keys and
/// items"; docs/FORMAT.md, "Version 2 (in progress): items"), in key order within one
/// object. A key is (object, kind, offset): an inode's items sort by kind after its
/// number, so everything about one inode is one range scan, attributes first, and a
/// directory's index items, which readdir walks, are one contiguous run.
public enum ItemKind: UInt8, Sendable, CaseIterable {
    /// (ino, inode, 0): the attributes (`InodeItem`).
    case inode = 1
    /// (ino, backReference, hash(directory, name)): the links to this inode whose name
    /// and directory hash to that value (`BackReferenceItem`).
    case backReference = 2
    /// (ino, xattr, hash(name) with the low 16 bits clear): the xattrs whose names hash
    /// there (`XattrItem`); the same key with a chunk number in the low 16 bits holds a
    /// chunk of a value too long for one item.
    case xattr = 3
    /// (ino, symlinkTarget, n): part n of a symlink's target, in order.
    case symlinkTarget = 4
    /// (ino, extent, file offset): the extent starting there (`ExtentItem`).
    case extent = 5
    /// (directory, name, hash(name)): the names in the directory with that hash (`NameItem`).
    case name = 6
    /// (directory, index, n): the directory's entry number n (`IndexItem`); readdir's cookie.
    case index = 7
    /// (`ReservedObject.orphans`, orphan, ino): an inode without names whose storage is
    /// still to be freed (`OrphanItem`).
    case orphan = 8
}

/// Object numbers that are not inodes. Inode numbers count up from 1 and never reach them.
public enum ReservedObject {
    /// The object whose items list the orphans.
    public static let orphans: UInt64 = UInt64.max - 1
    /// The first number that is not an inode's.
    public static let firstReserved: UInt64 = UInt64.max - 255
}

/// The hash-derived key offsets, from the image's name-hash key.
public struct ItemHashes: Sendable, Equatable {
    public let siphash: SipHash24
    /// The bits of every hash kept: all of them, except in tests that want collisions.
    let kept: UInt64

    public init(siphash: SipHash24) {
        self.siphash = siphash
        kept = .max
    }

    /// For tests only: hashes that keep just their top `bits` bits (1 to 48), so that
    /// names collide often enough to fill the items that share a hash (no image is ever
    /// written with them: the key in the superblock is a plain SipHash key).
    public static func weakened(_ siphash: SipHash24, bits: Int) -> ItemHashes {
        precondition((1...48).contains(bits))
        return ItemHashes(siphash: siphash, kept: ~((UInt64(1) << UInt64(64 - bits)) - 1))
    }

    private init(siphash: SipHash24, kept: UInt64) {
        self.siphash = siphash
        self.kept = kept
    }

    /// The offset of a directory's `name` item for `name`.
    public func name(_ name: [UInt8]) -> UInt64 { siphash.hash(name) & kept }

    /// The offset of an inode's back reference for the link `name` in `directory`.
    public func backReference(directory: UInt64, name: [UInt8]) -> UInt64 {
        siphash.hash(prefix: directory, name) & kept
    }

    /// The offset of an inode's xattr item for `name`: the hash's top 48 bits, leaving
    /// the low 16 for the value's chunks.
    public func xattr(_ name: [UInt8]) -> UInt64 { siphash.hash(name) & kept & ~UInt64(0xffff) }
}
