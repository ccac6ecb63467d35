extension OffloadedFile {
    /// Checks the extent list's invariants and throws `.io` naming the first one broken:
    /// extents tile `0..<size` in order with no empty extent, the stored-byte count adds
    /// up, RAM extents stay within their limit, and every image extent lies in blocks the
    /// store counts as in use. For tests and fsck; O(n).
    public func checkInvariants() throws(FSError) {
        try lock.withReadLock { () throws(FSError) in
            var expectedStart: UInt64 = 0
            var stored: UInt64 = 0
            var problem: String?
            extents.forEach { start, extent in
                guard problem == nil else { return }
                if start != expectedStart { problem = "extent at \(start), expected \(expectedStart)" }
                if extent.size == 0 { problem = "empty extent at \(start)" }
                if case .inMemory(let bytes) = extent, bytes.count > Self.inMemoryExtentLimit {
                    problem = "RAM extent of \(bytes.count) bytes at \(start)"
                }
                if case .mmapOffload(let offset, let size) = extent, size > 0,
                   !store.isInUse(byte: offset) || !store.isInUse(byte: offset + size - 1) {
                    problem = "extent at \(start) points at free image bytes \(offset)..<\(offset + size)"
                }
                expectedStart = start + extent.size
                stored += extent.storedBytes
            }
            if let problem { throw .io(problem) }
            guard expectedStart == sizeBytes else { throw .io("extents end at \(expectedStart), size is \(sizeBytes)") }
            guard stored == storedBytes else { throw .io("stored bytes \(storedBytes), extents hold \(stored)") }
        }
    }
}
