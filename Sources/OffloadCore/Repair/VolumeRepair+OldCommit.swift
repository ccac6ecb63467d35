extension VolumeRepair {
    /// What repair must not write over, and what it will find damaged, read from the
    /// commit it starts from: both trees read with `TreeSalvage` (the block tree first,
    /// whose runs of filesystem-tree nodes find the leaves under a damaged internal node).
    struct OldCommit {
        /// Every block the commit uses, as far as it reads: both trees' nodes, the block
        /// tree's runs and pending frees, the readable extents inside the space, the
        /// journal chain.
        var used = RangeSet<UInt64>()
        /// What of `used` the commit's trees and journal reach as they read: both trees'
        /// nodes, the readable extents inside the space, the journal chain, and, when the
        /// filesystem tree has damage, the block tree's runs of its nodes (where repair
        /// looks for the leaves under a damaged node). Not the block tree's other runs or
        /// its pending frees (the previous commit's), which damage may stretch over every
        /// block: repair's room when `used` leaves none.
        var reachable = RangeSet<UInt64>()
        /// The filesystem tree's nodes by the block tree's runs.
        var filesystemNodes = RangeSet<UInt64>()
        var filesystemDamages: [TreeSalvage.Damage] = []
        var blockTreeDamages: [TreeSalvage.Damage] = []
        /// Journal frames after the commit (not replayed by repair).
        var framesAfter = 0
        /// The sequence number after the journal chain's last frame.
        var nextSequence: UInt64 = 0
        /// The extents whose bytes reach past `cut` (when `read` is given one), as the
        /// bytes of each file they lose.
        var cutOff: [FileChange] = []

        /// True when a node of either tree does not read.
        var hasNodeDamage: Bool { !filesystemDamages.isEmpty || !blockTreeDamages.isEmpty }

        /// `cut`: the byte where an image file cut short ended (`restoreCutShortEnd`).
        static func read(_ storage: any ImageStorage, _ slot: CommitSlot, cut: UInt64? = nil,
                         progress: VolumeCheck.Progress?) throws(FSError) -> OldCommit {
            var old = OldCommit()
            // (A capacity of less than the slots' two blocks, which the check reports,
            // leaves no space, not a range that cannot be.)
            let space = TreeVolume.firstSpaceBlock..<max(TreeVolume.firstSpaceBlock, slot.capacityBytes >> BackingStore.blockShift)
            let io = ImageStoragePageIO(storage: storage)
            func use(_ blocks: Range<UInt64>, reached: Bool = false) {
                let inside = blocks.clamped(to: space)
                guard !inside.isEmpty else { return }
                old.used.insert(contentsOf: inside)
                if reached { old.reachable.insert(contentsOf: inside) }
            }
            progress?("reading the block tree", 0, 0)
            var blockTree = TreeSalvage(io: io, imageID: slot.imageID, treeID: TreeVolume.blockTreeID, blocks: space)
            try blockTree.walk(slot.blockTree, node: { use($0..<$0 + 1, reached: true) }) { (key, value) throws(FSError) in
                if key.kind == BlockReferenceTree.runKind, key.object < BlockReferenceTree.pendingFreeBase,
                   let run = try? BlockReferenceTree.run(key, value) {
                    use(run.blocks)
                    if run.use == .node(tree: TreeVolume.filesystemTreeID) {
                        old.filesystemNodes.insert(contentsOf: run.blocks.clamped(to: space))
                    }
                } else if key.kind == BlockReferenceTree.pendingFreeKind, key.object >= BlockReferenceTree.pendingFreeBase,
                          value.count == 8 {
                    var r = ByteReader(value)
                    if let length = try? r.u64(), length <= space.upperBound, key.offset < space.upperBound {
                        use(key.offset..<min(space.upperBound, key.offset + length))
                    }
                }
            }
            old.blockTreeDamages = blockTree.damages
            progress?("reading the filesystem tree", 0, 0)
            var filesystem = TreeSalvage(io: io, imageID: slot.imageID, treeID: TreeVolume.filesystemTreeID, blocks: space)
            filesystem.candidates = old.filesystemNodes
            var items: UInt64 = 0
            try filesystem.walk(slot.filesystemTree, node: { use($0..<$0 + 1, reached: true) }) { (key, value) throws(FSError) in
                items += 1
                if items % 65_536 == 0 { progress?("reading the filesystem tree", items, 0) }
                guard key.kind == ItemKind.extent.rawValue, case .image(let offset, let length)? = try? ExtentItem.decode(value),
                      length > 0, offset <= UInt64.max - length else { return }
                // An extent that does not lie wholly inside the space is removed by the name
                // pass whatever else holds (`NameRepair`), so its bytes are no file's: its
                // blocks are not the old commit's to keep. (Clamped to the space, one such
                // extent claimed every block and left the rebuilt trees no room.)
                let blocks = ExtentReferenceChanges.blocks(offset: offset, length: length)
                if blocks.lowerBound >= space.lowerBound && blocks.upperBound <= space.upperBound { use(blocks, reached: true) }
                if let cut, offset + length > cut, key.object < ReservedObject.firstReserved, key.offset <= UInt64.max - length {
                    let lost = key.offset + (cut > offset ? cut - offset : 0)
                    old.cutOff.append(FileChange(inode: key.object, what: .cutOff(offset: lost, end: key.offset + length)))
                }
            }
            old.filesystemDamages = filesystem.damages
            if !old.filesystemDamages.isEmpty { old.reachable.formUnion(old.filesystemNodes) }
            let journal = SlotJournal(storage, slot) { frame, _ in
                if case .success(let frame) = frame, frame.generation > slot.generation { old.framesAfter += 1 }
                return true
            }
            for segment in journal.segments where segment.length > 0 {
                use(ExtentReferenceChanges.blocks(offset: segment.start, length: segment.length), reached: true)
            }
            old.nextSequence = journal.nextSequence
            return old
        }

        /// One line per damaged node: where it was, and what became of the items under it.
        func describeDamage() -> [String] {
            var lines: [String] = []
            for damage in filesystemDamages {
                let range = "keys \(damage.lower) to \(damage.upper.map { "\($0)" } ?? "the end")"
                if damage.level == 0 {
                    lines.append("filesystem tree: the leaf at block \(damage.block) (\(range)) does not read (\(damage.why)); its items are lost")
                } else if damage.recoveredLeaves > 0 {
                    lines.append("filesystem tree: the node at block \(damage.block), level \(damage.level) (\(range)) does not read (\(damage.why)); "
                                 + "\(damage.recoveredLeaves) leaves under it were found through the block tree")
                } else {
                    lines.append("filesystem tree: the node at block \(damage.block), level \(damage.level) (\(range)) does not read (\(damage.why)); "
                                 + "no leaf under it was found: its items are lost")
                }
            }
            for damage in blockTreeDamages {
                lines.append("block tree: the node at block \(damage.block), level \(damage.level) does not read (\(damage.why))")
            }
            return lines
        }
    }
}
