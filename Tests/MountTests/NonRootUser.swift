import Foundation
import XCTest

/// A throw-away unprivileged user for tests that must run offloadfs as a non-root user,
/// made with useradd (named after this process, so parallel runs never share one) and
/// removed with userdel by `remove()`.
///
/// Commands run through `runuser` inside a private mount namespace (`unshare -m`), where
/// /dev/fuse and /etc/fuse.conf can be replaced by bind mounts with the mode and content a
/// test needs, without touching the machine's own: nothing mounted there is visible
/// outside, and it all goes away when the namespace's last process exits.
final class NonRootUser {
    let name: String
    /// A 0755 directory the user can traverse, holding a copy of the offloadfs binary
    /// (the build directory may not be reachable for other users).
    let directory: String
    let binary: String

    /// Creates the user, or throws XCTSkip outside CI when that is impossible (not root);
    /// under CI it fails instead, like a mount test that cannot mount.
    init() throws {
        guard geteuid() == 0 else {
            let reason = "creating a test user and a private /dev/fuse needs root"
            if MountFixture.isCI { throw MountTestError(reason + " (CI runs as root)") }
            throw XCTSkip(reason)
        }
        name = "ofs-t\(getpid())"
        // Left by an earlier test of this process that could not remove it: start afresh.
        _ = try? Shell.run("userdel -f \(name) 2>/dev/null; groupdel \(name) 2>/dev/null")
        let made = try Shell.run("useradd --system --user-group --no-create-home --shell /usr/sbin/nologin \(name)")
        guard made.succeeded else { throw MountTestError("useradd \(name): \(made.transcript)") }
        directory = try makeTemporaryDirectory()
        binary = directory + "/offloadfs"
        do {
            guard chmod(directory, 0o755) == 0, let source = DaemonBinary.path else {
                throw MountTestError("cannot prepare \(directory) for \(name)")
            }
            try FileManager.default.copyItem(atPath: source, toPath: binary)
            guard chmod(binary, 0o755) == 0 else { throw MountTestError("chmod \(binary)") }
        } catch {
            remove()
            throw error
        }
    }

    /// Removes the user, its group and the directory; returns what could not be removed.
    /// userdel refuses while a process of the user runs (status 8), e.g. a daemon still
    /// finishing an unmount, so it is retried for up to 5 s before `userdel -f`.
    @discardableResult
    func remove() -> [String] {
        var problems: [String] = []
        var removed = false
        for _ in 0..<100 {
            let status = (try? Shell.run("userdel \(name)"))?.status
            if status == 0 || status == 6 { removed = true; break }  // 6: no such user
            usleep(50_000)
        }
        if !removed {
            problems.append("userdel \(name) kept failing; forced")
            _ = try? Shell.run("userdel -f \(name)")
        }
        _ = try? Shell.run("groupdel \(name) 2>/dev/null")
        if (try? Shell.run("id \(name)"))?.succeeded == true { problems.append("the test user \(name) is still there") }
        try? FileManager.default.removeItem(atPath: directory)
        return problems
    }

    /// A directory inside `directory` owned by the user (or by root with `ownedByUser:
    /// false`), mode 0755.
    func makeDirectory(_ relative: String, ownedByUser: Bool = true) throws -> String {
        let path = directory + "/" + relative
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        if ownedByUser {
            let chowned = try Shell.run("chown \(name):\(name) \(path)")
            guard chowned.succeeded else { throw MountTestError(chowned.transcript) }
        }
        return path
    }

    /// Runs `script` (sh) as the user, in this mount namespace (to use a mount made
    /// with `-o allow_other`).
    func runHere(_ script: String, in directory: String? = nil) throws -> ShellResult {
        try Shell.runProgram("/usr/bin/env", ["runuser", "-u", name, "--", "/bin/sh", "-c", script], in: directory)
    }

    /// Runs `script` (sh) as the user in a private mount namespace whose /dev/fuse is a
    /// device node with `fuseMode` and `fuseGroup`, and whose /etc/fuse.conf has no
    /// `user_allow_other`. Returns what the user's script printed and its status. Mounts
    /// the script leaves behind are detached afterwards.
    func run(_ script: String, fuseMode: String = "0666", fuseGroup: String = "root") throws -> ShellResult {
        let device = directory + "/fuse-device", config = directory + "/fuse.conf"
        let setup = """
            set -e
            rm -f \(device)
            mknod \(device) c 10 229
            chown root:\(fuseGroup) \(device)
            chmod \(fuseMode) \(device)
            mount --bind \(device) /dev/fuse
            echo '# written by the offloadfs tests: no user_allow_other' > \(config)
            if [ -e /etc/fuse.conf ]; then mount --bind \(config) /etc/fuse.conf; fi
            set +e
            runuser -u \(name) -- /bin/sh -c "$1"
            status=$?
            # Whatever the script left mounted (a failed test) is detached, so its daemon
            # ends and the namespace with it.
            for m in $(cut -d' ' -f2 /proc/self/mounts | grep '^\(directory)/'); do umount -l "$m"; done
            exit $status
            """
        return try Shell.runProgram("/usr/bin/env", ["unshare", "--mount", "--propagation", "private",
                                                     "/bin/sh", "-c", setup, "sh", script])
    }
}
