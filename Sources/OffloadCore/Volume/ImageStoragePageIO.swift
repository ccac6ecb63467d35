import CLinuxShims

/// Tree pages read and written through an `ImageStorage`: block n is bytes
/// n × 4096 ..< (n + 1) × 4096 of the image. Reads copy from the image's mapping when one
/// is given (no system call; the copy is guarded, so a page the kernel cannot read is an
/// `.io` error, not a SIGBUS), else use the storage's `read` (a pread). A block the image
/// does not reach whole is damage, not a trap.
public final class ImageStoragePageIO: TreePageIO {
    public let storage: any ImageStorage
    let mapping: (base: UnsafeMutableRawPointer, bytes: UInt64)?

    public init(storage: any ImageStorage, mapping: (base: UnsafeMutableRawPointer, bytes: UInt64)? = nil) {
        self.storage = storage
        self.mapping = mapping
    }

    public func readPage(_ block: UInt64, into page: UnsafeMutableRawBufferPointer) throws(FSError) {
        precondition(page.count == TreeNode.size)
        let offset = try byteOffset(block)
        if let mapping, offset < mapping.bytes, UInt64(TreeNode.size) <= mapping.bytes - offset {
            guard offloadfs_guarded_copy(page.baseAddress!, mapping.base + Int(offset), TreeNode.size) == 0 else {
                throw .io("reading tree node block \(block) of image '\(storage.name)' faulted (an I/O error, or the file was cut short)")
            }
            return
        }
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
