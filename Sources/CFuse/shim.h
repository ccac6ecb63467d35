// CFuse: the only doorway from Swift to libfuse3 (Debian's libfuse3-dev, 3.14).
// FUSE_USE_VERSION must be set before the header so the 3.12+ low-level API is declared
// (fuse_session_loop_mt with a `struct fuse_loop_config *` built by fuse_loop_cfg_create).
//
// Everything below the includes exists because Swift cannot import it as it is: function-like
// macros, unions, function-pointer casts (SIG_DFL), va_list formatting, bitfields we want to
// set by name in one audited place, and constants that glibc only declares under
// _GNU_SOURCE (which the Swift Glibc module is not built with).
// Every wrapper is `static inline` and prefixed `offloadfs_`, as swift-nio's CNIOLinux does.
#ifndef OFFLOADFS_CFUSE_SHIM_H
#define OFFLOADFS_CFUSE_SHIM_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

// MARK: Layout facts the Swift side relies on.

// FuseBridge passes inode numbers as UInt64 and stores them in `stat.st_ino` (UInt on
// x86_64/aarch64 Linux); both must be 64 bits wide or inode numbers would be truncated.
_Static_assert(sizeof(fuse_ino_t) == 8, "fuse_ino_t must be 64 bits");
_Static_assert(sizeof(ino_t) == 8, "st_ino must hold a 64-bit inode number");
// File offsets cross the boundary as Int64 (off_t); a 32-bit off_t would cap files at 2 GiB.
_Static_assert(sizeof(off_t) == 8, "off_t must be 64 bits (_FILE_OFFSET_BITS=64)");
// forget_multi hands Swift a C array that it walks with Swift's stride for this struct.
_Static_assert(sizeof(struct fuse_forget_data) == 16, "fuse_forget_data is {u64 ino, u64 nlookup}");
// The file handle the namespace returns is stored in fi->fh unchanged.
_Static_assert(sizeof(((struct fuse_file_info *)0)->fh) == 8, "fuse_file_info.fh is 64 bits");

// MARK: Macros Swift cannot import.

/// FUSE_ARGS_INIT is a function-like macro (a compound initialiser); Swift imports neither.
static inline struct fuse_args offloadfs_args_init(int argc, char **argv) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    return args;
}

// MARK: Constants glibc hides behind _GNU_SOURCE.

/// lseek whence values that reach the filesystem (Linux ABI values, see lseek(2)).
enum {
    OFFLOADFS_SEEK_DATA = 3,
    OFFLOADFS_SEEK_HOLE = 4,
};
/// renameat2 flags (Linux ABI values, see rename(2)).
enum {
    OFFLOADFS_RENAME_NOREPLACE = 1,
    OFFLOADFS_RENAME_EXCHANGE = 2,
    OFFLOADFS_RENAME_WHITEOUT = 4,
};
/// setxattr flags (Linux ABI values, see setxattr(2)); <sys/xattr.h> is not part of
/// Swift's Glibc module.
enum {
    OFFLOADFS_XATTR_CREATE = 1,
    OFFLOADFS_XATTR_REPLACE = 2,
};
#if defined(SEEK_DATA) && defined(SEEK_HOLE)
_Static_assert(OFFLOADFS_SEEK_DATA == SEEK_DATA && OFFLOADFS_SEEK_HOLE == SEEK_HOLE, "lseek whence values");
#endif
#if defined(RENAME_NOREPLACE) && defined(RENAME_EXCHANGE) && defined(RENAME_WHITEOUT)
_Static_assert(OFFLOADFS_RENAME_NOREPLACE == RENAME_NOREPLACE && OFFLOADFS_RENAME_EXCHANGE == RENAME_EXCHANGE
               && OFFLOADFS_RENAME_WHITEOUT == RENAME_WHITEOUT, "renameat2 flags");
#endif
/// fallocate modes, re-exported from <linux/falloc.h> as plain ints for Swift.
enum {
    OFFLOADFS_FALLOC_KEEP_SIZE = FALLOC_FL_KEEP_SIZE,
    OFFLOADFS_FALLOC_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE,
    OFFLOADFS_FALLOC_ZERO_RANGE = FALLOC_FL_ZERO_RANGE,
};

// MARK: fuse_file_info bitfields.
// Swift imports C bitfields, but each flag here changes kernel caching behaviour, so they
// are set through named functions that say what they promise the kernel.

/// The kernel may keep this file's page cache across opens: valid because every change to
/// file data goes through the kernel (no other writer of the image while mounted).
static inline void offloadfs_fi_set_keep_cache(struct fuse_file_info *fi, int on) {
    fi->keep_cache = on ? 1 : 0;
}
/// The kernel may cache this directory's readdir results (FOPEN_CACHE_DIR); it drops the
/// cache itself when the directory changes through it.
static inline void offloadfs_fi_set_cache_readdir(struct fuse_file_info *fi, int on) {
    fi->cache_readdir = on ? 1 : 0;
}
// MARK: Logging.

/// libfuse's log callback receives a `va_list`; formatting it needs vsnprintf with that
/// exact va_list, which is simplest (and ABI-safe on every architecture) in C.
static inline int offloadfs_vformat(char *buffer, size_t size, const char *format, va_list ap) {
    return vsnprintf(buffer, size, format, ap);
}

// MARK: Signals.

/// Installs `handler` for `sig` without SA_RESTART, so a blocked sem_wait/read in the
/// libfuse loop returns EINTR and sees the exit flag. sigaction's handler lives in a union
/// (`__sigaction_handler`) whose member names Swift does not import portably.
static inline int offloadfs_install_signal_handler(int sig, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    return sigaction(sig, &sa, NULL);
}

/// Sets `sig` back to SIG_DFL or SIG_IGN (SIG_DFL/SIG_IGN are casts of integers to
/// function pointers, which Swift cannot import).
static inline int offloadfs_set_signal_default(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}
static inline int offloadfs_set_signal_ignored(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

/// 1 when `sig` has its default disposition (the rule fuse_set_signal_handlers follows:
/// a handler the user or a parent chose, e.g. SIG_IGN for SIGHUP under nohup, is kept).
static inline int offloadfs_signal_is_default(int sig) {
    struct sigaction old;
    if (sigaction(sig, NULL, &old) != 0) return 0;
    return old.sa_handler == SIG_DFL;
}

#endif
