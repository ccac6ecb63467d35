/// Who hears how far a long commit got: the step it is in, and (done, total) in the
/// step's own units. A commit of a whole tree (the version 1 upgrade's, millions of
/// objects) reports through it, so that a waiter following the daemon's progress
/// (`ProgressMeter`, which gives up after a minute without any) sees it move.
public struct CommitProgress: Sendable {
    /// A commit's steps, in order, as a waiter reads them.
    public enum Step: String, Sendable {
        /// A whole tree stated as one generation of changes, before its commit (the
        /// upgrade's; reported per inode).
        case recording = "recording the tree"
        /// The generation's changes into the filesystem tree's items: names unlinked, then
        /// each object's attributes, xattrs, targets and ranges (reported per name and
        /// per object).
        case applying = "applying the changes"
        /// The generation's new names linked (reported per name).
        case linking = "linking the names"
        /// The filesystem tree's changed nodes written (reported per node).
        case writingNodes = "writing the tree's nodes"
        /// The block space's references and its tree written.
        case countingBlocks = "counting block references"
        /// The image synced, then the commit slot written and synced.
        case syncing = "syncing the image"
    }

    /// Units between two reports (4,096 by default: often enough for a waiter, rare
    /// enough to cost nothing).
    public let stride: Int
    public let report: @Sendable (_ done: Int, _ total: Int) -> Void
    public let began: @Sendable (Step) -> Void

    public init(stride: Int = 4096, began: @escaping @Sendable (Step) -> Void = { _ in },
                _ report: @escaping @Sendable (_ done: Int, _ total: Int) -> Void) {
        precondition(stride > 0, "a progress stride is at least 1")
        self.stride = stride
        self.began = began
        self.report = report
    }

    /// Whether `done` units is a point to report at.
    public func isDue(_ done: Int) -> Bool { done % stride == 0 }
}
