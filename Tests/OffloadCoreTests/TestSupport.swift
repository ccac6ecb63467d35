import Foundation
import XCTest
@testable import OffloadCore
import SplitMix

/// A fresh image file in a temporary directory, removed when the test ends.
final class TemporaryImage {
    let directory: URL
    let path: String

    init() {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("offloadfs-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("image.bin").path
    }

    func makeStore(capacityBytes: UInt64 = 1 << 30) throws -> BackingStore {
        try BackingStore(path: path, capacityBytes: capacityBytes)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }
}

extension OffloadedFile {
    /// The whole file's bytes.
    func contents() throws -> [UInt8] { try read(at: 0, count: Int(size)) }
}

func randomBytes<G: RandomNumberGenerator>(_ count: Int, using rng: inout G) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        var word = rng.next()
        for _ in 0..<8 where i < count {
            bytes[i] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            i += 1
        }
    }
    return bytes
}

/// How much a randomized model test runs, from the environment: one seed to replay
/// (`<prefix>_SEED`), else seeds 1...N (`<prefix>_SEEDS`; 0 or less runs no seed), of
/// `<prefix>_OPS` operations.
struct ModelRun {
    let seeds: [UInt64]
    let operations: Int
    /// True when the environment changed a default (coverage floors then do not apply).
    let customized: Bool

    init(prefix: String, defaultSeeds: Int, defaultOperations: Int,
         environment: [String: String] = ProcessInfo.processInfo.environment) {
        operations = Int(environment["\(prefix)_OPS"] ?? "") ?? defaultOperations
        if let one = environment["\(prefix)_SEED"].flatMap(UInt64.init) {
            seeds = [one]
        } else {
            let count = Int(environment["\(prefix)_SEEDS"] ?? "") ?? defaultSeeds
            seeds = count > 0 ? Array(1...UInt64(count)) : []
        }
        customized = ["_SEED", "_SEEDS", "_OPS"].contains { environment[prefix + $0] != nil }
    }
}

/// A model test's seed failed: `failSeed` reported it, and the error stops the seed.
struct SeedFailure: Error {}

/// Reports a failed seed (the message, the last operations, how to replay it with the
/// environment variable `replay`) and returns the error that stops it.
func failSeed(_ seed: UInt64, _ message: String, history: [String], replay: String,
              file: StaticString = #filePath, line: UInt = #line) -> SeedFailure {
    XCTFail("seed \(seed): \(message)\nlast operations:\n" + history.suffix(12).joined(separator: "\n")
            + "\nreplay with \(replay)=\(seed)", file: file, line: line)
    return SeedFailure()
}

/// The seeds a power-cut test runs: the one in the environment variable `replay`, else
/// 1 through `count`.
func crashTestSeeds(replay: String, count: UInt64) -> [UInt64] {
    ProcessInfo.processInfo.environment[replay].flatMap(UInt64.init).map { [$0] } ?? Array(1...count)
}
