// swift-tools-version:6.0
// offloadfs: a FUSE filesystem whose file contents live in one mmap-backed image.
//
// Import direction (never reversed):
//   offloadfs (CLI) -> FuseBridge -> OffloadNamespace -> OffloadCore
//                      FuseBridge -> CFuse (libfuse3)
// OffloadCore and OffloadNamespace never import CFuse, so they build and test without FUSE.
import PackageDescription

// The commit `offloadfs --version` names. scripts/test, scripts/install (and so CI) set
// OFFLOADFS_GIT_COMMIT from `git rev-parse` (see scripts/lib.sh); a packager building
// outside git may set it by hand. It is read here rather than from Context.gitInformation
// because SwiftPM caches the evaluated manifest without the git state, so a new commit
// would keep the old one, whereas the environment is part of the cache key. Only
// [0-9A-Za-z.-] pass, since the value becomes a C string literal. Unset: "unknown".
let buildCommit = Context.environment["OFFLOADFS_GIT_COMMIT"].flatMap { commit in
    commit.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") } ? commit : nil
} ?? ""

// The request path's modules skip Swift's dynamic exclusivity checks in release builds:
// each access to a class's stored property called into the runtime (about 90 instructions),
// a tenth of the instructions a metadata request spends (docs/ARCHITECTURE.md, "Exclusivity
// checks off in release builds"). Debug builds keep them, and every test (scripts/test)
// and the ThreadSanitizer run use debug builds, so a violation in code they run still
// traps in CI; the fuzzer and the crash soak run release builds, without the checks. The
// compile-time exclusivity checks are unchanged.
let requestPathSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "offloadfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "offloadfs", targets: ["offloadfs"]),
        .executable(name: "offloadfs-bench", targets: ["OffloadBench"]),
        .executable(name: "offloadfs-fuzz", targets: ["OffloadFuzz"]),
        .executable(name: "offloadfs-genimage", targets: ["OffloadGenImage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CFuse",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        // fallocate and friends, which Glibc's Swift module does not export; the build's commit.
        .target(name: "CLinuxShims", cSettings: [.define("OFFLOADFS_GIT_COMMIT", to: "\"\(buildCommit)\"")]),
        .target(name: "OffloadCore", dependencies: ["CLinuxShims"], swiftSettings: requestPathSettings),
        .target(name: "OffloadNamespace", dependencies: ["OffloadCore", "CLinuxShims"], swiftSettings: requestPathSettings),
        .target(
            name: "FuseBridge",
            dependencies: [
                "CFuse", "OffloadNamespace", "OffloadCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: requestPathSettings
        ),
        .executableTarget(
            name: "offloadfs",
            dependencies: [
                "FuseBridge", "OffloadNamespace", "OffloadCore", "CLinuxShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // A deterministic generator for replayable randomized tests and the benchmark.
        .target(name: "SplitMix"),
        // Storage backends for tests, never in the daemon: a power-cut simulator and
        // fault injection behind OffloadCore's ImageStorage seam.
        .target(name: "OffloadSimulation", dependencies: ["OffloadCore", "SplitMix"]),
        .executableTarget(name: "OffloadBench", dependencies: ["OffloadCore", "OffloadNamespace", "OffloadImageGenerator", "SplitMix"]),
        // Hostile images: the fuzzer's input format and the properties every image must
        // keep (shared by the libFuzzer executable and the tests).
        .target(name: "OffloadFuzzing", dependencies: ["OffloadNamespace", "OffloadCore", "OffloadSimulation", "SplitMix"]),
        // libFuzzer over the decoders and the whole open path (scripts/fuzz builds it with
        // -sanitize=fuzzer in .build-fuzz); in a normal build it replays inputs.
        .executableTarget(name: "OffloadFuzz", dependencies: ["OffloadFuzzing"]),
        // Images of many files made in-process through the namespace's operations, for
        // scripts/bench-scale: the layout and generator (shared with their test), and the tool.
        .target(name: "OffloadImageGenerator", dependencies: ["OffloadNamespace", "OffloadCore"]),
        .executableTarget(
            name: "OffloadGenImage",
            dependencies: [
                "OffloadImageGenerator", "OffloadCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "OffloadCoreTests", dependencies: ["OffloadCore", "SplitMix", "OffloadSimulation"]),
        .testTarget(name: "OffloadNamespaceTests", dependencies: ["OffloadNamespace", "OffloadCore", "SplitMix", "OffloadSimulation", "OffloadFuzzing", "OffloadImageGenerator"]),
        // OffloadFuzzing and OffloadSimulation: images no mount makes (one repaired into having
        // no room for a commit), built in-process for the mounts that serve them.
        .testTarget(name: "MountTests", dependencies: ["OffloadCore", "FuseBridge", "OffloadFuzzing", "OffloadSimulation"]),
    ],
    swiftLanguageModes: [.v6]
)
