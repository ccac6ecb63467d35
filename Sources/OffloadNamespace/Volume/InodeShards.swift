/// Which of `count` shards an inode's state lives in, for the namespace's tables split by
/// inode number (`KernelReferenceTable`, `VolumeFileCache`, `VolumeHandles`): Fibonacci
/// hashing, so that a directory's consecutive numbers spread over the shards.
enum InodeShards {
    static let count = 64
    private static let shift = UInt64(64 - count.trailingZeroBitCount)

    static func index(_ number: UInt64) -> Int {
        Int(truncatingIfNeeded: (number &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }
}
