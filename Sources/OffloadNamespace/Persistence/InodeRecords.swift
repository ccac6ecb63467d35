import OffloadCore

// Conversions between the namespace's objects and the image's records (OffloadCore's
// `MetadataRecord`), in one place.

extension Timestamp {
    var record: RecordTime {
        // Stored nanoseconds are always 0..<1e9 (setattr and the clock guarantee it).
        RecordTime(seconds: seconds, nanoseconds: UInt32(clamping: max(0, min(nanoseconds, 999_999_999))))
    }

    init(_ record: RecordTime) {
        self.init(seconds: record.seconds, nanoseconds: Int64(record.nanoseconds))
    }
}

extension FileKind {
    /// st_mode >> 12, as records store it.
    var recordType: UInt8 { UInt8(modeBits >> 12) }

    init?(recordType: UInt8) { self.init(mode: UInt32(recordType) << 12) }
}

extension ExtendedAttributes {
    var records: [InodeRecord.Xattr] {
        allNames.map { InodeRecord.Xattr(name: $0, value: value(named: $0) ?? []) }
    }

    /// The attributes an image's record holds, less any whose name no namespace stores
    /// (no request could have set it, none could read it: damage a checksum did not
    /// catch), and any past the limits, as `set` refuses them.
    init(records: [InodeRecord.Xattr]) {
        self.init()
        for x in records where XattrItem.isStoredName(x.name) {
            try? set(name: x.name, value: x.value, mode: .createOrReplace)
        }
    }
}

extension Inode {
    /// This inode's attributes as a journal or checkpoint record.
    /// At least the encoded size of `record` (docs/FORMAT.md: 102 fixed bytes, the
    /// symlink target's blob, the xattrs), for journal reservations.
    var recordBound: Int {
        var target = 0
        if case .symlink(let t) = content { target = t.count }
        return 110 + target + xattrs.recordBound
    }

    var record: MetadataRecord {
        var target: [UInt8] = []
        if case .symlink(let t) = content { target = t }
        return .inode(InodeRecord(
            number: number.rawValue, type: kind.recordType, permissions: permissions, uid: uid, gid: gid,
            linkCount: linkCount, rdev: rdev, accessTime: accessTime.record,
            modificationTime: modificationTime.record, changeTime: changeTime.record,
            birthTime: birthTime.record, parent: directory?.parent.rawValue ?? 0,
            symlinkTarget: target, xattrs: xattrs.records))
    }

    /// An inode as recovery found it. `linkCount` is what the entries say, not what the
    /// record says (fsck reports a difference).
    convenience init(restoring record: InodeRecord, kind: FileKind, linkCount: UInt32, content: Content) {
        self.init(number: InodeNumber(record.number), generation: InodeTable.generation, kind: kind,
                  permissions: record.permissions, uid: record.uid, gid: record.gid, rdev: record.rdev,
                  linkCount: linkCount, content: content, now: Timestamp(record.birthTime))
        accessTime = Timestamp(record.accessTime)
        modificationTime = Timestamp(record.modificationTime)
        changeTime = Timestamp(record.changeTime)
        xattrs = ExtendedAttributes(records: record.xattrs)
    }
}
