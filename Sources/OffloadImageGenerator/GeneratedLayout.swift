/// Which files a generated image holds, where, and with which bytes: the contract between
/// `ImageGenerator`, the test that reopens its images, and `scripts/bench-scale`, which
/// picks existing paths by the same rule (keep the three in step).
///
/// Files are numbered 0, 1, 2, ... Files 0..<`files` are spread over directories of
/// `filesPerDirectory` at the root: file i is `d%06d/f%08d` with directory number
/// i / filesPerDirectory. Then files `files`..<`files + singleDirectoryFiles` all sit in
/// one directory, `single/f%08d`. Every tenth file (i % 10 == 0) holds the first
/// i % 101 bytes of 0, 1, 2, ..., 100, as `scripts/bench-mount-time` writes them; the
/// others are empty.
public struct GeneratedLayout: Sendable, Equatable {
    public var files: Int
    public var filesPerDirectory: Int
    public var singleDirectoryFiles: Int

    public static let singleDirectoryName = "single"

    public init(files: Int, filesPerDirectory: Int = 1000, singleDirectoryFiles: Int = 0) {
        precondition(files >= 0 && singleDirectoryFiles >= 0, "negative file count")
        precondition(filesPerDirectory > 0, "a directory must hold at least one file")
        self.files = files
        self.filesPerDirectory = filesPerDirectory
        self.singleDirectoryFiles = singleDirectoryFiles
    }

    public var totalFiles: Int { files + singleDirectoryFiles }

    /// Directories in the spread part (the last one may hold fewer files).
    public var spreadDirectories: Int { (files + filesPerDirectory - 1) / filesPerDirectory }

    /// Every directory the layout makes, the single one included.
    public var totalDirectories: Int { spreadDirectories + (singleDirectoryFiles > 0 ? 1 : 0) }

    public static func spreadDirectoryName(_ number: Int) -> String { "d" + zeroPadded(number, width: 6) }

    public static func fileName(_ index: Int) -> String { "f" + zeroPadded(index, width: 8) }

    /// The directory (below the root) and the name of file `index`.
    public func location(ofFile index: Int) -> (directory: String, name: String) {
        precondition(index >= 0 && index < totalFiles, "file \(index) is not in the layout")
        let directory = index < files ? Self.spreadDirectoryName(index / filesPerDirectory) : Self.singleDirectoryName
        return (directory, Self.fileName(index))
    }

    /// The path of file `index` relative to the root, e.g. "d000012/f00012345".
    public func path(ofFile index: Int) -> String {
        let (directory, name) = location(ofFile: index)
        return directory + "/" + name
    }

    public static func contents(ofFile index: Int) -> [UInt8] {
        guard index % 10 == 0 else { return [] }
        return (0..<UInt8(index % 101)).map { $0 }
    }

    private static func zeroPadded(_ number: Int, width: Int) -> String {
        let digits = String(number)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
