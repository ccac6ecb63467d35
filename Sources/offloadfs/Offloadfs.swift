import ArgumentParser
import FuseBridge
#if canImport(Glibc)
import Glibc
#endif

/// `offloadfs`: mount and unmount filesystems whose file contents live in one image file.
@main
struct Offloadfs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "offloadfs",
        abstract: "A FUSE filesystem that keeps its files in one mmap-backed image file.",
        discussion: """
            Mount with `offloadfs mount MOUNTPOINT --backing IMAGE`, use MOUNTPOINT like \
            any directory, and unmount with `offloadfs unmount MOUNTPOINT` (or fusermount3 -u). \
            Without --foreground, `mount` returns once the filesystem is live. The image keeps \
            the files across unmounts and crashes; `offloadfs status` shows what running mounts \
            hold and serve; `offloadfs fsck` and `offloadfs info` inspect an unmounted image. \
            `mount -t fuse.offloadfs IMAGE MOUNTPOINT -o OPTIONS`, an fstab line of that type and \
            systemd/offloadfs@.service run offloadfs as a system service.
            """,
        version: BuildVersion.line,
        subcommands: [MountCommand.self, UnmountCommand.self, StatusCommand.self, FsckCommand.self, InfoCommand.self]
    )

    /// Command lines in the forms mount(8), mount.fuse3 and umount(8) use (see
    /// `MountHelperArguments`) become our own; an unknown subcommand is named (with the
    /// closest real one) before the parser sees it.
    static func main() {
        DaemonProcessName.set()
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch MountHelperArguments.classify(program: CommandLine.arguments.first ?? "offloadfs", arguments: arguments,
                                             subcommands: Set(SubcommandSuggestion.names(of: Self.self) + ["help"])) {
        case .normal:
            if let message = SubcommandSuggestion.unknownSubcommandMessage(arguments, command: Self.self) {
                printError(message)
                Self.exit(withError: ExitCode.validationFailure)
            }
            main(arguments)
        case .run(let translated):
            // A mount(8) helper: a mistake in the options is mount(8)'s status 1, in one
            // line. The parser's 64 (EX_USAGE) is mount(8)'s "some mount succeeded", and its
            // usage names our command line's flags, not the -o options the user wrote.
            // (Nor do our own messages: `printError` spells the options as -o options.)
            MountHelperArguments.spellsMountOptions = true
            do {
                var command = try parseAsRoot(translated)
                try command.run()
            } catch {
                guard exitCode(for: error) == .validationFailure else { Self.exit(withError: error) }
                printError(message(for: error))
                Self.exit(withError: ExitCode.failure)
            }
        case .fake:
            Self.exit()
        case .invalid(let message):
            printError(message)
            Self.exit(withError: ExitCode.failure)
        }
    }
}
