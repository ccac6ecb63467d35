/// Extended attributes and symlink targets: values that may be longer than one item, kept
/// whole in the tree (docs/FORMAT.md, "Xattr item"): values stay inline in their hash item
/// while it fits, the longest go to chunk items of `XattrItem.chunkBytes` under the same
/// hash when it does not, and a symlink target is cut into parts of the same size.
extension FileSystemTree {
    func xattrKey(_ inode: UInt64, _ name: [UInt8], chunk: Int = 0) -> TreeKey {
        Self.key(inode, .xattr, hashes.xattr(name) | UInt64(chunk))
    }

    /// The value of the xattr `name` of `inode`, or nil when it has none.
    public func xattr(_ inode: UInt64, name: [UInt8]) throws(FSError) -> [UInt8]? {
        let bucketKey = xattrKey(inode, name)
        let bucket: XattrItem? = try item(bucketKey)
        guard let attribute = bucket?.attributes.first(where: { $0.name == name }) else { return nil }
        guard attribute.firstChunk != 0 else { return attribute.inlineValue }
        var value: [UInt8] = []
        value.reserveCapacity(Int(attribute.valueLength))
        for chunk in attribute.chunks {
            let expected = attribute.chunkLength(chunk)
            guard let bytes = try tree.lookup(xattrKey(inode, name, chunk: chunk)), bytes.count == expected else {
                throw .damagedImage("xattr \(String(decoding: name, as: UTF8.self)) of inode \(inode): chunk \(chunk) missing or not \(expected) bytes")
            }
            value.append(contentsOf: bytes)
        }
        return value
    }

    /// The names of the xattrs of `inode`, in key order (by hash, not by name).
    public func xattrNames(_ inode: UInt64) throws(FSError) -> [[UInt8]] {
        var names: [[UInt8]] = []
        try scan(inode, .xattr) { (offset, raw) throws(FSError) in
            // Chunk items share the bucket's top 48 bits; only the bucket names attributes.
            guard offset & 0xffff == 0 else { return true }
            let bucket: XattrItem = try Self.decode(Self.key(inode, .xattr, offset), raw)
            names.append(contentsOf: bucket.attributes.map(\.name))
            return true
        }
        return names
    }

    func setXattr(_ inode: UInt64, name: [UInt8], value: [UInt8]) throws(FSError) {
        guard value.count <= XattrItem.valueLimit else { throw .argumentListTooLong }
        let bucketKey = xattrKey(inode, name)
        var bucket: XattrItem = try item(bucketKey) ?? XattrItem(attributes: [])
        let old = bucket.attributes.firstIndex { $0.name == name }.map { bucket.attributes.remove(at: $0) }
        guard bucket.attributes.count < 255 else { throw .noSpace }
        bucket.attributes.append(XattrItem.Attribute(name: name, valueLength: UInt32(value.count), firstChunk: 0, inlineValue: value))
        // Every value stays inline while the item fits; when it does not, the longest inline
        // values move to chunks (the new one among them) until it does, so one long value
        // never keeps a colliding name out. Refused only when even names alone overflow.
        var moved: [(name: [UInt8], value: [UInt8], chunks: Range<Int>)] = []
        while bucket.encodedSize > XattrItem.maximumBytes {
            guard let longest = bucket.attributes.indices.filter({ bucket.attributes[$0].firstChunk == 0 && bucket.attributes[$0].valueLength > 0 })
                .max(by: { bucket.attributes[$0].valueLength < bucket.attributes[$1].valueLength }) else { throw .noSpace }
            let bytes = bucket.attributes[longest].inlineValue
            let count = (bytes.count + XattrItem.chunkBytes - 1) / XattrItem.chunkBytes
            var first = 1
            // Each clash moves past the clashing value's chunks, so this ends.
            while let clash = bucket.attributes.first(where: { $0.chunks.overlaps(first..<first + count) }) {
                first = clash.chunks.upperBound
            }
            guard first + count <= 65536 else { throw .noSpace }
            bucket.attributes[longest].inlineValue = []
            bucket.attributes[longest].firstChunk = UInt16(first)
            moved.append((bucket.attributes[longest].name, bytes, first..<first + count))
        }
        try tree.groupedChange { () throws(FSError) in
            if let old {
                for chunk in old.chunks { _ = try tree.remove(xattrKey(inode, name, chunk: chunk)) }
            }
            for (movedName, bytes, chunks) in moved {
                for (n, chunk) in chunks.enumerated() {
                    let start = n * XattrItem.chunkBytes
                    try tree.upsert(xattrKey(inode, movedName, chunk: chunk),
                                    Array(bytes[start..<min(bytes.count, start + XattrItem.chunkBytes)]))
                }
            }
            try tree.upsert(bucketKey, bucket.encoded())
        }
    }

    func removeXattr(_ inode: UInt64, name: [UInt8]) throws(FSError) {
        let bucketKey = xattrKey(inode, name)
        var bucket: XattrItem = try item(bucketKey) ?? XattrItem(attributes: [])
        guard let position = bucket.attributes.firstIndex(where: { $0.name == name }) else { throw .noAttribute }
        let old = bucket.attributes.remove(at: position)
        try tree.groupedChange { () throws(FSError) in
            for chunk in old.chunks { _ = try tree.remove(xattrKey(inode, name, chunk: chunk)) }
            try replaceOrRemove(bucketKey, bucket.attributes.isEmpty ? nil : bucket.encoded())
        }
    }

    // MARK: - Symlink targets

    /// The target of the symlink `inode`, or nil when it has none.
    public func symlinkTarget(_ inode: UInt64) throws(FSError) -> [UInt8]? {
        var target: [UInt8] = []
        var expected: UInt64 = 0
        try scan(inode, .symlinkTarget) { (part, raw) throws(FSError) in
            // Parts are numbered from 0 with no gap, and all but the last are whole.
            guard part == expected, raw.count > 0, raw.count <= XattrItem.chunkBytes,
                  target.count == Int(part) * XattrItem.chunkBytes else {
                throw .damagedImage("symlink \(inode): target part \(part) of \(raw.count) bytes out of place")
            }
            target.append(contentsOf: raw)
            expected += 1
            return true
        }
        return target.isEmpty ? nil : target
    }

    func setSymlinkTarget(_ inode: UInt64, _ target: [UInt8]) throws(FSError) {
        var oldParts: [UInt64] = []
        try scan(inode, .symlinkTarget) { (part, _) throws(FSError) in
            oldParts.append(part)
            return true
        }
        let parts = stride(from: 0, to: target.count, by: XattrItem.chunkBytes).map {
            Array(target[$0..<min(target.count, $0 + XattrItem.chunkBytes)])
        }
        try tree.groupedChange { () throws(FSError) in
            for part in oldParts where part >= UInt64(parts.count) {
                _ = try tree.remove(Self.key(inode, .symlinkTarget, part))
            }
            for (n, bytes) in parts.enumerated() {
                try tree.upsert(Self.key(inode, .symlinkTarget, UInt64(n)), bytes)
            }
        }
    }
}
