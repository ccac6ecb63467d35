import XCTest

/// Runs each named case of `PosixCases` in its own directory of a fresh mount.
final class PosixCaseTests: MountedTestCase {
    private func run(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let posixCase = PosixCases.all.first(where: { $0.name == name }) else {
            return XCTFail("no POSIX case named \(name)", file: file, line: line)
        }
        let directory = mountPoint + "/" + name
        XCTAssertEqual(mkdir(directory, 0o755), 0, "mkdir \(directory)", file: file, line: line)
        do {
            try posixCase.run(directory)
        } catch {
            XCTFail("\(name): \(error)", file: file, line: line)
        }
    }

    func testAppendWrite() throws { try run("AppendWrite") }
    func testTruncateOpenFile() throws { try run("TruncateOpenFile") }
    func testFstatDeleted() throws { try run("FstatDeleted") }
    func testUnlinkedStillWritable() throws { try run("UnlinkedStillWritable") }
    func testRenameOverOpenFile() throws { try run("RenameOverOpenFile") }
    func testExclusiveCreate() throws { try run("ExclusiveCreate") }
    func testOpenTruncate() throws { try run("OpenTruncate") }
    func testWriteBeyond4GiB() throws { try run("WriteBeyond4GiB") }
    func testReaddirWhileRemoving() throws { try run("ReaddirWhileRemoving") }
    func testParallelCreateInOneDirectory() throws { try run("ParallelCreateInOneDirectory") }
    func testSeekDataAndHole() throws { try run("SeekDataAndHole") }
    func testMmapSharedWrite() throws { try run("MmapSharedWrite") }
    func testUtimensNowAndOmit() throws { try run("UtimensNowAndOmit") }
    func testDirectoryErrors() throws { try run("DirectoryErrors") }
    func testNameTooLong() throws { try run("NameTooLong") }
    func testXattrFlagsAndErrors() throws { try run("XattrFlagsAndErrors") }
    func testLinkCountsAndInodes() throws { try run("LinkCountsAndInodes") }
    func testCopyFileRangeThenDiverge() throws { try run("CopyFileRangeThenDiverge") }
    func testFallocateModes() throws { try run("FallocateModes") }

    /// The cases that have a method above; keep in step with them.
    static let casesWithMethods = [
        "AppendWrite", "TruncateOpenFile", "FstatDeleted", "UnlinkedStillWritable", "RenameOverOpenFile",
        "ExclusiveCreate", "OpenTruncate", "WriteBeyond4GiB", "ReaddirWhileRemoving",
        "ParallelCreateInOneDirectory", "SeekDataAndHole", "MmapSharedWrite", "UtimensNowAndOmit",
        "DirectoryErrors", "NameTooLong", "XattrFlagsAndErrors", "LinkCountsAndInodes",
        "CopyFileRangeThenDiverge", "FallocateModes",
    ]
}

/// A case added to `PosixCases.all` without a test method would never run.
final class PosixCaseListTests: XCTestCase {
    func testEveryCaseHasATestMethod() {
        XCTAssertEqual(PosixCases.all.map(\.name), PosixCaseTests.casesWithMethods)
        XCTAssertEqual(Set(PosixCases.all.map(\.name)).count, PosixCases.all.count, "case names are unique")
    }
}
