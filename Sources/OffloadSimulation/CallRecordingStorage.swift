import OffloadCore

/// An `ImageStorage` that passes every call to another one and records, in order, the
/// calls that change the image: for tests of how many of them an operation makes, or in
/// which order (a sync before a write, say).
public final class CallRecordingStorage: ForwardingImageStorage, @unchecked Sendable {
    public enum Call: Sendable, Equatable { case write, writeFresh, reserve, punch, zero, setLength, sync }

    private let recorded = PthreadMutex<[Call]>([])

    /// Over a new memory image of at most `maximumBytes`.
    public convenience init(maximumBytes: Int) { self.init(MemoryImageStorage(maximumBytes: maximumBytes)) }

    /// The calls since the last `reset`, oldest first.
    public var calls: [Call] { recorded.withLock { $0 } }
    public func count(_ call: Call) -> Int { recorded.withLock { $0.filter { $0 == call }.count } }
    public func reset() { recorded.withLock { $0 = [] } }
    private func note(_ call: Call) { recorded.withLock { $0.append(call) } }

    public override func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        note(.write)
        try super.write(bytes, at: offset)
    }

    public override func writeFresh(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        note(.writeFresh)
        try super.writeFresh(bytes, at: offset)
    }

    public override func reserve(_ range: Range<UInt64>) throws(FSError) {
        note(.reserve)
        try super.reserve(range)
    }

    public override func punch(_ range: Range<UInt64>) throws(FSError) {
        note(.punch)
        try super.punch(range)
    }

    public override func zero(_ range: Range<UInt64>) throws(FSError) {
        note(.zero)
        try super.zero(range)
    }

    public override func setLength(_ length: UInt64) throws(FSError) {
        note(.setLength)
        try super.setLength(length)
    }

    public override func sync() throws(FSError) {
        note(.sync)
        try super.sync()
    }
}
