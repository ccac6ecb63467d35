// offloadfs-genimage: a new image holding many files, made in-process (see
// ImageGenerator), for scripts/bench-scale. Not part of the daemon.
import ArgumentParser
import OffloadCore
import OffloadImageGenerator
#if canImport(Glibc)
import Glibc
#endif

@main
struct GenerateImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "offloadfs-genimage",
        abstract: "Make a new offloadfs image holding many files, without mounting it.",
        discussion: """
            Files 0..<FILES go in directories of --per-directory files: file i is \
            d%06d/f%08d with the directory number i / per-directory. Then \
            --single-directory more files (numbered on) go into one directory, single/f%08d. \
            Every tenth file (i % 10 == 0) holds the first i % 101 bytes of 0, 1, ..., 100; \
            the others are empty. The files belong to root, mode 0644. Format 2 (the default) \
            bulk-loads the tree's items into a new image at once; format 1 (--format 1) makes \
            the image through format 1's namespace operations, as a mount with the default \
            options made it, and closes it as an unmount does. Progress goes to stderr.
            """
    )

    @Argument(help: "The image to create (must not exist).")
    var image: String

    @Option(name: .long, help: "Files spread over directories.")
    var files: Int

    @Option(name: .long, help: "Files per directory in the spread part.")
    var perDirectory = 1000

    @Option(name: .long, help: "Files in one more directory, 'single'.")
    var singleDirectory = 0

    @Option(name: .long, help: "Format 1: bytes of small-file data held in RAM pieces (a mount's --memory-limit, in bytes).")
    var memoryLimit = 64 << 20

    @Option(name: .long, help: "Capacity kept in the image, in bytes (default: none kept; a mount then uses its own default).")
    var size: UInt64?

    @Option(name: .long, help: "Format 1: seconds between maintenance runs while generating (the daemon's 5; 0: none).")
    var maintenanceInterval = 5.0

    @Option(name: .customLong("format"), help: "The image format: 2 (what mount makes by default; bulk-loaded at once) or 1 (made through format 1's namespace; `offloadfs mount` upgrades it at its first read-write mount unless given --format 1).")
    var imageFormat = 2

    func validate() throws {
        guard files >= 0, singleDirectory >= 0 else { throw ValidationError("file counts cannot be negative") }
        guard files + singleDirectory > 0 else { throw ValidationError("nothing to make: --files and --single-directory are 0") }
        guard perDirectory > 0 else { throw ValidationError("--per-directory must be at least 1") }
        guard memoryLimit >= 0 else { throw ValidationError("--memory-limit cannot be negative") }
        guard maintenanceInterval >= 0 else { throw ValidationError("--maintenance-interval cannot be negative") }
        if let size, size == 0 { throw ValidationError("--size must be larger than 0") }
        guard imageFormat == 1 || imageFormat == 2 else { throw ValidationError("--format is 1 or 2") }
    }

    func run() throws {
        let layout = GeneratedLayout(files: files, filesPerDirectory: perDirectory, singleDirectoryFiles: singleDirectory)
        let total = layout.totalFiles
        if imageFormat == 2 { return try makeFormatTwo(layout) }
        // Without --size, the capacity is not kept; 64 TiB (what a store can map) only bounds
        // this run, as the free space of the disk would bound a mount.
        let capacity: CapacityRequest = size.map { .set($0) } ?? .kept(default: 1 << 46)
        printError("making \(total) files in \(layout.totalDirectories) directories in \(image)")
        let started = Stopwatch()
        let timing: ImageGenerator.Timing
        do {
            timing = try ImageGenerator.generate(
                path: image, layout: layout, capacity: capacity, memoryLimitBytes: memoryLimit,
                maintenanceInterval: maintenanceInterval, progressEvery: max(1000, total / 20)
            ) { made in
                let seconds = started.elapsed
                printError("  \(made)/\(total) files, \(Int(Double(made) / max(seconds, 1e-9)))/s, \(format(seconds)) s")
            }
        } catch {
            printError("offloadfs-genimage: error: \(error)")
            throw ExitCode.failure
        }
        printError("made \(total) files in \(format(timing.totalSeconds)) s (open \(format(timing.openSeconds)) s, "
                   + "create \(format(timing.createSeconds)) s, close \(format(timing.closeSeconds)) s)")
    }

    /// `--format 2`: the layout's items bulk-loaded into a new format 2 image.
    private func makeFormatTwo(_ layout: GeneratedLayout) throws {
        guard access(image, F_OK) != 0 else {
            printError("offloadfs-genimage: error: '\(image)' exists; a format 2 image is made in a new file")
            throw ExitCode.failure
        }
        let capacity = size ?? FormatTwoImage.defaultCapacity(files: layout.totalFiles)
        printError("making \(layout.totalFiles) files in \(layout.totalDirectories) directories in \(image) (format 2, capacity \(capacity) bytes)")
        let started = Stopwatch()
        do {
            try FormatTwoImage.make(path: image, layout: layout, capacityBytes: capacity,
                                    imageID: UInt64.random(in: 1...UInt64.max),
                                    nameHashKey: SipHash24(key0: UInt64.random(in: 0...UInt64.max), key1: UInt64.random(in: 0...UInt64.max)))
        } catch {
            printError("offloadfs-genimage: error: \(error)")
            throw ExitCode.failure
        }
        printError("made \(layout.totalFiles) files in \(format(started.elapsed)) s")
    }
}

private func printError(_ line: String) {
    var line = line + "\n"
    line.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

private func format(_ seconds: Double) -> String {
    let hundredths = Int((seconds * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
