#if canImport(Glibc)
import Glibc
#endif
import OffloadCore

// File data through handles: read, write, fallocate, lseek, copy_file_range.
//
// Each call takes the namespace lock once to find the handle's `RegularFile` and does
// the I/O with the lock released, under the file's own lock. A change marks mtime and
// ctime and is journaled with them in one frame (`FileJournal`, which takes the
// namespace lock briefly inside the file's lock). So I/O on different files runs in
// parallel and blocks lookups or directory changes only for that moment.

extension Namespace {
    /// Gathers the pieces `read(inode:handle:offset:count:_:)` hands out into one array,
    /// so both ways of reading share one path.
    public func read(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                     count: Int) throws(FSError) -> [UInt8] {
        try read(inode: inode, handle: handle, offset: offset, count: count) { regions in
            var bytes: [UInt8] = []
            bytes.reserveCapacity(regions.reduce(0) { $0 + $1.count })
            for region in regions {
                switch region {
                case .image(let buffer): bytes.append(contentsOf: buffer)
                case .fill(let value, let count): bytes.append(contentsOf: repeatElement(value, count: count))
                case .memory(let slice): bytes.append(contentsOf: slice)
                }
            }
            return bytes
        }
    }

    /// Reads without a copy: `body` gets the file's pieces under the file's read lock
    /// (`OffloadedFile.withReadRegions`). As before, the handle's access mode is not
    /// checked here: the kernel refuses read(2) on write-only descriptors itself and
    /// needs to read pages through them with the writeback cache.
    public func read<R>(inode: InodeNumber, handle: FileHandle, offset: UInt64, count: Int,
                        _ body: ([ReadRegion]) -> R) throws(FSError) -> R {
        guard count >= 0 else { throw .invalidArgument("negative read size") }
        let opened = try openedFile(inode: inode, handle: handle)
        return try opened.file.data.withReadRegions(at: offset, count: count, body)
    }

    /// Writes all of `data`. A handle opened with O_APPEND writes at the current end of
    /// file whatever the offset says, atomically with respect to other appenders. With
    /// the writeback cache the kernel positions appends itself and the bridge opens
    /// without O_APPEND, so this path serves mounts without it and in-process callers.
    /// A write of no bytes changes nothing (POSIX), not even past the end of file.
    public func write(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                      data: UnsafeRawBufferPointer) throws(FSError) -> Int {
        let opened = try openedFile(inode: inode, handle: handle)
        guard opened.writable else { throw .badHandle }
        guard data.count > 0 else { return 0 }
        try afterPendingForgets { () throws(FSError) in
            try FileDataRules.write(opened.file.data, appendLock: opened.file.appendLock, appends: opened.append,
                                    offset: offset, bytes: data)
        }
        return data.count
    }

    /// fallocate(2) (`FileDataRules.fallocate`).
    public func fallocate(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                          length: UInt64, mode: AllocationMode) throws(FSError) {
        let opened = try openedFile(inode: inode, handle: handle)
        try afterPendingForgets { () throws(FSError) in
            try FileDataRules.fallocate(opened.file.data, writable: opened.writable, offset: offset, length: length, mode: mode)
        }
    }

    /// SEEK_DATA / SEEK_HOLE; ENXIO at or past the end of file.
    public func lseek(inode: InodeNumber, handle: FileHandle, offset: UInt64,
                      target: SeekTarget) throws(FSError) -> UInt64 {
        try FileDataRules.seek(try openedFile(inode: inode, handle: handle).file.data, from: offset, to: target)
    }

    /// copy_file_range(2) (`FileDataRules.copyRange`).
    public func copyFileRange(from source: InodeNumber, sourceHandle: FileHandle, sourceOffset: UInt64,
                              to destination: InodeNumber, destinationHandle: FileHandle,
                              destinationOffset: UInt64, length: UInt64) throws(FSError) -> UInt64 {
        let input = try openedFile(inode: source, handle: sourceHandle)
        let output = try openedFile(inode: destination, handle: destinationHandle)
        return try afterPendingForgets { () throws(FSError) -> UInt64 in
            try FileDataRules.copyRange(from: input.file.data, source, at: sourceOffset, to: output.file.data, destination,
                                        at: destinationOffset, length: length, outputWritable: output.writable,
                                        outputAppends: output.append)
        }
    }

    /// Runs `change` (a write, a fallocate, a copy: refused for space before it changed
    /// anything) once more when it was refused while regular files that lost their last
    /// name and handle are kept by the kernel's references alone, once the FORGET of one
    /// of them has freed its data (`FileDataRules.forgetWaitNanoseconds` at most). Such a file keeps its data
    /// until its last FORGET (the kernel may open it again); for `rm big && echo > small`
    /// the kernel sends that FORGET as the unlink's syscall ends, before the next
    /// request, but the daemon's thread that reads it may not have handled it yet. A file
    /// the kernel keeps referenced (an `O_PATH` descriptor, a working directory) keeps its
    /// blocks, as on ext4: the change is refused after the wait.
    func afterPendingForgets<R>(_ change: () throws(FSError) -> R) throws(FSError) -> R {
        do {
            return try change()
        } catch .noSpace {
            guard waitForAForgetFreeingData() else { throw .noSpace }
            return try change()
        }
    }

    /// True once one of the files only the kernel references is gone, or a FORGET was
    /// freeing one as the change was refused, and no FORGET is still freeing what it
    /// dropped; false when there are none, or after the wait's bound.
    private func waitForAForgetFreeingData() -> Bool {
        let freeing = forgetsFreeing.load(ordering: .relaxed) > 0
        let waiting = state.withLock { $0.table.unlinkedFilesOnlyTheKernelReferences() }
        guard freeing || !waiting.isEmpty else { return false }
        let deadline = MonotonicClock.nanoseconds() &+ FileDataRules.forgetWaitNanoseconds
        repeat {
            let oneGone = freeing || state.withLock { state in waiting.contains { !state.table.contains($0) } }
            if oneGone && forgetsFreeing.load(ordering: .relaxed) == 0 { return true }
            usleep(500)
        } while MonotonicClock.nanoseconds() < deadline
        return false
    }

    // MARK: Helpers

    /// The file behind a handle (EBADF for a handle we did not give out for this inode).
    func openedFile(inode: InodeNumber, handle: FileHandle) throws(FSError)
        -> (file: RegularFile, writable: Bool, append: Bool) {
        try state.withLock { (state) throws(FSError) in
            try state.handles.file(handle, inode: inode)
        }
    }

    /// EFBIG when `offset + length` would pass the largest file size (or overflow).
    static func checkRange(offset: UInt64, length: UInt64) throws(FSError) {
        guard offset <= OffloadedFile.maximumSize,
              length <= OffloadedFile.maximumSize - offset else { throw .fileTooLarge }
    }
}
