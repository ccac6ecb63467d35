/// Tree pages read and written through an `ImageStorage`: block n is bytes
/// n × 4096 ..< (n + 1) × 4096 of the image. Reads use the storage's `read` (a pread:
/// safe past the end of the file, where the mapping would fault); a block the image does
/// not reach whole is damage, not a trap.
public final class ImageStoragePageIO: TreePageIO {
    public let storage: any ImageStorage

    public init(storage: any ImageStorage) { self.storage = storage }

    public func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        precondition(page.count == TreeNode.size)
        let offset = try byteOffset(block)
        guard try storage.read(into: page, at: offset) == TreeNode.size else {
            throw .damagedImage("tree node block \(block) lies past the end of the image")
        }
    }

    public func writePage(_ block: UInt64, from page: UnsafeRawBufferPointer) throws(FSError) {
        precondition(page.count == TreeNode.size)
        try storage.write(page, at: try byteOffset(block))
    }

    private func byteOffset(_ block: UInt64) throws(FSError) -> UInt64 {
        guard block < UInt64.max >> BackingStore.blockShift else {
            throw .damagedImage("tree node block \(block) is past any image")
        }
        return block << BackingStore.blockShift
    }
}
