#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "linux_shims.h"

int offloadfs_fallocate(int fd, int mode, off_t offset, off_t length) {
    return fallocate(fd, mode, offset, length);
}

int offloadfs_filesystem_type(const char *path, long *type) {
    struct statfs info;
    if (statfs(path, &info) != 0) return -1;
    *type = (long)info.f_type;
    return 0;
}

int offloadfs_release_free_memory(void) {
    return malloc_trim(0);
}

size_t offloadfs_heap_free_bytes(void) {
    return mallinfo2().fordblks;
}

int offloadfs_limit_malloc_arenas(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}

int offloadfs_current_cpu(void) {
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : cpu;
}

const int offloadfs_falloc_keep_size = FALLOC_FL_KEEP_SIZE;
const int offloadfs_falloc_punch_hole = FALLOC_FL_PUNCH_HOLE;
const int offloadfs_falloc_zero_range = FALLOC_FL_ZERO_RANGE;
const int offloadfs_seek_data = SEEK_DATA;
const int offloadfs_seek_hole = SEEK_HOLE;

int offloadfs_range_unwritten_on_disk(int fd, off_t offset, off_t length) {
    enum { batch = 32 };
    // struct fiemap ends in a flexible array: room for `batch` extents after it.
    uint64_t buffer[(sizeof(struct fiemap) + batch * sizeof(struct fiemap_extent)) / sizeof(uint64_t) + 1];
    struct fiemap *map = (struct fiemap *)buffer;
    uint64_t start = (uint64_t)offset, end = (uint64_t)offset + (uint64_t)length;
    while (start < end) {
        memset(buffer, 0, sizeof buffer);
        map->fm_start = start;
        map->fm_length = end - start;
        map->fm_extent_count = batch;
        if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) return -1;
        if (map->fm_mapped_extents == 0) return 1;  // holes to the end
        for (uint32_t i = 0; i < map->fm_mapped_extents; i++) {
            const struct fiemap_extent *e = &map->fm_extents[i];
            if (e->fe_logical >= end) return 1;
            if (!(e->fe_flags & FIEMAP_EXTENT_UNWRITTEN)) return 0;  // written, or delayed (dirty pages)
            if (e->fe_logical + e->fe_length <= start) { errno = EIO; return -1; }  // no progress
            start = e->fe_logical + e->fe_length;
            if (e->fe_flags & FIEMAP_EXTENT_LAST) return 1;
        }
    }
    return 1;
}

// CRC-32C: the checksum of the image's superblocks and metadata frames. Castagnoli's
// polynomial (reflected 0x82F63B78) because x86-64 computes it in hardware (SSE4.2
// `crc32`), so checksumming a journal frame costs a few nanoseconds per 8 bytes.
static uint32_t crc32c_table[256];

static void crc32c_init_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
}

static uint32_t crc32c_software(uint32_t crc, const unsigned char *p, size_t n) {
    while (n--) crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
#include <string.h>
__attribute__((target("sse4.2")))
static uint32_t crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static int crc32c_use_hardware;
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_setup(void) {
    crc32c_init_table();
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc32c_use_hardware = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t offloadfs_crc32c(uint32_t crc, const void *data, size_t length) {
    pthread_once(&crc32c_once, crc32c_setup);
    crc = ~crc;
#if defined(__x86_64__)
    if (crc32c_use_hardware) return ~crc32c_hardware(crc, data, length);
#endif
    return ~crc32c_software(crc, data, length);
}

// Guarded copies through the image's mapping. A page of a MAP_SHARED mapping that the
// kernel cannot read (a disk I/O error) or that lies past the end of the file (someone
// cut the image short) raises SIGBUS on the instruction that touches it; without a
// handler the daemon dies. The handler jumps back into the copy that faulted, which then
// fails with -1 (the request gets EIO). `guard_jump` is thread-local, non-NULL only
// while this thread is inside a guarded copy, so a SIGBUS anywhere else is not ours: the
// handler puts back the previous disposition and returns, and the faulting instruction
// runs again and gets the signal as before.
//
// sigsetjmp(.., 0) saves no signal mask (no system call per copy); SA_NODEFER keeps
// SIGBUS unblocked inside the handler, so jumping out of it leaves the mask as it was.
#include <setjmp.h>
#include <signal.h>
#include <string.h>

// volatile: the store before the copy must not be optimised away as dead (the copy
// does not read it; only the signal handler does).
static __thread sigjmp_buf *volatile guard_jump;
static struct sigaction previous_sigbus;
static pthread_once_t sigbus_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int signal_number, siginfo_t *info, void *context) {
    (void)info;
    (void)context;
    sigjmp_buf *jump = guard_jump;
    if (jump != NULL) {
        guard_jump = NULL;
        siglongjmp(*jump, 1);
    }
    sigaction(signal_number, &previous_sigbus, NULL);
}

static void install_sigbus_handler(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_sigbus);
}

int offloadfs_guarded_copy(void *destination, const void *source, size_t length) {
    pthread_once(&sigbus_once, install_sigbus_handler);
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0) != 0) return -1;
    guard_jump = &jump;
    memcpy(destination, source, length);
    guard_jump = NULL;
    return 0;
}

int offloadfs_guarded_probe(const void *start, size_t length) {
    pthread_once(&sigbus_once, install_sigbus_handler);
    if (length == 0) return 0;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0) != 0) return -1;
    guard_jump = &jump;
    const volatile unsigned char *p = start;
    uintptr_t first = (uintptr_t)start, last = first + length - 1;
    for (uintptr_t a = first; a <= last; a = (a | 4095) + 1) {
        (void)p[a - first];
        if ((a | 4095) >= last) break;
    }
    guard_jump = NULL;
    return 0;
}
