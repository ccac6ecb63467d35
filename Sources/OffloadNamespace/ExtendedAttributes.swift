import OffloadCore

/// The extended attributes of one inode, in the order they were first set.
///
/// Limits (Linux's, so that anything a local filesystem accepts fits here too):
/// names at most 255 bytes (XATTR_NAME_MAX; longer is ERANGE, as Linux answers), values
/// at most 64 KiB (XATTR_SIZE_MAX; larger is E2BIG), and the list of names with their
/// NULs at most 64 KiB (XATTR_LIST_MAX) so that listxattr can always answer. All values
/// of one inode together are held to `maximumTotalValueBytes` (ENOSPC past it, like a
/// local filesystem whose xattr space is full) because they live in RAM.
///
/// Only the `user.`, `trusted.` and `security.` namespaces are stored, and of `system.`
/// the two POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`, whose
/// meaning `Inode+ACL.swift` implements); anything else is EOPNOTSUPP. The kernel checks
/// the capability trusted.* needs before a get, set or remove reaches us, but passes
/// listxattr on unfiltered: `visibleNames` leaves them out of a list for a caller
/// without it, as ext4's and tmpfs's `trusted` handler does.
public struct ExtendedAttributes {
    static let maximumNameLength = 255
    static let maximumValueLength = 65536
    static let maximumListLength = 65536
    static let maximumTotalValueBytes = 4 << 20
    static let supportedPrefixes = XattrItem.namespacePrefixes
    /// File capabilities: the kernel asks for this one before every write(2) to decide
    /// whether the write must drop them (FUSE clears SB_NOSEC; see Capabilities.swift).
    static let capabilityName = Array("security.capability".utf8)

    private var names: [[UInt8]] = []
    private var values: [[UInt8]: [UInt8]] = [:]
    private var listLength = 0
    private var totalValueBytes = 0

    var isEmpty: Bool { names.isEmpty }

    /// At least the bytes the attributes take in an inode record (a 4-byte length and
    /// the bytes of each name and value).
    var recordBound: Int { listLength + totalValueBytes + 8 * names.count }

    /// Checks a name's length and namespace. `user.` names are only allowed on regular
    /// files and directories (Linux refuses them elsewhere: EPERM to set, ENODATA to get).
    static func validate(name: [UInt8]) throws(FSError) {
        guard !name.isEmpty, name.count <= maximumNameLength else { throw .rangeTooSmall }
        guard !name.contains(0) else { throw .invalidArgument("NUL in attribute name") }
        if name == PosixACL.accessName || name == PosixACL.defaultName { return }
        guard let prefix = supportedPrefixes.first(where: { name.starts(with: $0) }) else {
            throw .notSupported
        }
        guard name.count > prefix.count else {
            throw .invalidArgument("attribute name has nothing after its namespace")
        }
        assert(XattrItem.isStoredName(name), "a name the namespace takes is one an image stores")
    }

    static func isUserName(_ name: [UInt8]) -> Bool { name.starts(with: supportedPrefixes[0]) }

    /// `names` as listxattr shows them to `caller`: `trusted.*` only to a holder of
    /// CAP_SYS_ADMIN (its capabilities are read only when there is such a name).
    public static func visibleNames(_ names: [[UInt8]], to caller: RequestContext) -> [[UInt8]] {
        let trusted = supportedPrefixes[1]
        guard names.contains(where: { $0.starts(with: trusted) }), !caller.maySeeTrustedAttributes else { return names }
        return names.filter { !$0.starts(with: trusted) }
    }

    func value(named name: [UInt8]) -> [UInt8]? { values[name] }

    var allNames: [[UInt8]] { names }

    mutating func set(name: [UInt8], value: [UInt8], mode: XattrSetMode) throws(FSError) {
        guard value.count <= Self.maximumValueLength else { throw .argumentListTooLong }
        let old = values[name]
        switch (mode, old) {
        case (.createOnly, .some), (.createAndReplace, .some): throw .exists
        case (.replaceOnly, .none), (.createAndReplace, .none): throw .noAttribute
        default: break
        }
        let newTotal = totalValueBytes - (old?.count ?? 0) + value.count
        guard newTotal <= Self.maximumTotalValueBytes else { throw .noSpace }
        if old == nil {
            guard listLength + name.count + 1 <= Self.maximumListLength else { throw .noSpace }
            names.append(name)
            listLength += name.count + 1
        }
        values[name] = value
        totalValueBytes = newTotal
    }

    mutating func remove(name: [UInt8]) throws(FSError) {
        guard let old = values.removeValue(forKey: name) else { throw .noAttribute }
        names.removeAll { $0 == name }
        listLength -= name.count + 1
        totalValueBytes -= old.count
    }
}
