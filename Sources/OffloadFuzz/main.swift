// offloadfs-fuzz: hostile images against the decoders and the whole open path.
//
// Built by scripts/fuzz with `-sanitize=fuzzer -DOFFLOADFS_LIBFUZZER` (in .build-fuzz) it is
// a libFuzzer binary: every libFuzzer option and argument works (corpus directories,
// -runs=N, -max_total_time=S, a crash file to replay). In a normal build it replays
// inputs without libFuzzer: `offloadfs-fuzz FILE_OR_DIRECTORY...`. In both,
// `offloadfs-fuzz --write-seeds DIRECTORY` writes the seed corpus (real sample images), and
// `offloadfs-fuzz --write-image INPUT IMAGE` writes the image an input stands for, which
// `offloadfs fsck` and `offloadfs mount` then take as any image file.
//
// Each input is a `FuzzInput` (a sparse image); `HostileImageCheck` says what must hold.
// A broken property is turned into a trap, so libFuzzer saves the input like any crash.
import Foundation
import OffloadFuzzing

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    do {
        try HostileImageCheck.check(FuzzInput.image(from: UnsafeRawBufferPointer(start: data, count: size)))
    } catch {
        fatalError("hostile image check failed: \(error)")
    }
    return 0
}

func writeSeeds(to directory: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for (name, input) in try SampleImage.seeds() {
        try Data(input).write(to: URL(fileURLWithPath: directory).appendingPathComponent(name))
    }
}

/// Replays each file (or each file in each directory) named; prints one line per input.
func replay(_ paths: [String]) throws {
    var files: [String] = []
    for path in paths {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: path])
        }
        if isDirectory.boolValue {
            files += try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { "\(path)/\($0)" }
        } else {
            files.append(path)
        }
    }
    for file in files {
        let input = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        let outcome = try HostileImageCheck.check(FuzzInput.image(from: input))
        print("\(file): " + (outcome.refusal.map { "refused (\($0))" } ?? "opened")
              + "; repair: " + (outcome.repairRefusal.map { "refused (\($0))" } ?? "opens (\(outcome.repairs) fixes)"))
    }
}

/// Writes the image `input` stands for (the bytes `HostileImageCheck` is given) to `path`.
func writeImage(of input: String, to path: String) throws {
    let image = FuzzInput.image(from: [UInt8](try Data(contentsOf: URL(fileURLWithPath: input))))
    try Data(image.bytes).write(to: URL(fileURLWithPath: path))
    print("\(path): \(image.length) bytes")
}

let arguments = CommandLine.arguments
if arguments.count == 3 && arguments[1] == "--write-seeds" {
    try writeSeeds(to: arguments[2])
    exit(0)
}
if arguments.count == 4 && arguments[1] == "--write-image" {
    try writeImage(of: arguments[2], to: arguments[3])
    exit(0)
}

#if OFFLOADFS_LIBFUZZER
// SwiftPM renames an executable's main and defines `main` as that symbol, so libFuzzer's
// own main is not linked: hand the entry point to libFuzzer's driver from here.
@_silgen_name("LLVMFuzzerRunDriver")
func runLibFuzzer(_ argc: UnsafeMutablePointer<Int32>,
                  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                  _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(runLibFuzzer(&argc, &argv, testOneInput))
#else
guard arguments.count > 1 else {
    print("usage: offloadfs-fuzz FILE_OR_DIRECTORY... | --write-seeds DIRECTORY | --write-image INPUT IMAGE")
    print("(scripts/fuzz builds this with libFuzzer and runs it)")
    exit(2)
}
try replay(Array(arguments.dropFirst()))
#endif
