import FuseBridge
import Logging
import OffloadNamespace

/// The command lines other programs use to run offloadfs, turned into our own.
///
/// - **mount.fuse3** (`mount -t fuse.offloadfs IMAGE DIR -o OPTS`, or an fstab line of
///   type `fuse.offloadfs`) runs `offloadfs IMAGE DIR -o OPTS` through /bin/sh, finding
///   `offloadfs` on the shell's default PATH (mount(8) passes none).
/// - **mount(8)** runs `/sbin/mount.offloadfs SPEC DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]`
///   for `mount -t offloadfs` (the installed helper is a symlink to this binary).
/// - **umount(8)** runs `/sbin/umount.fuse.offloadfs DIR [-flnrv] [-N NS] [-t TYPE]` for a
///   mount of type fuse.offloadfs, so that `umount`, like `offloadfs unmount`, returns
///   only once the final checkpoint is written (systemd unmounts with umount(8) at
///   shutdown, and the image's own filesystem must not go first).
///
/// `-o` carries both kinds of options. offloadfs's own are taken out: `size=`,
/// `memory_limit=`, `log_level=`, `format=`, `fresh`, `writeback_cache`, each checked here so that a
/// bad value is one clear line. What mount(8) and mount.fuse3 add or keep for
/// themselves is dropped (`defaults`, `rw`, `dev`, `suid`, `_netdev`, `nofail`, `auto`,
/// `noauto`, `user`, `users`, `nouser`, `owner`, `group`, `x-*`, `comment=`). The rest
/// (`ro`, `allow_other`, `noatime`, `nosuid`, ...) goes to libfuse, which refuses what
/// it does not know.
enum MountHelperArguments {
    enum Invocation: Equatable {
        /// Our own command line: let the argument parser have it.
        case normal
        /// Run these arguments instead (e.g. ["mount", DIR, "--backing", IMAGE, ...]).
        case run([String])
        /// mount(8)'s -f ("fake"): check the arguments, mount nothing.
        case fake
        /// One line saying what is wrong.
        case invalid(String)
    }

    /// What `program` (argv[0]) with `arguments` asks for; `subcommands` are the names
    /// (and aliases) of our own subcommands, which are never taken for an image.
    static func classify(program: String, arguments: [String], subcommands: Set<String>) -> Invocation {
        let name = program.split(separator: "/").last.map(String.init) ?? program
        switch name {
        case "mount.offloadfs", "mount.fuse.offloadfs":
            return mount(arguments)
        case "umount.offloadfs", "umount.fuse.offloadfs":
            return unmount(arguments)
        default:
            // mount.fuse3's form, exactly: IMAGE DIR -o OPTS (it always passes options, at
            // least dev,suid), so that a mistyped subcommand is never taken for an image.
            guard arguments.count == 4, arguments[2] == "-o", let first = arguments.first, !first.hasPrefix("-"),
                  !subcommands.contains(first), !arguments[1].hasPrefix("-") else { return .normal }
            return mount(arguments)
        }
    }

    /// `SPEC DIR [-sfnv] [-N NS] [-o OPTS]... [-t TYPE]`.
    static func mount(_ arguments: [String]) -> Invocation {
        guard arguments.count >= 2 else { return .invalid("usage: mount.offloadfs IMAGE MOUNTPOINT [-o OPTIONS]") }
        let (image, directory) = (arguments[0], arguments[1])
        var translated = ["mount", directory, "--backing", image]
        var fake = false
        var index = 2
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-o", "-t", "-N":
                guard index < arguments.count else { return .invalid("\(argument) needs a value") }
                let value = arguments[index]
                index += 1
                if argument == "-N" { return .invalid("-N (mount in another namespace) is not supported") }
                if argument == "-o" {
                    switch options(value) {
                    case .success(let extra): translated += extra
                    case .failure(let failure): return .invalid(failure.message)
                    }
                }
            default:
                // Combined flags: -s sloppy, -f fake, -n no mtab, -v verbose, -r read-only.
                guard argument.hasPrefix("-"), argument.count > 1,
                      argument.dropFirst().allSatisfy({ "sfnvrw".contains($0) }) else {
                    return .invalid("unexpected argument '\(argument)' (expected IMAGE MOUNTPOINT [-o OPTIONS])")
                }
                if argument.contains("f") { fake = true }
                if argument.contains("r") { translated += ["-o", "ro"] }
            }
        }
        return fake ? .fake : .run(translated)
    }

    /// `DIR [-flnrv] [-N NS] [-t TYPE]`.
    static func unmount(_ arguments: [String]) -> Invocation {
        guard let directory = arguments.first, !directory.hasPrefix("-") else {
            return .invalid("usage: umount.fuse.offloadfs MOUNTPOINT [-l]")
        }
        var lazy = false
        var index = 1
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-t", "-N":
                index += 1
                if argument == "-N" { return .invalid("-N (unmount in another namespace) is not supported") }
            default:
                guard argument.hasPrefix("-"), argument.dropFirst().allSatisfy({ "flnrvc".contains($0) }) else {
                    return .invalid("unexpected argument '\(argument)'")
                }
                if argument.contains("l") { lazy = true }
            }
        }
        // -l: detach now, without waiting for the daemon (`offloadfs unmount --lazy`).
        return .run(lazy ? ["unmount", "--lazy", directory] : ["unmount", directory])
    }

    /// Set once, before anything else runs, when the process serves mount(8) or
    /// mount.fuse3 (`Invocation.run` of a mount): what it prints then names `-o` options.
    nonisolated(unsafe) static var spellsMountOptions = false

    /// `message` with the command line's options spelled as the `-o` options an fstab
    /// line or `mount -o` takes: "use --size 20M or more" → "use -o size=20M or more", "a
    /// larger --size" → "a larger -o size=", "`offloadfs mount --format 1`" → "`-o
    /// format=1`". An administrator who mounted from fstab was told of flags that line
    /// cannot hold (the admin hunt of the thirty-fifth session).
    static func respelled(_ message: String) -> String {
        var text = message
        for (flag, option) in [("--size", "size"), ("--memory-limit", "memory_limit"), ("--format", "format"),
                               ("--log-level", "log_level")] {
            text = respell(flag, as: option, in: text)
        }
        text = text.replacing("--fresh", with: "-o fresh")
            .replacing("--writeback-cache", with: "-o writeback_cache")
            .replacing("`offloadfs mount -o ", with: "`-o ")
        return text
    }

    /// Each `flag` (a whole word) as `-o option=`, taking the value after it when one
    /// follows (a word starting with a digit, or for `--log-level` a level's name).
    private static func respell(_ flag: String, as option: String, in text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let found = rest.firstRange(of: flag) {
            let after = rest[found.upperBound...]
            // A longer flag that starts the same (`--size-x`) is not this one.
            if let next = after.first, next.isLetter || next.isNumber || next == "-" {
                result += rest[..<found.upperBound]
                rest = after
                continue
            }
            result += rest[..<found.lowerBound] + "-o \(option)="
            rest = after
            if after.first == " ", let word = after.dropFirst().split(separator: " ", maxSplits: 1).first,
               word.first?.isNumber == true || Logger.Level(rawValue: String(word.prefix { $0.isLetter })) != nil {
                rest = after.dropFirst()
            }
        }
        return result + rest
    }

    struct Failure: Error, Equatable {
        var message: String
    }

    /// Options mount(8) and mount.fuse3 use themselves, or that say nothing to us.
    static let ignored: Set<String> = ["defaults", "rw", "dev", "suid", "exec", "auto", "noauto", "_netdev", "nofail",
                                       "user", "users", "nouser", "owner", "group"]

    /// One `-o` value as arguments for `offloadfs mount`.
    static func options(_ list: String) -> Result<[String], Failure> {
        var arguments: [String] = []
        var passed: [String] = []
        for option in list.split(separator: ",").map(String.init) where !option.isEmpty {
            let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
            let (name, value) = (parts[0], parts.count > 1 ? parts[1] : nil)
            switch (name, value) {
            case ("size", let value?), ("memory_limit", let value?):
                do {
                    _ = try ByteSize(parsing: value)
                } catch {
                    return .failure(Failure(message: "\(option): \(error)"))
                }
                arguments += [name == "size" ? "--size" : "--memory-limit", value]
            case ("log_level", let value?):
                guard Logger.Level(rawValue: value) != nil else {
                    return .failure(Failure(message: "\(option): the level is one of "
                                            + Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")))
                }
                arguments += ["--log-level", value]
            case ("format", let value?):
                guard let number = Int(value), ImageFormat(rawValue: number) != nil else {
                    return .failure(Failure(message: "\(option): the format is 1 or 2"))
                }
                arguments += ["--format", value]
            case ("fresh", nil):
                arguments.append("--fresh")
            case ("writeback_cache", nil):
                arguments.append("--writeback-cache")
            case ("size", nil), ("memory_limit", nil), ("log_level", nil), ("format", nil):
                return .failure(Failure(message: "\(option) needs a value (\(option)=...)"))
            case ("fresh", _?), ("writeback_cache", _?):
                return .failure(Failure(message: "\(option): \(name) takes no value"))
            default:
                if ignored.contains(name) || name.hasPrefix("x-") || name == "comment" { continue }
                passed.append(option)
            }
        }
        if !passed.isEmpty { arguments += ["-o", passed.joined(separator: ",")] }
        return .success(arguments)
    }
}
