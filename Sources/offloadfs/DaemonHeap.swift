import CLinuxShims
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's malloc arenas: as many as CPUs (at least two), not glibc's eight a CPU.
/// Each FUSE worker thread allocates from an arena of its own, and a chunk freed in one
/// serves no other: after 150,000 long-named files were unlinked in random order, the
/// daemon held 162 MiB (88 MiB at rest) with the default arenas and 105 MiB (67 MiB at
/// rest) with two, in the same time (docs/ARCHITECTURE.md, "A commit's changed leaves
/// written ahead"). `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`'s `glibc.malloc.arena_max` in the
/// environment still decide when set.
enum DaemonHeap {
    /// Called before the daemon starts a thread.
    static func limitArenas() {
        guard getenv("MALLOC_ARENA_MAX") == nil,
              !(getenv("GLIBC_TUNABLES").map { String(cString: $0).contains("arena_max") } ?? false) else { return }
        let processors = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        _ = offloadfs_limit_malloc_arenas(Int32(clamping: max(2, processors)))
    }
}
