/// Who hears how far a long commit step got: (done, total) in the step's own units. A
/// commit of a whole tree (the version 1 upgrade's, millions of objects) reports through
/// it, so that a waiter following the daemon's progress (`ProgressMeter`) sees it move.
public struct CommitProgress: Sendable {
    /// Units between two reports (4,096 by default: often enough for a waiter, rare
    /// enough to cost nothing).
    public let stride: Int
    public let report: @Sendable (_ done: Int, _ total: Int) -> Void

    public init(stride: Int = 4096, _ report: @escaping @Sendable (_ done: Int, _ total: Int) -> Void) {
        precondition(stride > 0, "a progress stride is at least 1")
        self.stride = stride
        self.report = report
    }

    /// Whether `done` units is a point to report at.
    public func isDue(_ done: Int) -> Bool { done % stride == 0 }

    /// Reports `done` of `total` as the part [start, end) of a larger scale of `scale`
    /// units, at the same stride.
    public func scaled(from start: Int, to end: Int, of scale: Int) -> CommitProgress {
        let report = self.report
        return CommitProgress(stride: stride) { done, total in
            let part = total > 0 ? (end - start) * min(done, total) / total : 0
            report(start + part, scale)
        }
    }
}
