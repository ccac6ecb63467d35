import Foundation

/// The image format the mount tests run on: format 1, or format 2 when
/// `OFFLOADFS_TEST_FORMAT=2` (scripts/test runs the mount suites a second time so; the
/// daemon reads the same variable and makes its new images in that format, and upgrades
/// format 1 images to it). What differs between the formats, for the tests that check it.
enum MountTestFormat {
    static var number: Int { ProcessInfo.processInfo.environment["OFFLOADFS_TEST_FORMAT"] == "2" ? 2 : 1 }
    static var isTwo: Bool { number == 2 }
    /// A phase the first mount of a new image goes through.
    static var newImagePhase: String { isTwo ? "making a format 2 image" : "writing a checkpoint" }
    /// The unmount's last phase, and the log line that ends it.
    static var finalPhase: String { isTwo ? "writing the final commit" : "writing the final checkpoint" }
    static var finalLogLine: String { isTwo ? "final commit written" : "final checkpoint written" }
}
