import Foundation

/// Where the mount tests find the `offloadfs` executable they start.
///
/// SwiftPM builds every product of the package before `swift test` runs and puts the
/// test bundle (`offloadfsPackageTests.xctest`) in the same directory as the executables
/// (`<scratch>/debug/` or `<scratch>/release/`). So the binary is found next to the running
/// test executable (/proc/self/exe), walking up a few levels for bundle layouts that nest
/// it. `OFFLOADFS_BINARY=/path/to/offloadfs` overrides the search (e.g. to test an
/// installed build).
enum DaemonBinary {
    static let path: String? = locate()

    private static func locate() -> String? {
        let fileManager = FileManager.default
        if let override = ProcessInfo.processInfo.environment["OFFLOADFS_BINARY"], !override.isEmpty {
            return fileManager.isExecutableFile(atPath: override) ? override : nil
        }
        guard let testExecutable = try? fileManager.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            return nil
        }
        var directory = URL(fileURLWithPath: testExecutable).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("offloadfs").path
            var isDirectory: ObjCBool = false
            if fileManager.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
               fileManager.isExecutableFile(atPath: candidate) {
                return candidate
            }
            directory.deleteLastPathComponent()
        }
        return nil
    }
}
