import OffloadCore

/// An `ImageStorage` that passes every call to another one, except the calls a test
/// told it to fail: EIO or ENOSPC from a write (whole or after part of it), a reserve
/// (fallocate), a punch, a zeroing, a length change or a sync (fdatasync).
///
/// Faults are armed with `inject` and each fires on the matching calls until its count
/// runs out. A sync fault that fires once and then lets later syncs through is what
/// Linux does after writeback failed ("fsyncgate": the error is reported once, the dirty
/// pages may be gone, and the next fdatasync succeeds), so only the caller's memory of
/// the failure keeps the loss from going unnoticed.
public final class FaultInjectingStorage: ImageStorage, @unchecked Sendable {
    public enum Operation: Sendable, Equatable { case write, reserve, punch, zero, setLength, sync }

    public struct Fault: Sendable {
        public var operation: Operation
        public var error: FSError
        /// Calls of that operation to let through before the first failure.
        public var after: Int
        /// Failures to report before the fault is spent.
        public var times: Int
        /// For writes: write the first half of the bytes before failing (a short write).
        public var partial: Bool

        public init(_ operation: Operation, error: FSError, after: Int = 0, times: Int = 1, partial: Bool = false) {
            self.operation = operation
            self.error = error
            self.after = after
            self.times = times
            self.partial = partial
        }
    }

    public let inner: any ImageStorage
    private let faults = PthreadMutex<[Fault]>([])
    private let fired = PthreadMutex<[Operation: Int]>([:])

    public init(_ inner: any ImageStorage) { self.inner = inner }

    /// Arms `fault`.
    public func inject(_ fault: Fault) { faults.withLock { $0.append(fault) } }

    /// Disarms every fault.
    public func clear() { faults.withLock { $0.removeAll() } }

    /// How many calls of `operation` failed so far.
    public func failures(of operation: Operation) -> Int { fired.withLock { $0[operation] ?? 0 } }

    /// The fault that fails this call of `operation`, if any (counting it).
    private func take(_ operation: Operation) -> Fault? {
        let fault = faults.withLock { faults -> Fault? in
            guard let i = faults.firstIndex(where: { $0.operation == operation && $0.times > 0 }) else { return nil }
            if faults[i].after > 0 {
                faults[i].after -= 1
                return nil
            }
            faults[i].times -= 1
            return faults[i]
        }
        if fault != nil { fired.withLock { $0[operation, default: 0] += 1 } }
        return fault
    }

    public var name: String { inner.name }
    public var length: UInt64 { inner.length }
    public var diskBytes: UInt64 { inner.diskBytes }

    public func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer {
        try inner.map(byteCount: byteCount)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
        try inner.read(into: buffer, at: offset)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        if let fault = take(.write) {
            if fault.partial && bytes.count > 1 {
                try inner.write(UnsafeRawBufferPointer(rebasing: bytes[0..<bytes.count / 2]), at: offset)
            }
            throw fault.error
        }
        try inner.write(bytes, at: offset)
    }

    public func reserve(_ range: Range<UInt64>) throws(FSError) {
        if let fault = take(.reserve) { throw fault.error }
        try inner.reserve(range)
    }

    public func punch(_ range: Range<UInt64>) throws(FSError) {
        if let fault = take(.punch) { throw fault.error }
        try inner.punch(range)
    }

    public func zero(_ range: Range<UInt64>) throws(FSError) {
        if let fault = take(.zero) { throw fault.error }
        try inner.zero(range)
    }

    public func mayHoldData(_ range: Range<UInt64>) -> Bool { inner.mayHoldData(range) }

    public func setLength(_ length: UInt64) throws(FSError) {
        if let fault = take(.setLength) { throw fault.error }
        try inner.setLength(length)
    }

    public func sync() throws(FSError) {
        if let fault = take(.sync) { throw fault.error }
        try inner.sync()
    }
}
