extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws `FSError`: the standard one rethrows
    /// untyped errors, which typed-throws callers would have to cast back.
    @inline(__always)
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(FSError) -> R) throws(FSError) -> R {
        try withUnsafeBytes { buffer in Result { () throws(FSError) in try body(buffer) } }.get()
    }
}
