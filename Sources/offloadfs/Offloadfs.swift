import ArgumentParser
import FuseBridge

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
            the files across unmounts and crashes; `offloadfs fsck` and `offloadfs info` \
            inspect an unmounted image.
            """,
        version: BuildVersion.line,
        subcommands: [MountCommand.self, UnmountCommand.self, FsckCommand.self, InfoCommand.self]
    )

    /// Names an unknown subcommand (with the closest real one) before the parser sees it.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let message = SubcommandSuggestion.unknownSubcommandMessage(arguments, command: Self.self) {
            printError(message)
            Self.exit(withError: ExitCode.validationFailure)
        }
        main(arguments)
    }
}
