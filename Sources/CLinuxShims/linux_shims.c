#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <linux/falloc.h>
#include "linux_shims.h"

int offloadfs_fallocate(int fd, int mode, off_t offset, off_t length) {
    return fallocate(fd, mode, offset, length);
}

const int offloadfs_falloc_keep_size = FALLOC_FL_KEEP_SIZE;
const int offloadfs_falloc_punch_hole = FALLOC_FL_PUNCH_HOLE;

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
