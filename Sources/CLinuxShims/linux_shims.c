#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include "linux_shims.h"

int offloadfs_fallocate(int fd, int mode, off_t offset, off_t length) {
    return fallocate(fd, mode, offset, length);
}

const int offloadfs_falloc_keep_size = FALLOC_FL_KEEP_SIZE;
const int offloadfs_falloc_punch_hole = FALLOC_FL_PUNCH_HOLE;
