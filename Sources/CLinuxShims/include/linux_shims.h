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

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start). Uses the
/// SSE4.2 instruction when the CPU has it, a table otherwise; both give the same value.
uint32_t offloadfs_crc32c(uint32_t crc, const void *data, size_t length);

#endif
