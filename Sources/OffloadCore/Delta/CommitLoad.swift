/// What the commits of the changes not yet committed may write, as the delta counts it:
/// the objects changed (each a leaf of each tree, `TreeVolume.commitBlocksPerObject`), the
/// bytes of the items they add (`itemBytes`), and the leaves elsewhere in the tree their
/// keys may land in (`scatteredLeaves`). Counted by objects alone, an object counted
/// once however many of its items changed: an inode given thousands of xattrs, or a
/// file thousands of extents, or a directory thousands of names for files it did not make
/// in that generation (hard links, renames, unlinks), was one object's commit in the
/// estimate and far more in the tree; on a full image such a commit did not fit and
/// failed the volume (docs/ARCHITECTURE.md, "Commits that fit a full image", "Items
/// counted, not only objects").
public struct CommitLoad: Equatable, Sendable {
    public var objects: Int
    /// Bytes of leaves the changes' items may fill besides their objects' own leaves.
    public var itemBytes: Int
    /// Leaves of the filesystem tree that keys changed may land in, beyond their objects'
    /// own, each written anew with a block-tree leaf for the old one
    /// (`scatteredKeyBlocks`): counted by a generation key by key
    /// (`scatteredLeafCount(of:)`), capped per generation at what the tree can have and
    /// then added up over the generations waiting (`MetadataDelta.commitLoad(after:)`,
    /// `cappingScatteredLeaves`).
    public var scatteredLeaves: Int

    public init(objects: Int = 0, itemBytes: Int = 0, scatteredLeaves: Int = 0) {
        self.objects = objects
        self.itemBytes = itemBytes
        self.scatteredLeaves = scatteredLeaves
    }

    public static func + (lhs: CommitLoad, rhs: CommitLoad) -> CommitLoad {
        CommitLoad(objects: lhs.objects + rhs.objects, itemBytes: lhs.itemBytes + rhs.itemBytes,
                   scatteredLeaves: lhs.scatteredLeaves + rhs.scatteredLeaves)
    }

    /// One generation's load with its scattered keys' leaves capped at what the tree can
    /// have when its commit runs: `leafBound` leaves committed (`leaves(belowLevel:)` of
    /// the root's level), and those the items of the changes waiting add (`waitingItemBytes`,
    /// this generation's included). Each generation's commit writes its leaves anew, the
    /// ones an earlier commit just wrote too, so the cap is per generation, not on the sum.
    func cappingScatteredLeaves(leafBound: Int, waitingItemBytes: Int) -> CommitLoad {
        let (bound, overflow) = leafBound.addingReportingOverflow(waitingItemBytes / Self.leafBytes + 1)
        var capped = self
        if !overflow { capped.scatteredLeaves = min(scatteredLeaves, bound) }
        return capped
    }

    /// The most leaves a tree whose root is at `level` can have (a leaf root: one).
    public static func leaves(belowLevel level: UInt8) -> Int {
        var leaves = 1
        for _ in 0..<level {
            let (product, overflow) = leaves.multipliedReportingOverflow(by: TreeNode.maximumChildren)
            if overflow { return .max }
            leaves = product
        }
        return leaves
    }

    /// A leaf's bytes.
    static let leafBytes = 4096
    /// An item's key and header, about.
    static let itemOverhead = 32
    /// Items written into new leaves fill them about half (a leaf splits in two halves), and
    /// each leaf written anew frees the old one, a change of the block tree: twice an
    /// item's bytes.
    static let growth = 2
    /// What each leaf a key may land in elsewhere costs, in blocks: that leaf written
    /// anew, and a leaf of the block tree for the old one's release (the leaves of a large
    /// directory or file lie anywhere in the image).
    static let scatteredKeyBlocks = 2

    /// The bytes of items `change` adds to its generation's commit, when the key it
    /// changes is new to the generation (`ObjectChanges.record` counts a key once, and an
    /// xattr's value only by what it grew): a link's three items (name, index, back
    /// reference), an xattr with its value, an extent item and a block reference for each
    /// piece of a file range, with the bytes of a RAM piece the commit keeps inline in its
    /// extent item (`inlineBytes(of:)`), a symlink's target; twice their size. Removals add
    /// none.
    /// The leaves keys land in are counted apart (`scatteredLeafCount(of:)`).
    static func itemBytes(of change: JournalChange) -> Int {
        switch change {
        case .link(_, let entry):
            return growth * 3 * (itemOverhead + entry.name.count)
        case .setXattr(_, let name, let value):
            return growth * (itemOverhead + name.count + value.count)
        case .fileRange(_, _, _, let pieces):
            return growth * pieces.reduce(0) { $0 + 2 * itemOverhead + inlineBytes(of: $1) }
        case .symlinkTarget(_, let target):
            return growth * (itemOverhead + target.count)
        case .unlink, .removeXattr, .attributes, .orphan, .drop:
            return 0
        }
    }

    /// The bytes of `piece` its extent item holds: a RAM piece of at most
    /// `ExtentItem.inlineLimit` bytes, which the commit writes into the item
    /// (`FileSystemTree.placing`; a longer one goes to a data block its write was promised,
    /// `FileBlockStore.admitsMemoryPiece`). Counted at 32 bytes an item whatever their
    /// length, the inline bytes of 20,000 appends of 1,000 bytes held back no block for
    /// the thousands of leaves their commit writes, and a full image failed that commit
    /// (the defect hunt of the thirty-fourth session).
    static func inlineBytes(of piece: FilePiece) -> Int {
        let bytes = piece.extent.memoryBytes
        return bytes <= ExtentItem.inlineLimit ? bytes : 0
    }

    /// The leaves of the filesystem tree, besides its object's inode item's, that `change`
    /// may write when its key is new to the generation and its object was not made in it
    /// (whose items lie together):
    /// - a name linked: its name item, keyed by its hash among the directory's names, and
    ///   its back reference, keyed by a hash among the child's (the index item goes after
    ///   the directory's last); unlinked: those two and the index item, wherever it is. A
    ///   create's name (the operation made the child) counts nothing at all: its new
    ///   inode's count covers it, as the creates on a full image measured it (the
    ///   caller's check);
    /// - an xattr set or removed: its item, keyed by its name's hash among the inode's;
    /// - a file range: its extents' leaf, unless it continues the file's last range of the
    ///   generation (a sequential write: the caller's check);
    /// - anything else: none.
    static func scatteredLeafCount(of change: JournalChange) -> Int {
        switch change {
        case .link: return 2
        case .unlink: return 3
        case .setXattr, .removeXattr, .fileRange: return 1
        case .attributes, .symlinkTarget, .orphan, .drop: return 0
        }
    }

    /// What `changes`, one operation's, may add at most: what admission counts for it
    /// before it joins (`TreeVolume.admit`). Each change counts as an object of its own,
    /// and every key as new and scattered but a create's name. `born`: the inode numbers
    /// it gave out.
    public static func of(_ changes: [JournalChange], born: Range<UInt64>) -> CommitLoad {
        var load = CommitLoad(objects: changes.count)
        for i in changes.indices where !changes[i].namesNewChild(born) {
            load.itemBytes += itemBytes(of: changes[i])
            if !born.contains(changes[i].object) { load.scatteredLeaves += scatteredLeafCount(of: changes[i]) }
        }
        return load
    }
}

extension JournalChange {
    /// Whether this is a name of a child the operation made (`born`).
    func namesNewChild(_ born: Range<UInt64>) -> Bool {
        switch self {
        case .link(_, let entry), .unlink(_, let entry): return born.contains(entry.child)
        default: return false
        }
    }
}
