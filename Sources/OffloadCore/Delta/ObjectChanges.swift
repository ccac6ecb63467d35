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

    /// Records one change about this object, which is not dropped (the generation checks);
    /// true when it is the first this value records, which is how the generation counts
    /// the objects it changed without looking the object up twice.
    @discardableResult
    mutating func record(_ change: JournalChange, born isBorn: Bool = false) -> Bool {
        precondition(!cleared, "a change to a dropped inode reached its object")
        let first = !recordedAny
        if first && isBorn { born = true }
        recordedAny = true
        switch change {
        case .attributes(_, let item): attributes = item
        case .link(_, let entry): names[NameKey(entry.name)] = .set(entry)
        case .unlink(_, let entry): names[NameKey(entry.name)] = .removed
        case .setXattr(_, let name, let value): xattrs[NameKey(name)] = .set(value)
        case .removeXattr(_, let name): xattrs[NameKey(name)] = .removed
        case .symlinkTarget(_, let target): symlinkTarget = target
        case .fileRange: fileRanges.append(change)
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
        return first
    }
}
