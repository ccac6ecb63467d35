import OffloadCore

extension Namespace {
    /// How much of the tree is in use right now, for `offloadfs status`.
    public struct Usage: Sendable, Equatable {
        /// Inodes the daemon holds: every named one, plus unlinked ones still open or
        /// still known to the kernel.
        public var inodes: Int
        /// Open file and directory handles.
        public var openHandles: Int
    }

    /// Takes the namespace lock once, briefly (never on the request path).
    public var usage: Usage {
        state.withLock { Usage(inodes: $0.table.count, openHandles: $0.handles.count) }
    }
}
