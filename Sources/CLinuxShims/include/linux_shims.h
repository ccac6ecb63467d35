// Linux calls that Glibc's Swift module does not export (they need _GNU_SOURCE), for the
// storage core. Kept apart from CFuse so the core never links libfuse.
#ifndef OFFLOADFS_LINUX_SHIMS_H
#define OFFLOADFS_LINUX_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// fallocate(2): returns 0 or -1 with errno set.
int offloadfs_fallocate(int fd, int mode, off_t offset, off_t length);

/// The fallocate(2) mode bits, as plain ints (the macros do not import).
extern const int offloadfs_falloc_keep_size;
extern const int offloadfs_falloc_punch_hole;
extern const int offloadfs_falloc_zero_range;
/// lseek(2)'s SEEK_DATA (a GNU extension the Swift import leaves out).
extern const int offloadfs_seek_data;
/// lseek(2)'s SEEK_HOLE.
extern const int offloadfs_seek_hole;

/// Whether the file's blocks in [offset, offset + length) are on disk as zeros: holes or
/// unwritten extents (FIEMAP). 1 when every extent there is one of those, 0 when some
/// extent is written data or a delayed allocation, -1 with errno set when the file
/// system has no FIEMAP. Pages in the page cache are not looked at.
int offloadfs_range_unwritten_on_disk(int fd, off_t offset, off_t length);

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start). Uses the
/// SSE4.2 instruction when the CPU has it, a table otherwise; both give the same value.
uint32_t offloadfs_crc32c(uint32_t crc, const void *data, size_t length);

/// Copies `length` bytes like memcpy, but a SIGBUS raised by the copy (an I/O error on a
/// page of a mapped file, or a page past the end of a file that was cut short) ends it
/// and returns -1 instead of killing the process; 0 when the copy completed. The bytes
/// of `destination` are then partly written. Installs the process's SIGBUS handler on
/// first use; a SIGBUS outside a guarded copy still goes to the handler that was there
/// before (the default: the process dies).
int offloadfs_guarded_copy(void *destination, const void *source, size_t length);

/// Reads one byte of every 4 KiB page of `start..<start+length` under the same guard, so
/// that the kernel can then copy the range (an iovec of a FUSE reply) without meeting a
/// page that cannot be read: -1 if a page raised SIGBUS, else 0.
int offloadfs_guarded_probe(const void *start, size_t length);

/// The git commit this binary was built from, as the build was given it
/// (OFFLOADFS_GIT_COMMIT, see Package.swift); "" when it was not. In build_info.c.
const char *offloadfs_build_commit(void);

/// statfs(2)'s f_type of the filesystem holding `path` (the magic number that names the
/// filesystem type; FUSE is 0x65735546), in `type`. Returns 0 or -1 with errno set.
/// statvfs, which Glibc's module has, does not report the type.
int offloadfs_filesystem_type(const char *path, long *type);

/// Gives the heap's free memory back to the kernel (glibc's malloc_trim(0)); 1 when some
/// was released. After a phase that freed much (the version 1 upgrade), the arenas keep it
/// otherwise.
int offloadfs_release_free_memory(void);

/// The bytes free in the heap's arenas (glibc's mallinfo2().fordblks): what a
/// malloc_trim could give back at most. Walks the arenas' bins, each under its lock.
size_t offloadfs_heap_free_bytes(void);

/// At most `arenas` malloc arenas (glibc's mallopt(M_ARENA_MAX)); 1 on success. Called
/// before any thread starts.
int offloadfs_limit_malloc_arenas(int arenas);

/// The CPU the calling thread runs on (sched_getcpu, a GNU extension), 0 when the kernel
/// cannot say. A hint only: the thread may move to another CPU as soon as it returns.
int offloadfs_current_cpu(void);

#endif
