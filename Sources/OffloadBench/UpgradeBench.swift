import Foundation
import OffloadCore
import OffloadImageGenerator

/// `offloadfs-bench --upgrade [--upgrade-sizes 10000,1000000]`: the version 1 upgrade and
/// format 2's fsck check at scale. For each size a format 1 image of that many files (the
/// `GeneratedLayout` of scripts/bench-scale, made through format 1's namespace as
/// offloadfs-genimage makes it) is recovered read-only (format 1's replay and analysis,
/// what its mount does first), upgraded in place (`TreeVolume.upgrade`), and checked
/// (`VolumeCheck`); the process's anonymous memory is read after each step.
func runUpgradeBenchmark(sizes: [Int]) throws {
    let (root, directory) = try diskBenchDirectory("upgrade")
    defer { try? FileManager.default.removeItem(at: directory) }
    print("## The version 1 upgrade and format 2's check at scale (release build, images in \(root))\n")
    print("| files | format 1 image made (s) | format 1 recovery (s) | upgrade (s) | RssAnon after the recovery (MiB) | after the upgrade (MiB) | check (s) | RssAnon added by the check (MiB) | check clean |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for files in sizes {
        let path = directory.appendingPathComponent("upgrade\(files)").path
        defer { unlink(path) }
        let layout = GeneratedLayout(files: files, filesPerDirectory: 1000)
        var started = now()
        _ = try ImageGenerator.generate(path: path, layout: layout, capacity: .set(FormatTwoImage.defaultCapacity(files: files)),
                                        maintenanceInterval: 0)
        let made = seconds(since: started)
        let (recovered, upgraded, recoverySeconds, upgradeSeconds) = try upgradeOnce(path)
        started = now()
        let before = residentAnonymousBytes()
        let report = try VolumeCheck.run(try FileImageStorage(path: path, readOnly: true))
        let checkSeconds = seconds(since: started)
        let added = residentAnonymousBytes() - min(before, residentAnonymousBytes())
        print("| \(files) | \(String(format: "%.2f", made)) | \(String(format: "%.2f", recoverySeconds)) | \(String(format: "%.2f", upgradeSeconds)) | \(mebibytes(recovered)) | \(mebibytes(upgraded)) | \(String(format: "%.2f", checkSeconds)) | \(mebibytes(added)) | \(report.isClean ? "yes" : "no: \(report.problems.first ?? "")") |")
    }
}

/// Recovers and upgrades the format 1 image at `path`; the memory after each step, and
/// each step's seconds. Everything the upgrade held is gone when this returns.
private func upgradeOnce(_ path: String) throws -> (UInt64, UInt64, Double, Double) {
    let storage = try FileImageStorage(path: path)
    var started = now()
    guard case .image(let superblock, _) = try ImageIdentity.read(storage) else {
        throw FSError.invalidArgument("\(path) is not a format 1 image")
    }
    let read = { (offset: UInt64, count: Int) in storage.readBytes(at: offset, count: count) }
    let replay = try ImageReplay.load(superblock: superblock, fileBytes: storage.length, read: read)
    let analysis = ImageAnalysis(replay, fileBytes: storage.length)
    let previous = ImageReplay.previousCommitSegments(of: superblock, fileBytes: storage.length, read: read)
    let recoverySeconds = seconds(since: started)
    let recovered = residentAnonymousBytes()
    started = now()
    let volume = try TreeVolume.upgrade(storage, from: replay, analysis: analysis, previousSegments: previous,
                                        nameHashKey: SipHash24(key0: 1, key1: 2))
    let upgradeSeconds = seconds(since: started)
    let upgraded = residentAnonymousBytes()
    try volume.sync()
    return (recovered, upgraded, recoverySeconds, upgradeSeconds)
}

private func seconds(since start: UInt64) -> Double { Double(now() - start) / 1e9 }
private func mebibytes(_ bytes: UInt64) -> String { String(format: "%.0f", Double(bytes) / 1048576) }
