import OffloadCore

/// A format 2 image of a `GeneratedLayout`, made at once: a volume formatted on the file
/// and bulk-loaded with `GeneratedTreeItems` (for `offloadfs-genimage --format 2` and the
/// scale benchmark: far faster than making the files through a mount).
public enum FormatTwoImage {
    /// The capacity a layout's image gets unless one is asked for: about 300 bytes of
    /// nodes a file, and room for three commits of 20,000 random changes in flight (each
    /// copies up to 20,000 leaves until its frees are reused), rounded to MiB.
    public static func defaultCapacity(files: Int) -> UInt64 {
        (UInt64(files) * 1200 + (512 << 20) + 0xFFFFF) & ~UInt64(0xFFFFF)
    }

    /// Makes the image at `path` (created, or emptied) and closes it.
    public static func make(path: String, layout: GeneratedLayout, capacityBytes: UInt64,
                            imageID: UInt64, nameHashKey: SipHash24) throws(FSError) {
        let volume = try TreeVolume.format(try FileImageStorage(path: path), capacityBytes: capacityBytes,
                                           imageID: imageID, nameHashKey: nameHashKey)
        try volume.bulkLoad(GeneratedTreeItems(layout: layout, hashes: volume.filesystem.hashes))
        try volume.sync()
    }
}
