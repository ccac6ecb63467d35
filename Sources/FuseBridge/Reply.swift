import CFuse
#if canImport(Glibc)
import Glibc
#endif
import Logging
import OffloadCore
import OffloadNamespace

/// The answer to one FUSE request: the one place where results become `fuse_reply_*`.
///
/// A `Reply` is `~Copyable` and every way of answering is a `consuming` method, so the
/// compiler rejects code that answers a request twice, and a handler that forgets to
/// answer trips `deinit`, which logs the bug and sends EIO so the caller is not left
/// hanging in the kernel forever (cberner/fuser's reply objects work the same way).
///
/// Each method takes the `Result` of one namespace call: `.failure` becomes
/// `fuse_reply_err` with the errno from `FSError.errnoValue`; `.success` becomes the reply
/// the operation expects. Where libfuse reports that a reply was discarded because the
/// request was interrupted (-ENOENT), the references the reply would have handed to the
/// kernel (a lookup count, an open handle) are given back to the namespace.
struct Reply: ~Copyable {
    private let request: fuse_req_t
    /// The operation's name, for logs.
    private let operation: StaticString

    init(_ request: fuse_req_t, _ operation: StaticString) {
        self.request = request
        self.operation = operation
    }

    deinit {
        let context = BridgeContext.of(request)
        context.logger.error("request left unanswered; replying EIO", metadata: ["op": "\(operation)"])
        context.counters.countError(EIO)
        fuse_reply_err(request, EIO)
    }

    private var context: BridgeContext { BridgeContext.of(request) }

    // MARK: Errors and empty answers

    /// Answers with the errno of `error`, logging daemon-side failures.
    consuming func error(_ error: FSError) {
        let code = error.errnoValue
        context.counters.countError(code)
        if error.isInternalFailure {
            context.logger.error("\(operation) failed: \(error)", metadata: ["errno": "\(code)"])
        } else {
            context.logger.debug("\(operation): \(error)", metadata: ["errno": "\(code)"])
        }
        fuse_reply_err(request, code)
        discard self
    }

    /// Answers with a raw errno for requests the bridge refuses before reaching the
    /// namespace (unsupported flags); these never come from an `FSError`.
    consuming func errno(_ code: Int32) {
        context.logger.debug("\(operation): refused", metadata: ["errno": "\(code)"])
        context.counters.countError(code)
        fuse_reply_err(request, code)
        discard self
    }

    /// Success with no data (unlink, rmdir, rename, flush, fsync, setxattr, ...).
    consuming func done(_ result: Result<Void, FSError>) {
        switch result {
        case .success:
            fuse_reply_err(request, 0)
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    /// forget / forget_multi take no answer; libfuse still needs to free the request.
    consuming func none() {
        fuse_reply_none(request)
        discard self
    }

    // MARK: Inodes

    /// An entry that hands the kernel one lookup reference (lookup, mknod, mkdir, symlink,
    /// link). With `negativeOnNotFound`, ENOENT becomes a cacheable negative entry.
    consuming func entry(_ result: Result<Attributes, FSError>, negativeOnNotFound: Bool = false) {
        let policy = context.cachePolicy
        switch result {
        case .success(let attributes):
            var entry = StatConversion.entry(attributes, policy: policy)
            if fuse_reply_entry(request, &entry) != 0 {
                // Interrupted: the kernel never got the reference.
                context.fileSystem.forget(inode: attributes.inode, lookups: 1)
            }
            discard self
        case .failure(.notFound) where negativeOnNotFound:
            var entry = StatConversion.negativeEntry(policy: policy)
            fuse_reply_entry(request, &entry)
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    consuming func attributes(_ result: Result<Attributes, FSError>) {
        switch result {
        case .success(let attributes):
            var status = stat(attributes)
            fuse_reply_attr(request, &status, context.cachePolicy.attributeTimeoutSeconds)
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    consuming func readlink(_ result: Result<[UInt8], FSError>) {
        switch result {
        case .success(let target):
            // fuse_reply_readlink takes a C string: append the NUL the namespace omits.
            let terminated = target + [0]
            terminated.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(request, $0.baseAddress) }
            }
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    // MARK: Handles

    /// open / opendir: the handler has already set the caching flags of `info`.
    consuming func open(_ result: Result<FileHandle, FSError>, inode: InodeNumber,
                        info: UnsafeMutablePointer<fuse_file_info>, directory: Bool) {
        switch result {
        case .success(let handle):
            info.pointee.fh = handle.rawValue
            if fuse_reply_open(request, info) != 0 {
                // Interrupted: release/releasedir will never come for this handle.
                if directory {
                    context.fileSystem.releasedir(inode: inode, handle: handle)
                } else {
                    context.fileSystem.release(inode: inode, handle: handle)
                }
            }
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    consuming func create(_ result: Result<(Attributes, FileHandle), FSError>,
                          info: UnsafeMutablePointer<fuse_file_info>) {
        switch result {
        case .success(let (attributes, handle)):
            info.pointee.fh = handle.rawValue
            var entry = StatConversion.entry(attributes, policy: context.cachePolicy)
            if fuse_reply_create(request, &entry, info) != 0 {
                context.fileSystem.release(inode: attributes.inode, handle: handle)
                context.fileSystem.forget(inode: attributes.inode, lookups: 1)
            }
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    // MARK: Data

    /// READ without a copy. `serve` calls the namespace's region read, handing it `send`;
    /// the namespace calls `send` with the file's pieces while it holds the file's read
    /// lock, and the reply (`ReadReply`, one iovec per piece) goes out right there, while
    /// the pieces' pointers into the image are valid. If `serve` throws before `send`,
    /// the error is the answer.
    consuming func read(_ serve: (_ send: ([ReadRegion]) -> Void) throws(FSError) -> Void) {
        let request = self.request
        let logger = context.logger
        let counters = context.counters
        var sent = false
        var failure: FSError?
        do {
            try serve { regions in
                // A second call would answer a request libfuse has already freed.
                guard !sent else { return logger.error("read: the filesystem called back twice; ignored") }
                sent = true
                let status = ReadReply.send(request, regions)
                if status != 0 {
                    logger.debug("read: reply not delivered", metadata: ["errno": "\(-status)"])
                } else {
                    counters.countRead(bytes: regions.reduce(0) { $0 + $1.count })
                }
            }
        } catch {
            failure = error
        }
        switch (sent, failure) {
        case (true, nil):
            discard self
        case (true, let error?):
            logger.error("read failed after its reply was sent: \(error)")
            discard self
        case (false, let error?):
            self.error(error)
        case (false, nil):
            // The namespace broke its contract and never called back.
            logger.error("read: the filesystem returned without answering; replying EIO")
            fuse_reply_err(request, EIO)
            discard self
        }
    }

    consuming func bytes(_ result: Result<[UInt8], FSError>) {
        switch result {
        case .success(let bytes):
            bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) {
                    _ = fuse_reply_buf(request, $0.baseAddress, $0.count)
                }
            }
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    /// A buffer the caller filled (readdir); `count` bytes of it are sent. Returns false
    /// when the kernel discarded the reply (interrupted request).
    consuming func buffer(_ buffer: UnsafeMutableRawBufferPointer, count: Int) -> Bool {
        precondition(count <= buffer.count)
        let status = fuse_reply_buf(request, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), count)
        discard self
        return status == 0
    }

    /// write (and copy_file_range, which shares image ranges and is not counted as
    /// bytes written: `countsAsWrite` false).
    consuming func written(_ result: Result<Int, FSError>, countsAsWrite: Bool = true) {
        switch result {
        case .success(let count):
            if countsAsWrite { context.counters.countWritten(bytes: count) }
            fuse_reply_write(request, count)
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    /// copy_file_range answers like write: the number of bytes copied.
    consuming func copied(_ result: Result<UInt64, FSError>) {
        written(result.map { Int(clamping: $0) }, countsAsWrite: false)
    }

    consuming func offset(_ result: Result<UInt64, FSError>) {
        switch result {
        case .success(let offset):
            guard let signed = Int64(exactly: offset) else { return self.errno(EOVERFLOW) }
            fuse_reply_lseek(request, off_t(signed))
            discard self
        case .failure(let error):
            self.error(error)
        }
    }

    // MARK: Whole filesystem and xattrs

    consuming func statfs(_ statistics: FileSystemStatistics) {
        var result = StatConversion.statvfs(statistics)
        fuse_reply_statfs(request, &result)
        discard self
    }

    /// getxattr / listxattr: a size-0 request asks how big the value is; a buffer too
    /// small for the value is ERANGE; otherwise the bytes.
    consuming func xattr(_ result: Result<[UInt8], FSError>, bufferSize: Int) {
        switch result {
        case .success(let value) where bufferSize == 0:
            fuse_reply_xattr(request, value.count)
            discard self
        case .success(let value) where value.count > bufferSize:
            self.error(.rangeTooSmall)
        case .success(let value):
            self.bytes(.success(value))
        case .failure(let error):
            self.error(error)
        }
    }
}
