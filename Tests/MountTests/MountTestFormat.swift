import Foundation

/// The image format the mount tests run on: format 2, the daemon's default, or format 1
/// when `OFFLOADFS_TEST_FORMAT=1` (scripts/test runs the mount suites a second time so;
/// the daemon reads the same variable, makes its new images in that format, and then
/// leaves format 1 images format 1). What differs between the formats, for the tests that
/// check it.
enum MountTestFormat {
    static let variable = "OFFLOADFS_TEST_FORMAT"
    static var number: Int { ProcessInfo.processInfo.environment[variable] == "1" ? 1 : 2 }
    static var isTwo: Bool { number == 2 }
    /// A phase the first mount of a new image goes through.
    static var newImagePhase: String { isTwo ? "making a format 2 image" : "writing a checkpoint" }
    /// The unmount's last phase, and the log line that ends it.
    static var finalPhase: String { isTwo ? "writing the final commit" : "writing the final checkpoint" }
    static var finalLogLine: String { isTwo ? "final commit written" : "final checkpoint written" }

    /// Makes every daemon started from now on (they inherit this process's environment)
    /// make and keep format 1 images, for the tests of what only format 1 has (its
    /// checkpoint and journal bytes damaged, its final checkpoint); returns what puts the
    /// environment back. XCTest runs one test at a time, so no other test sees it.
    static func pinFormatOne() -> () -> Void {
        let previous = getenv(variable).map { String(cString: $0) }
        setenv(variable, "1", 1)
        return {
            if let previous { setenv(variable, previous, 1) } else { unsetenv(variable) }
        }
    }
}
