/// Checks shared by the item decoders (and their encoders' assertions).
enum ItemCoding {
    static func time(_ r: inout ByteReader) throws(ByteReader.Malformed) -> RecordTime {
        let seconds = try r.i64(), nanoseconds = try r.u32()
        guard nanoseconds < 1_000_000_000 else {
            throw ByteReader.Malformed(description: "nanoseconds \(nanoseconds) out of range")
        }
        return RecordTime(seconds: seconds, nanoseconds: nanoseconds)
    }

    /// A name as a directory holds it: 1-255 bytes, no "/" or NUL, not "." or "..".
    static func name(_ r: inout ByteReader) throws(ByteReader.Malformed) -> [UInt8] {
        let length = Int(try r.u8())
        let name = try r.raw(length)
        guard isValidName(name) else {
            throw ByteReader.Malformed(description: "an invalid name of \(length) bytes")
        }
        return name
    }

    static func isValidName(_ name: [UInt8]) -> Bool {
        !name.isEmpty && name.count <= 255 && !name.contains(0) && !name.contains(UInt8(ascii: "/"))
            && name != [UInt8(ascii: ".")] && name != [UInt8(ascii: "."), UInt8(ascii: ".")]
    }

    /// An inode number: from 1, below the reserved objects.
    static func isInode(_ number: UInt64) -> Bool { number >= 1 && number < ReservedObject.firstReserved }

    /// The file types an item may state (st_mode >> 12): FIFO, character device,
    /// directory, block device, regular file, symlink, socket. Any other is no file a
    /// request could make, and the namespace could not answer for it (readdir's d_type,
    /// stat's mode).
    static func isFileType(_ type: UInt8) -> Bool {
        switch type {
        case 0o01, 0o02, 0o04, 0o06, 0o10, 0o12, 0o14: return true
        default: return false
        }
    }

    /// A child as a directory entry names it: an inode number and a file type (st_mode >> 12).
    static func checkChild(_ child: UInt64, type: UInt8) throws(ByteReader.Malformed) {
        guard isInode(child), isFileType(type) else {
            throw ByteReader.Malformed(description: "an entry naming inode \(child) of type \(type)")
        }
    }

    /// A directory index: 1 and 2 are "." and ".." in readdir, entries start at 3, and
    /// the last, 2^64 - 1, is none: a directory's next entry number is past its last
    /// entry's (readdir's cookie after it, `nextIndex`), so it is the number that says the
    /// directory has none left.
    static func checkIndex(_ index: UInt64) throws(ByteReader.Malformed) {
        guard index >= 3, index < UInt64.max else {
            throw ByteReader.Malformed(description: "entry index \(index) (indexes are 3 to 2^64 - 2)")
        }
    }

    static func requireEnd(_ r: ByteReader, _ what: String) throws(ByteReader.Malformed) {
        guard r.isAtEnd else { throw ByteReader.Malformed(description: "\(r.remaining) bytes after \(what)") }
    }
}
