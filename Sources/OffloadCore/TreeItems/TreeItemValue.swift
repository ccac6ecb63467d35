/// A value of format 2's filesystem tree: encoded to bytes, decoded from bytes that may be
/// damaged or hostile (every decoder checks everything and throws, never traps).
public protocol TreeItemValue: Equatable, Sendable {
    func encoded() -> [UInt8]
    static func decode(_ bytes: UnsafeRawBufferPointer) throws(ByteReader.Malformed) -> Self
}

extension TreeItemValue {
    public static func decode(bytes: [UInt8]) throws(ByteReader.Malformed) -> Self {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(ByteReader.Malformed) -> Self in try decode(raw) }
        }
        return try result.get()
    }
}

extension InodeItem: TreeItemValue {}
extension NameItem: TreeItemValue {}
extension IndexItem: TreeItemValue {}
extension BackReferenceItem: TreeItemValue {}
extension ExtentItem: TreeItemValue {}
extension OrphanItem: TreeItemValue {}
extension XattrItem: TreeItemValue {}
