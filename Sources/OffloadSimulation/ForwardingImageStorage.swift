import OffloadCore

/// An `ImageStorage` that passes every call to another one: tests subclass it to watch or
/// change the calls they care about (counting a commit's fallocates, recording where
/// frames are written) and leave the rest as they are.
///
/// Every requirement is implemented here, the ones with a default in `ImageStorage` too,
/// so that a subclass's override is the one a caller through the protocol reaches.
open class ForwardingImageStorage: ImageStorage, @unchecked Sendable {
    public let inner: any ImageStorage

    public init(_ inner: any ImageStorage) { self.inner = inner }

    open var name: String { inner.name }
    open var isReadOnly: Bool { inner.isReadOnly }
    open var length: UInt64 { inner.length }
    open var diskBytes: UInt64 { inner.diskBytes }

    open func map(byteCount: Int) throws(FSError) -> UnsafeMutableRawPointer { try inner.map(byteCount: byteCount) }

    open func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(FSError) -> Int {
        try inner.read(into: buffer, at: offset)
    }

    open func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try inner.write(bytes, at: offset)
    }

    open func writeFresh(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(FSError) {
        try inner.writeFresh(bytes, at: offset)
    }

    open func reserve(_ range: Range<UInt64>) throws(FSError) { try inner.reserve(range) }

    open func punch(_ range: Range<UInt64>) throws(FSError) { try inner.punch(range) }

    open func zero(_ range: Range<UInt64>) throws(FSError) { try inner.zero(range) }

    open func mayHoldData(_ range: Range<UInt64>) -> Bool { inner.mayHoldData(range) }

    open func setLength(_ length: UInt64) throws(FSError) { try inner.setLength(length) }

    open func sync() throws(FSError) { try inner.sync() }

    open var hostAvailableBytes: UInt64? { inner.hostAvailableBytes }

    open func prepareForWrite(_ range: Range<UInt64>) { inner.prepareForWrite(range) }
}
