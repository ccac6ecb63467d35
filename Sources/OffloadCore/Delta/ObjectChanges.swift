/// A value one generation of the delta states for a key: set to something, or removed.
/// A key the generation does not mention is not in its map at all (older layers decide).
public enum DeltaValue<Value: Equatable & Sendable>: Equatable, Sendable {
    case set(Value)
    case removed

    public var value: Value? {
        if case .set(let value) = self { return value }
        return nil
    }
}

/// What one generation changed about one object (an inode, with its names when it is a
/// directory), as net state: the last attributes, each name's last entry or its removal,
/// each xattr's last value or removal, the last symlink target, and the file ranges in the
/// order they were written. Net state is what lets a reader put a generation over any
/// older root, including one that already holds it (reading it twice is harmless), and
/// lets a commit write each item once however often it changed.
///
/// Inode numbers are never reused (`InodeTable`), so a drop is the last change an inode
/// gets: afterwards `cleared` hides its older items and its state is empty, except for
/// the names it removed (the commit unlinks those from the tree first: the children's
/// back references to it are theirs, not its).
public struct ObjectChanges: Sendable {
    /// Dropped in this generation: nothing older of it is visible.
    public internal(set) var cleared = false
    public internal(set) var attributes: InodeItem?
    /// name -> its last entry, or removed.
    public internal(set) var names: [NameKey: DeltaValue<NamedEntry>] = [:]
    public internal(set) var xattrs: [NameKey: DeltaValue<[UInt8]>] = [:]
    public internal(set) var symlinkTarget: [UInt8]?
    /// `.fileRange` changes in the order they happened (later ones win where they overlap).
    public internal(set) var fileRanges: [JournalChange] = []

    /// Whether any change was recorded here (a value in a generation's map always has one).
    private var recordedAny = false
    /// Made in this generation: its first change here came from the operation that gave
    /// it its number (`DeltaGeneration.record`'s `born`), so no older layer holds anything
    /// of it, and its drop here leaves the generation nothing to say of it.
    var born = false

    /// Records one change about this object, which is not dropped (the generation checks).
    /// Returns whether it is the first this value records, which is how the generation
    /// counts the objects it changed without looking the object up twice, and what it adds
    /// to the commit (`CommitLoad.itemBytes(of:)` and `scatteredLeafCount(of:)`), counted
    /// once a key: a name linked again to the child it names here, or unlinked again, and
    /// an xattr set again add nothing but what its value grew. `childIsNew`: a name of a
    /// child the operation made (it adds nothing: the new inode's count covers it).
    @discardableResult
    mutating func record(_ change: JournalChange, born isBorn: Bool = false,
                         childIsNew: Bool = false) -> (first: Bool, itemBytes: Int, scatteredLeaves: Int) {
        precondition(!cleared, "a change to a dropped inode reached its object")
        let first = !recordedAny
        if first && isBorn { born = true }
        recordedAny = true
        var newKey = false
        var added = 0
        switch change {
        case .attributes(_, let item): attributes = item
        case .link(_, let entry):
            // New unless the name names this child here already: after an unlink, or a
            // create's name (counted nothing), the link writes its items.
            let previous = names.updateValue(.set(entry), forKey: NameKey(entry.name))
            newKey = !childIsNew && previous?.value?.child != entry.child
        case .unlink(_, let entry):
            newKey = names.updateValue(.removed, forKey: NameKey(entry.name)) == nil && !childIsNew
        case .setXattr(_, let name, let value):
            if case .set(let previous) = xattrs.updateValue(.set(value), forKey: NameKey(name)) {
                added = CommitLoad.growth * max(0, value.count - previous.count)
            } else {
                newKey = true
            }
        case .removeXattr(_, let name):
            newKey = xattrs.updateValue(.removed, forKey: NameKey(name)) == nil
        case .symlinkTarget(_, let target):
            if symlinkTarget == nil { added = CommitLoad.itemBytes(of: change) }
            symlinkTarget = target
        case .fileRange(_, _, let range, _):
            var continues = false
            if case .fileRange(_, _, let last, _)? = fileRanges.last { continues = last.upperBound == range.lowerBound }
            fileRanges.append(change)
            // A sequential write's extents go where the last one's did.
            if continues { added = CommitLoad.itemBytes(of: change) } else { newKey = true }
        case .drop:
            cleared = true
            attributes = nil
            if !names.isEmpty { names = names.filter { $0.value == .removed } }
            xattrs = [:]
            symlinkTarget = nil
            fileRanges = []
        case .orphan:
            preconditionFailure("orphans are kept apart from their inode's changes")
        }
        guard newKey else { return (first, added, 0) }
        // An object made in this generation has its items together.
        return (first, added + CommitLoad.itemBytes(of: change), born ? 0 : CommitLoad.scatteredLeafCount(of: change))
    }
}
