#include "linux_shims.h"

#ifndef OFFLOADFS_GIT_COMMIT
#define OFFLOADFS_GIT_COMMIT ""
#endif

const char *offloadfs_build_commit(void) { return OFFLOADFS_GIT_COMMIT; }
