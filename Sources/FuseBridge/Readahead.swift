#if canImport(Glibc)
import Glibc
#endif
import Logging
import OffloadCore

/// Raises the mount's readahead window (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`).
///
/// The kernel's default of 128 KiB makes buffered sequential reads arrive as 128 KiB
/// READs; with 1024 they arrive as 1 MiB READs (the largest libfuse 3.14 allows), eight
/// times fewer round trips. There is no mount option for it: FUSE_INIT can only lower the
/// window (the kernel offers its current value and keeps the smaller of the two), so it is
/// written through sysfs once the kernel has processed our INIT reply; written earlier,
/// INIT would clamp it back.
///
/// A helper thread does it, started just before the session loop: its `stat` of the mount
/// point is a GETATTR, which the kernel holds until INIT is done (and the loop answers),
/// so when `stat` returns the window can be written for good. `st_dev` of that `stat`
/// names the mount's bdi. Only root may write sysfs; every failure is logged at debug
/// level and otherwise ignored: readahead is a speed-up, not a requirement.
enum Readahead {
    static func raiseInBackground(mountPoint: String, kilobytes: Int, logger: Logger) {
        let job = Unmanaged.passRetained(Job(mountPoint: mountPoint, kilobytes: kilobytes, logger: logger)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Job>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, job)
        if status == 0 {
            pthread_detach(thread)
        } else {
            Unmanaged<Job>.fromOpaque(job).release()
            logger.debug("readahead not raised: cannot start a thread", metadata: ["errno": "\(status)"])
        }
    }

    /// "MAJOR:MINOR" of the device `st_dev` (glibc's encoding), as sysfs and
    /// /proc/self/mountinfo write it.
    static func deviceName(_ device: UInt64) -> String {
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        return "\(major):\(minor)"
    }

    /// Whether /proc/self/mountinfo shows a FUSE mount of device `device` ("MAJOR:MINOR")
    /// at `mountPoint`: then `stat` saw our mount, not the directory below it (the mount
    /// may be gone already, and the disk's own readahead must not be touched).
    static func isFuseMount(_ mountPoint: String, device: String, mountInfo: String) -> Bool {
        // mountinfo writes space, tab, newline and backslash in paths as \ooo octal.
        var bytes: [UInt8] = []
        for byte in mountPoint.utf8 {
            if byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x5c {
                let octal = String(byte, radix: 8)
                bytes += Array(("\\" + String(repeating: "0", count: 3 - octal.count) + octal).utf8)
            } else {
                bytes.append(byte)
            }
        }
        let escaped = String(decoding: bytes, as: UTF8.self)
        for line in mountInfo.split(separator: "\n") {
            // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE ...
            let fields = line.split(separator: " ")
            guard fields.count > 4, fields[2] == device, fields[4] == escaped,
                  let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            let type = fields[dash + 1]
            if type == "fuse" || type.hasPrefix("fuse.") { return true }
        }
        return false
    }

    private final class Job: Sendable {
        let mountPoint: String
        let kilobytes: Int
        let logger: Logger

        init(mountPoint: String, kilobytes: Int, logger: Logger) {
            self.mountPoint = mountPoint
            self.kilobytes = kilobytes
            self.logger = logger
        }

        func run() {
            var status = stat()
            guard stat(mountPoint, &status) == 0 else {
                return logger.debug("readahead not raised: cannot stat \(mountPoint): \(String(cString: strerror(errno)))")
            }
            let device = deviceName(UInt64(status.st_dev))
            guard let mountInfo = ProcText.read("/proc/self/mountinfo"),
                  isFuseMount(mountPoint, device: device, mountInfo: mountInfo) else {
                return logger.debug("readahead not raised: \(mountPoint) is no longer mounted")
            }
            let path = "/sys/class/bdi/\(device)/read_ahead_kb"
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else {
                return logger.debug("readahead not raised: cannot open \(path): \(String(cString: strerror(errno)))")
            }
            defer { close(fd) }
            let text = Array("\(kilobytes)\n".utf8)
            let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written == text.count {
                logger.debug("readahead raised", metadata: ["path": "\(path)", "kilobytes": "\(kilobytes)"])
            } else {
                logger.debug("readahead not raised: cannot write \(path): \(String(cString: strerror(errno)))")
            }
        }
    }
}
