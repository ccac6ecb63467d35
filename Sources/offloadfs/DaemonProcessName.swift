#if canImport(Glibc)
import Glibc
#endif

/// The background daemon is `offloadfs mount` run again through /proc/self/exe (which
/// works even when the binary was replaced or removed since), and the kernel names a
/// process after the file it executed: `exe`. `ps -C offloadfs`, `pgrep -x offloadfs`,
/// `top` and `killall` then did not find the daemon (the admin hunt of the thirty-fifth
/// session). A process named so is named `offloadfs` again, through /proc/self/comm (the
/// main thread's name is the process's; prctl's PR_SET_NAME, which is variadic in C, is
/// not callable from Swift); any other name (`mount.offloadfs` through mount(8)) is left.
enum DaemonProcessName {
    static let name = "offloadfs"

    /// Called first thing, on the main thread.
    static func set() {
        let reading = open("/proc/self/comm", O_RDONLY | O_CLOEXEC)
        guard reading >= 0 else { return }
        var current = [UInt8](repeating: 0, count: 32)
        let count = read(reading, &current, current.count)
        close(reading)
        guard count > 0, current.prefix(count) == Array("exe\n".utf8)[...] else { return }
        // A descriptor of its own: the file does not seek, so no pwrite at 0.
        let writing = open("/proc/self/comm", O_WRONLY | O_CLOEXEC)
        guard writing >= 0 else { return }
        _ = Array(name.utf8).withUnsafeBytes { write(writing, $0.baseAddress, $0.count) }
        close(writing)
    }
}
