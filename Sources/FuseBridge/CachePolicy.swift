/// How long the kernel may trust what the daemon told it.
///
/// offloadfs is the only writer of its image while mounted, and every change to the tree
/// reaches the namespace through the kernel, which updates or invalidates its own caches
/// as it sends each request. So names, attributes and "no such name" answers stay true
/// until the kernel itself changes them, and long timeouts are safe. They matter: with
/// zero timeouts every `stat` costs a LOOKUP plus a GETATTR round trip (~25 us each).
public struct CachePolicy: Sendable, Equatable {
    /// fuse_entry_param.entry_timeout for positive lookups.
    public var entryTimeoutSeconds: Double
    /// fuse_entry_param.attr_timeout and the timeout of getattr/setattr replies.
    public var attributeTimeoutSeconds: Double
    /// entry_timeout of a negative lookup (ino 0).
    public var negativeTimeoutSeconds: Double

    public init(entryTimeoutSeconds: Double, attributeTimeoutSeconds: Double,
                negativeTimeoutSeconds: Double) {
        self.entryTimeoutSeconds = entryTimeoutSeconds
        self.attributeTimeoutSeconds = attributeTimeoutSeconds
        self.negativeTimeoutSeconds = negativeTimeoutSeconds
    }

    /// One day for everything: see the type's comment for why that is safe.
    public static let kernelIsSoleWriter = CachePolicy(
        entryTimeoutSeconds: 86_400, attributeTimeoutSeconds: 86_400, negativeTimeoutSeconds: 86_400)
}
