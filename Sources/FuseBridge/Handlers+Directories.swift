import CFuse
#if canImport(Glibc)
import Glibc
#endif
import OffloadCore
import OffloadNamespace

/// Handlers for directory handles and listings.
///
/// Listings are packed into the kernel's buffer with fuse_add_direntry(_plus); an entry
/// that does not fit ends the reply and the kernel asks again from the last entry's
/// cookie (`nextOffset`). An empty reply means end of directory.
enum DirectoryHandlers {
    /// The smallest READDIR record: a 24-byte fuse_dirent header plus a name, 8-aligned.
    static let minimumDirentBytes = 32
    /// The smallest READDIRPLUS record: fuse_entry_out (128 bytes) + the dirent header
    /// (24) + a name, 8-aligned. Asking the namespace for size/160 entries means entries
    /// with names of up to 8 bytes all fit and longer ones rarely overflow, which keeps
    /// the lookups handed back through `forget` few.
    static let minimumDirentPlusBytes = 160

    static func opendir(_ request: fuse_req_t, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        guard let info else { return Reply(request, "opendir").errno(EINVAL) }
        // The kernel may cache this listing and keep it across opens: it drops the cache
        // itself whenever the directory changes through it, and nothing else changes it.
        offloadfs_fi_set_cache_readdir(info, 1)
        offloadfs_fi_set_keep_cache(info, 1)
        Reply(request, "opendir").open(Result { () throws(FSError) in
            try fs.opendir(inode: InodeNumber(inode))
        }, inode: InodeNumber(inode), info: info, directory: true)
    }

    static func readdir(_ request: fuse_req_t, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t,
                        _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        let listing = Result { () throws(FSError) in
            try fs.readdir(inode: InodeNumber(inode), handle: FileHandlers.handle(info),
                           offset: FileHandlers.unsignedOffset(offset),
                           limit: max(1, size / minimumDirentBytes))
        }
        guard case .success(let entries) = listing else {
            return Reply(request, "readdir").done(listing.map { _ in })
        }
        // At least one byte, so the buffer always has an address (the kernel never asks
        // for 0 bytes, but nothing here may trap if it did).
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 8)
        defer { buffer.deallocate() }
        var used = 0
        for entry in entries {
            var status = stat()
            status.st_ino = UInt(entry.inode.rawValue)
            status.st_mode = entry.kind.modeBits
            let needed = withCName(entry.name) { name in
                fuse_add_direntry(request, buffer.baseAddress!.advanced(by: used).assumingMemoryBound(to: CChar.self),
                                  size - used, name, &status, off_t(clamping: entry.nextOffset))
            }
            if needed > size - used { break }
            used += needed
        }
        _ = Reply(request, "readdir").buffer(buffer, count: used)
    }

    static func readdirplus(_ request: fuse_req_t, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t,
                            _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let context = BridgeContext.of(request)
        let fs = context.fileSystem
        let listing = Result { () throws(FSError) in
            try fs.readdirplus(inode: InodeNumber(inode), handle: FileHandlers.handle(info),
                               offset: FileHandlers.unsignedOffset(offset),
                               limit: max(1, size / minimumDirentPlusBytes))
        }
        guard case .success(let entries) = listing else {
            return Reply(request, "readdirplus").done(listing.map { _ in })
        }
        // At least one byte, so the buffer always has an address (the kernel never asks
        // for 0 bytes, but nothing here may trap if it did).
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 8)
        defer { buffer.deallocate() }
        var used = 0
        var sent = 0
        for (entry, attributes) in entries {
            var parameters: fuse_entry_param
            if let attributes {
                parameters = StatConversion.entry(attributes, policy: context.cachePolicy)
            } else {
                // "." and "..": no attributes and no lookup reference (ino 0 tells the
                // kernel not to instantiate an inode); the dirent still needs its type.
                parameters = fuse_entry_param()
                parameters.attr.st_ino = UInt(entry.inode.rawValue)
                parameters.attr.st_mode = entry.kind.modeBits
            }
            let needed = withCName(entry.name) { name in
                fuse_add_direntry_plus(request, buffer.baseAddress!.advanced(by: used).assumingMemoryBound(to: CChar.self),
                                       size - used, name, &parameters, off_t(clamping: entry.nextOffset))
            }
            if needed > size - used { break }
            used += needed
            sent += 1
        }
        // Entries that did not fit were counted as lookups by the namespace but never
        // reached the kernel: give those references back (FileSystemOperations contract).
        forgetLookups(entries.dropFirst(sent), fs: fs)
        if !Reply(request, "readdirplus").buffer(buffer, count: used) {
            // The request was interrupted and the kernel discarded the whole reply.
            forgetLookups(entries.prefix(sent), fs: fs)
        }
    }

    private static func forgetLookups<C: Collection>(_ entries: C, fs: any FileSystemOperations)
        where C.Element == (entry: DirectoryEntry, attributes: Attributes?) {
        for (_, attributes) in entries {
            if let attributes { fs.forget(inode: attributes.inode, lookups: 1) }
        }
    }

    static func releasedir(_ request: fuse_req_t, _ inode: fuse_ino_t, _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "releasedir").done(Result { () throws(FSError) in
            fs.releasedir(inode: InodeNumber(inode), handle: try FileHandlers.handle(info))
        })
    }

    static func fsyncdir(_ request: fuse_req_t, _ inode: fuse_ino_t, _ dataSync: Int32,
                         _ info: UnsafeMutablePointer<fuse_file_info>?) {
        let fs = BridgeContext.of(request).fileSystem
        Reply(request, "fsyncdir").done(Result { () throws(FSError) in
            try fs.fsyncdir(inode: InodeNumber(inode), handle: FileHandlers.handle(info), dataOnly: dataSync != 0)
        })
    }

    /// Calls `body` with `name` as a NUL-terminated C string.
    private static func withCName<R>(_ name: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (name + [0]).withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
        }
    }
}
