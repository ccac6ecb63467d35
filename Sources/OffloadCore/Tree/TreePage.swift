/// One node's 4096 bytes in memory: a node being changed (dirty until a commit writes
/// it), or a buffer that reads land in. Owns its memory; not shared between threads.
final class TreePage {
    let bytes: UnsafeMutableRawPointer

    /// `byteCount` is more than a node only for the scratch page where an internal node
    /// is laid out with one entry too many before it splits.
    init(byteCount: Int = TreeNode.size) {
        precondition(byteCount >= TreeNode.size)
        bytes = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 16)
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    }

    deinit { bytes.deallocate() }

    var view: TreeNodeView { TreeNodeView(UnsafeRawPointer(bytes)) }
    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: bytes, count: TreeNode.size) }
    var mutableBuffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: bytes, count: TreeNode.size) }

    func copy(from other: TreePage) { bytes.copyMemory(from: other.bytes, byteCount: TreeNode.size) }
}
