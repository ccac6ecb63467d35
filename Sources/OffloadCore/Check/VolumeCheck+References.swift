// The block references, counted a batch of blocks at a time: what the extents, the trees'
// nodes and the journal chain use, against the block tree's runs, pending frees and group
// summaries. One pass over the extents and nodes per batch keeps memory at the batch.

extension VolumeCheck {
    /// What uses a block, as the census and a run say it.
    enum BlockUse: UInt8 {
        case none = 0, data, filesystemNode, blockTreeNode, journal

        init(_ use: BlockRun.Use) {
            switch use {
            case .data: self = .data
            case .journal: self = .journal
            case .node(let tree): self = tree == TreeVolume.filesystemTreeID ? .filesystemNode
                                                 : tree == TreeVolume.blockTreeID ? .blockTreeNode : .none
            }
        }
    }

    /// One batch's per-block counts and uses.
    struct Census {
        let blocks: Range<UInt64>
        var counts: [UInt32]
        var uses: [BlockUse]
        var conflicts: [String] = []

        init(_ blocks: Range<UInt64>) {
            self.blocks = blocks
            counts = [UInt32](repeating: 0, count: blocks.count)
            uses = [BlockUse](repeating: .none, count: blocks.count)
        }

        mutating func count(_ range: Range<UInt64>, as use: BlockUse) {
            let part = range.clamped(to: blocks)
            for block in part {
                let i = Int(block - blocks.lowerBound)
                if uses[i] != .none && uses[i] != use && conflicts.count < 16 {
                    conflicts.append("block \(block) is used as \(uses[i]) and as \(use)")
                }
                uses[i] = use
                counts[i] &+= 1
            }
        }
    }

    /// 3: every batch of blocks of the space.
    mutating func checkReferences() {
        let space = self.space
        let batchBlocks = UInt64(max(1, budgetBytes / 5))
        let all = space.firstBlock..<space.endBlock
        let pending: [(generation: UInt64, blocks: Range<UInt64>)]
        do {
            pending = try space.blockTree.pendingFrees(through: BlockReferenceTree.maximumPendingGeneration)
        } catch {
            return report.add("block references not checked: the pending frees do not read (\(error))")
        }
        var start = all.lowerBound
        while start < all.upperBound {
            let batch = start..<min(all.upperBound, start + batchBlocks)
            progress?("checking block references", batch.lowerBound - all.lowerBound, UInt64(all.count))
            report.referencePasses += 1
            do {
                try check(batch, pending: pending)
            } catch {
                return report.add("block references \(batch) not checked: \(error)")
            }
            start = batch.upperBound
        }
    }

    private mutating func check(_ batch: Range<UInt64>, pending: [(generation: UInt64, blocks: Range<UInt64>)]) throws(FSError) {
        var census = Census(batch)
        try filesystem.tree.scan(from: TreeKey(object: 0, kind: ItemKind.extent.rawValue, offset: 0), through: .maximum) {
            (key, value) throws(FSError) in
            guard key.kind == ItemKind.extent.rawValue,
                  case .image(let offset, let length)? = try? ExtentItem.decode(value), length > 0 else { return true }
            census.count(ExtentReferenceChanges.blocks(offset: offset, length: length), as: .data)
            return true
        }
        try filesystem.tree.forEachNodeBlock { census.count($0..<$0 + 1, as: .filesystemNode) }
        try space.blockTree.tree.forEachNodeBlock { census.count($0..<$0 + 1, as: .blockTreeNode) }
        for segment in journalSegments where segment.length > 0 {
            census.count(ExtentReferenceChanges.blocks(offset: segment.start, length: segment.length), as: .journal)
        }
        for conflict in census.conflicts { report.add(conflict) }
        var pendingBlocks = RangeSet<UInt64>()
        for entry in pending where entry.blocks.overlaps(batch) { pendingBlocks.insert(contentsOf: entry.blocks.clamped(to: batch)) }
        // Runs against the census; what no run holds must be unused (pending blocks
        // included), except journal segments the chain grew after its commit.
        var held = RangeSet<UInt64>()
        for run in try space.blockTree.runs(overlapping: batch) {
            let blocks = run.blocks.clamped(to: batch)
            held.insert(contentsOf: blocks)
            let use = BlockUse(run.use)
            var reported = 0
            for block in blocks where reported < 4 {
                let i = Int(block - batch.lowerBound)
                let (count, found) = (census.counts[i], census.uses[i])
                // A replaced block-tree node keeps its run while its pending free waits.
                if found == .none && use == .blockTreeNode && pendingBlocks.contains(block) { continue }
                if count != run.count || found != use {
                    report.add("block \(block): the block tree says \(run.count) x \(use), the image uses it \(count) x \(found)")
                    reported += 1
                }
            }
        }
        for block in batch where !held.contains(block) {
            let i = Int(block - batch.lowerBound)
            let found = census.uses[i]
            guard found != .none else { continue }
            if pendingBlocks.contains(block) {
                report.add("block \(block): used as \(found), and a pending free")
            } else if found != .journal {
                report.add("block \(block): used as \(found), and free in the block tree")
            }
        }
        // The summaries of the groups starting in this batch.
        var group = space.blockTree.group(of: batch.lowerBound)
        if space.blockTree.blocks(of: group).lowerBound < batch.lowerBound && batch.lowerBound != space.firstBlock { group += 1 }
        while group <= space.blockTree.group(of: batch.upperBound - 1) {
            let stored = try space.blockTree.groupSummary(group), computed = try space.blockTree.computedGroupSummary(group)
            if stored != computed { report.add("group \(group): its summary says \(stored), its runs make \(computed)") }
            group += 1
        }
    }
}
