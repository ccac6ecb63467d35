import CLinuxShims
import FuseBridge

/// What `offloadfs --version` prints: the product version and the commit of the build,
/// so two builds of one version can be told apart (`offloadfs 0.2.0 (commit 1a2b3c4d5e6f)`,
/// `-modified` when the tree had uncommitted changes, `commit unknown` for a build that
/// was not given one: see Package.swift).
enum BuildVersion {
    static var commit: String? {
        let commit = String(cString: offloadfs_build_commit())
        return commit.isEmpty ? nil : commit
    }

    static var line: String { "offloadfs \(ProductVersion.string) (commit \(commit ?? "unknown"))" }
}
