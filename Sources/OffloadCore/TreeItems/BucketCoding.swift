/// The framing shared by the items that hold every entry whose name hashes to their key
/// (name, back-reference and xattr items): a count u8 (1-255), then the entries, the whole
/// at most `maximumBytes`, nothing after the last entry, and no two entries alike.
enum BucketCoding {
    static func encode<Entry>(_ entries: [Entry], capacity: Int, _ encodeOne: (Entry, inout ByteWriter) -> Void) -> [UInt8] {
        var w = ByteWriter(capacity: capacity)
        w.u8(UInt8(entries.count))
        for entry in entries { encodeOne(entry, &w) }
        return w.bytes
    }

    /// Decodes a bucket of `what` (for messages); `decodeOne` reads one entry and checks
    /// it against those before it.
    static func decode<Entry>(
        _ bytes: UnsafeRawBufferPointer, maximumBytes: Int, what: String,
        _ decodeOne: (inout ByteReader, [Entry]) throws(ByteReader.Malformed) -> Entry
    ) throws(ByteReader.Malformed) -> [Entry] {
        guard bytes.count <= maximumBytes else {
            throw ByteReader.Malformed(description: "\(what) of \(bytes.count) bytes")
        }
        var r = ByteReader(bytes)
        let count = Int(try r.u8())
        guard count > 0 else { throw ByteReader.Malformed(description: "\(what) with no entries") }
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count { entries.append(try decodeOne(&r, entries)) }
        try ItemCoding.requireEnd(r, what)
        return entries
    }
}
