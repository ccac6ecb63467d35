import Foundation
import XCTest

/// Paths in the package checkout, found from this source file's location
/// (Tests/MountTests/PersistenceSupport.swift -> the package root).
enum PackageLayout {
    static let root: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// scripts/crash-workload: the journaled random workload and its checker.
    static var crashWorkload: String { root + "/scripts/crash-workload" }
}

/// Runs the offloadfs binary directly (no shell).
func runOffloadfs(_ arguments: [String]) throws -> ShellResult {
    guard let binary = DaemonBinary.path else {
        throw MountTestError("the offloadfs binary was not found next to the test bundle")
    }
    return try Shell.runProgram(binary, arguments)
}

/// The lines only in `expected` ("- ") and only in `actual` ("+ "), for failure messages.
func lineDiff(_ expected: String, _ actual: String) -> String {
    let old = expected.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let new = actual.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let oldSet = Set(old), newSet = Set(new)
    let removed = old.filter { !newSet.contains($0) }.map { "- " + $0 }
    let added = new.filter { !oldSet.contains($0) }.map { "+ " + $0 }
    let lines = removed + added
    if lines.isEmpty { return "(same lines, different order or repetition)" }
    return (lines.prefix(80) + (lines.count > 80 ? ["... \(lines.count - 80) more"] : [])).joined(separator: "\n")
}

/// A deterministic fraction in [0, 1) for `seed` (one SplitMix64 step).
func seededFraction(_ seed: UInt64) -> Double {
    var z = seed &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return Double(z >> 11) / Double(UInt64(1) << 53)
}

/// Everything about a tree that must survive an unmount or a crash, as text.
///
/// - listing: every entry with type, mode, numeric owner and group, link count, atime
///   (not for directories: whether readdir touches it is the filesystem's business),
///   mtime with nanoseconds, size (not for directories) and symlink target;
/// - hashes: sha256sum of every regular file;
/// - xattrs: `getfattr -d -m - -e hex` of every entry (symlinks themselves), in sorted order;
/// - devices: major/minor of device nodes.
/// Not compared: ctime (every chmod/chown moves it) and inode numbers (the tests check hard
/// links by comparing inode numbers within one mount instead).
struct TreeState: Equatable {
    var listing: String
    var hashes: String
    var xattrs: String
    var devices: String

    static let listingScript = """
        find . \\( -type d -printf '%p %y %m %U %G %n - %T@\\n' \\) \
               -o -printf '%p %y %m %U %G %n %A@ %T@ %s %l\\n' | LC_ALL=C sort
        """
    static let hashScript = "find . -type f -print0 | xargs -0 -r sha256sum | LC_ALL=C sort -k2"
    static let xattrScript = """
        find . | LC_ALL=C sort | while IFS= read -r p; do getfattr -h -d -m - -e hex "$p" || exit 1; done
        """
    static let deviceScript = "find . \\( -type c -o -type b \\) -printf '%p ' -exec stat -c '%t %T' {} \\; | LC_ALL=C sort"

    /// Captures the tree under `directory` (through /bin/sh, as a person would).
    static func capture(in directory: String) throws -> TreeState {
        func run(_ script: String) throws -> String {
            let result = try Shell.run(script, in: directory, environment: ["LC_ALL": "C"])
            guard result.succeeded else { throw MountTestError("capture failed: \(script)\n\(result.transcript)") }
            return result.output
        }
        return TreeState(listing: try run(listingScript), hashes: try run(hashScript),
                         xattrs: try run(xattrScript), devices: try run(deviceScript))
    }

    /// Fails with a line diff for each part that differs.
    static func assertSame(_ expected: TreeState, _ actual: TreeState, _ context: String,
                           file: StaticString = #filePath, line: UInt = #line) {
        let parts: [(String, String, String)] = [
            ("stat listing", expected.listing, actual.listing), ("sha256sums", expected.hashes, actual.hashes),
            ("xattrs", expected.xattrs, actual.xattrs), ("device numbers", expected.devices, actual.devices),
        ]
        for (name, old, new) in parts where old != new {
            XCTFail("\(context): the \(name) differ (- before, + after):\n\(lineDiff(old, new))", file: file, line: line)
        }
    }
}
