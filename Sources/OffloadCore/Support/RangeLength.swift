extension Range where Bound == UInt64 {
    /// The number of values in the range as a `UInt64`. `count` is an `Int` and traps
    /// for ranges wider than `Int.max`, which a client can ask for.
    @inline(__always)
    var length: UInt64 { upperBound - lowerBound }
}
