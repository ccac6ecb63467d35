import Synchronization

/// A byte budget for file data held in RAM (`Extent.inMemory`).
///
/// Callers reserve before they hold bytes and release when they drop them (overwrite,
/// shrink, truncate, free). A reservation that does not fit is refused rather than
/// failing the write: the caller then puts the bytes in the image instead. A limit of 0
/// refuses everything, so every byte goes to the image.
public final class MemoryLimiter: Sendable {
    /// The budget in bytes.
    public let limitBytes: Int
    private let used = Atomic<Int>(0)

    public init(limitBytes: Int) {
        precondition(limitBytes >= 0, "a memory limit cannot be negative")
        self.limitBytes = limitBytes
    }

    /// Bytes currently reserved.
    public var usedBytes: Int { used.load(ordering: .relaxed) }

    /// Reserves `byteCount` bytes if the budget allows it; returns false (reserving nothing)
    /// otherwise.
    public func tryReserve(_ byteCount: Int) -> Bool {
        precondition(byteCount >= 0)
        if byteCount == 0 { return true }
        var current = used.load(ordering: .relaxed)
        while true {
            guard byteCount <= limitBytes - current else { return false }
            let (exchanged, original) = used.compareExchange(
                expected: current, desired: current + byteCount,
                successOrdering: .relaxed, failureOrdering: .relaxed)
            if exchanged { return true }
            current = original
        }
    }

    /// Reserves `byteCount` bytes even past the budget: for bytes that have nowhere else
    /// to go (a read-only image cannot take them).
    public func reserveRegardless(_ byteCount: Int) {
        precondition(byteCount >= 0)
        used.add(byteCount, ordering: .relaxed)
    }

    /// Gives back bytes reserved earlier.
    public func release(_ byteCount: Int) {
        precondition(byteCount >= 0)
        if byteCount == 0 { return }
        let before = used.subtract(byteCount, ordering: .relaxed).oldValue
        precondition(before >= byteCount, "memory limiter released more than was reserved")
    }
}
