import Foundation
import XCTest

/// Damaged and foreign images, against the contract of the persistent image:
///
/// - `offloadfs fsck IMG` always ends by itself within 30 s with status 0 (clean),
///   1 (problems found) or 2 (could not check), never by a signal, and never writes IMG.
/// - `offloadfs mount` either mounts (then every file reads, `ls -lR` works, the daemon
///   stays alive and unmounts cleanly, and the image it leaves checks clean) or exits
///   non-zero with one line on stderr; a refused damaged image names the damage and
///   suggests `offloadfs fsck --repair` (unless it no longer looks like an image at all).
///   A clean check means the image mounts.
/// - `offloadfs fsck --repair IMG` either leaves the image as an image that checks clean
///   (status 0) and mounts, or (status 2: it cannot tell the file is an image) does not
///   write it at all.
/// - A foreign file (PNG, ext4, random bytes, zeros) is refused with "not an offloadfs
///   image" by mount, and neither mount nor fsck changes one byte or its mtime.
/// - An empty file is a new image: it mounts as an empty filesystem.
///
/// The damage is made on copies of one image built once per run (a small tree with
/// directories, files from 0 bytes to 3 MiB, a sparse file, xattrs, symlinks, a hard link,
/// a FIFO), at points drawn from seeded generators: each case prints its name, seed and
/// outcome. `OFFLOADFS_DAMAGE_SEED=N` changes the base seed (default 1) to explore more.
/// Damage is placed by what the bytes are, never by offsets of the format: blocks 0 and 1
/// are the two superblocks; blocks that are neither zero nor a copy of a file's 4 KiB block
/// are "metadata-like" (checkpoint, journal, small inline data) and get cases of their own.
final class DamagedImageTests: XCTestCase {
    /// The pristine image and what it holds, built once for the whole class.
    struct BaseImage {
        var directory: String
        var path: String
        var bytes: [UInt8]
        /// `find`/`sha256sum`/`getfattr` listing of the tree, to compare after a remount.
        var manifest: String
        /// Indexes (>= 2) of blocks that are not zero and not a copy of any file's data block.
        var metadataBlocks: [Int]
    }

    nonisolated(unsafe) private static var base: Result<BaseImage, any Error>?
    static let blockSize = 4096
    static let baseSeed: UInt64 = ProcessInfo.processInfo.environment["OFFLOADFS_DAMAGE_SEED"].flatMap { UInt64($0) } ?? 1
    static let mountArguments = ["--size", "256M"]

    private var caseDirectory: String!
    private var caseNumber = 0
    private var unpinFormat: (() -> Void)?

    override func setUpWithError() throws {
        try super.setUpWithError()
        try requireMountPrerequisites()
        // Format 1's bytes are damaged here: its daemons make and keep format 1 images
        // (format 2's damage is FormatTwoFsckTests').
        unpinFormat = MountTestFormat.pinFormatOne()
        caseDirectory = try makeTemporaryDirectory()
    }

    override func tearDown() {
        if let caseDirectory {
            // Any mount a failed case left behind goes before its directory does.
            if let entries = try? FileManager.default.contentsOfDirectory(atPath: caseDirectory) {
                for entry in entries where MountTable.isMounted(caseDirectory + "/" + entry) {
                    DaemonUnderTest.forceUnmount(caseDirectory + "/" + entry)
                }
            }
            try? FileManager.default.removeItem(atPath: caseDirectory)
        }
        unpinFormat?()
        unpinFormat = nil
        super.tearDown()
    }

    override class func tearDown() {
        if case .success(let image)? = base { try? FileManager.default.removeItem(atPath: image.directory) }
        base = nil
        super.tearDown()
    }

    // MARK: The cases

    func testUndamagedImageChecksCleanAndKeepsItsTree() throws {
        let image = try baseImage()
        let copy = try place(image.bytes, name: "undamaged")
        let before = try FileSnapshot(copy)
        let check = try BoundedRun.offloadfs(["fsck", copy], timeout: 30)
        XCTAssertEqual(check.ending, .exited(0), "fsck of a cleanly unmounted image: \(check.transcript)")
        XCTAssertEqual(try FileSnapshot(copy), before, "fsck must not write the image")

        let info = try BoundedRun.offloadfs(["info", copy], timeout: 30)
        XCTAssertEqual(info.ending, .exited(0), info.transcript)
        let lines = info.output.split(separator: "\n")
        XCTAssertFalse(lines.isEmpty, "info prints key: value lines: \(info.transcript)")
        for line in lines {
            XCTAssertNotNil(line.range(of: #"^[^:\s][^:]*: \S"#, options: .regularExpression),
                            "info line is not 'key: value': '\(line)'")
        }
        XCTAssertEqual(try FileSnapshot(copy), before, "info must not write the image")
        print("[damage] info of the undamaged image:\n\(info.output)")

        let mountPoint = try makeMountPoint("undamaged")
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: copy, logPath: caseDirectory + "/undamaged.log")
        guard case .mounted = try daemon.start(arguments: Self.mountArguments) else {
            return XCTFail("the undamaged image must mount: \(daemon.log)")
        }
        let manifest = try BoundedRun.shell(Self.manifestScript, in: mountPoint, timeout: 60)
        XCTAssertTrue(manifest.succeeded, manifest.transcript)
        XCTAssertEqual(manifest.output, image.manifest, "the tree (names, modes, owners, sizes, sha256, xattrs) "
                       + "must come back after unmount and mount")
        for problem in daemon.stop() { XCTFail(problem) }
    }

    func testTruncatedImages() throws {
        let image = try baseImage()
        let size = image.bytes.count, block = Self.blockSize
        XCTAssertGreaterThan(size, 4 * block, "the base image is larger than its superblocks")
        var cases: [(String, Int)] = []
        cases.append(("inside block 0's header", 1 + draw(seed: 1, below: 63)))
        cases.append(("inside block 0", 64 + draw(seed: 2, below: block - 64)))
        cases.append(("after block 0", block))
        cases.append(("inside block 1", block + 1 + draw(seed: 3, below: block - 1)))
        cases.append(("just past the superblocks", 2 * block))
        cases.append(("a little past the superblocks", 2 * block + 1 + draw(seed: 4, below: block - 1)))
        for seed in UInt64(5)...7 {
            let point = 2 * block + 1 + draw(seed: seed, below: size - 2 * block - 1)
            cases.append(("at a random point (seed \(seed))", point))
        }
        for (index, seed) in (UInt64(8)...9).enumerated() where !image.metadataBlocks.isEmpty {
            let metadata = image.metadataBlocks[draw(seed: seed, below: image.metadataBlocks.count)]
            let point = metadata * block + (index == 0 ? 0 : 1 + draw(seed: seed + 100, below: block - 1))
            cases.append(("inside metadata block \(metadata) (seed \(seed))", point))
        }
        for (name, length) in cases {
            try examine("truncated \(name) to \(length) of \(size) bytes", kind: .damaged,
                        file: place(Array(image.bytes[0..<length]), name: "truncated"))
        }
    }

    func testBitFlipsInTheSuperblocks() throws {
        let image = try baseImage()
        let block = Self.blockSize
        let used0 = usedLength(image.bytes, block: 0), used1 = usedLength(image.bytes, block: 1)
        // (name, seed, ranges to flip bits in, flips per range)
        let cases: [(String, UInt64, [Range<Int>])] = [
            ("in block 0's used bytes", 11, [0..<used0]),
            ("in block 0's used bytes", 12, [0..<used0]),
            ("anywhere in block 0", 13, [0..<block]),
            ("in block 1's used bytes", 14, [block..<block + used1]),
            ("anywhere in block 1", 15, [block..<2 * block]),
            ("in both superblocks' used bytes", 16, [0..<used0, block..<block + used1]),
            ("in both superblocks' used bytes", 17, [0..<used0, block..<block + used1]),
            ("anywhere in both superblocks", 18, [0..<block, block..<2 * block]),
        ]
        for (name, seed, ranges) in cases {
            var bytes = image.bytes, generator = seeded(seed)
            let flips = ranges.map { flipBits(&bytes, count: 3, in: $0, using: &generator) }
            try examine("3 bit flips \(name) (seed \(seed)) at \(flips)", kind: .damaged,
                        file: place(bytes, name: "flipped"))
        }
    }

    func testBitFlipsAfterTheSuperblocks() throws {
        let image = try baseImage()
        let block = Self.blockSize, size = image.bytes.count
        for seed in UInt64(21)...22 {
            var bytes = image.bytes, generator = seeded(seed)
            let flips = flipBits(&bytes, count: 16, in: 2 * block..<size, using: &generator)
            try examine("16 bit flips anywhere after the superblocks (seed \(seed)) at \(flips)", kind: .damaged,
                        file: place(bytes, name: "flipped"))
        }
        guard !image.metadataBlocks.isEmpty else {
            return print("[damage] no metadata-like blocks in the image: metadata bit-flip cases skipped")
        }
        for seed in UInt64(23)...25 {
            var bytes = image.bytes, generator = seeded(seed)
            let metadata = image.metadataBlocks[Int.random(in: 0..<image.metadataBlocks.count, using: &generator)]
            let used = max(1, usedLength(bytes, block: metadata))
            let flips = flipBits(&bytes, count: 2, in: metadata * block..<metadata * block + used, using: &generator)
            try examine("2 bit flips in metadata block \(metadata) (seed \(seed)) at \(flips)", kind: .damaged,
                        file: place(bytes, name: "flipped"))
        }
        // One flip in every metadata-like block at once.
        var bytes = image.bytes, generator = seeded(26)
        for metadata in image.metadataBlocks {
            let used = max(1, usedLength(bytes, block: metadata))
            _ = flipBits(&bytes, count: 1, in: metadata * block..<metadata * block + used, using: &generator)
        }
        try examine("1 bit flip in each of the \(image.metadataBlocks.count) metadata blocks (seed 26)",
                    kind: .damaged, file: place(bytes, name: "flipped"))
    }

    func testZeroedRegions() throws {
        let image = try baseImage()
        let block = Self.blockSize, size = image.bytes.count, blocks = size / block
        var cases: [(String, Range<Int>)] = [
            ("block 0", 0..<block),
            ("block 1", block..<2 * block),
        ]
        for seed in UInt64(31)...32 {
            let start = draw(seed: seed, below: blocks) * block
            cases.append(("a 4 KiB block (seed \(seed))", start..<min(size, start + block)))
        }
        for seed in UInt64(33)...34 {
            let start = draw(seed: seed, below: size)
            cases.append(("a 64 KiB region (seed \(seed))", start..<min(size, start + 65536)))
        }
        for seed in UInt64(35)...36 where !image.metadataBlocks.isEmpty {
            let metadata = image.metadataBlocks[draw(seed: seed, below: image.metadataBlocks.count)]
            cases.append(("metadata block \(metadata) (seed \(seed))", metadata * block..<(metadata + 1) * block))
        }
        for (name, range) in cases {
            var bytes = image.bytes
            bytes.replaceSubrange(range, with: repeatElement(0, count: range.count))
            try examine("zeroed \(name) at \(range)", kind: .damaged, file: place(bytes, name: "zeroed"))
        }
    }

    func testForeignFilesAreRefusedAndNeverWritten() throws {
        try examine("foreign: a 1x1 PNG", kind: .foreign, file: place(Self.tinyPNG, name: "picture.png"))

        let ext4 = caseDirectory + "/ext4.img"
        let mkfs = try BoundedRun.shell("PATH=$PATH:/usr/sbin:/sbin; truncate -s 8M \(ext4) && mkfs.ext4 -q -F \(ext4)",
                                        timeout: 60)
        XCTAssertTrue(mkfs.succeeded, "mkfs.ext4 (e2fsprogs; scripts/test installs it): \(mkfs.transcript)")
        if mkfs.succeeded { try examine("foreign: an 8 MiB ext4 image", kind: .foreign, file: ext4) }

        var generator = seeded(41)
        let random = (0..<300_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        try examine("foreign: 300,000 random bytes", kind: .foreign, file: place(random, name: "random.bin"))
        try examine("foreign: 1 MiB of zeros", kind: .foreign,
                    file: place([UInt8](repeating: 0, count: 1 << 20), name: "zeros.bin"))
        // The magic alone, as its first bytes, with text after it: not an image either,
        // though it may be taken for one whose superblocks are damaged; never written.
        try examine("foreign: a text file starting with the magic line", kind: .lookalike,
                    file: place(Array("OFFLOADFS-IMAGE\nis what this note is about\n".utf8), name: "note.txt"))
    }

    func testEmptyFileMountsAsAnEmptyFilesystem() throws {
        let empty = try place([], name: "empty.img")
        try examine("an empty file (a new image)", kind: .empty, file: empty)
    }

    // MARK: One case

    /// damaged: a damaged copy of the base image; foreign: another kind of file; lookalike:
    /// a foreign file that starts like an image (refused either way, never written); empty:
    /// an empty file (a new image).
    enum Kind { case damaged, foreign, lookalike, empty }

    enum MountOutcome {
        case mounted(entries: Int)
        case refused(String)
    }

    /// Runs fsck, mount, and (for damaged images) repair on `file`, asserting the contract
    /// in the class comment, and prints one line with what happened.
    private func examine(_ name: String, kind: Kind, file: String,
                         sourceFile: StaticString = #filePath, line: UInt = #line) throws {
        var report: [String] = []
        defer { print("[damage] \(name): " + report.joined(separator: "; ")) }
        func fail(_ message: String) {
            XCTFail("\(name): \(message)", file: sourceFile, line: line)
            report.append("FAILED: \(message.split(separator: "\n").first.map { $0.prefix(200) } ?? "")")
        }
        let damaged = try FileSnapshot(file)

        // 1. A read-only check: ends by itself with 0, 1 or 2, and writes nothing.
        let check = try BoundedRun.offloadfs(["fsck", file], timeout: 30)
        report.append("fsck \(check.summary)")
        if !(check.status.map { (0...2).contains($0) } ?? false) {
            fail("fsck must exit 0, 1 or 2: \(check.transcript)")
        }
        if try FileSnapshot(file) != damaged { fail("fsck (without --repair) changed the file") }
        if kind == .foreign && check.status != 2 { fail("fsck of a foreign file must exit 2: \(check.transcript)") }
        if kind == .lookalike && check.status == 0 { fail("fsck called a foreign file clean: \(check.transcript)") }

        // 2. Mount it: mounted and readable, or refused with one line.
        let outcome = try mountAndRead(file, label: "first", fail: fail)
        switch outcome {
        case .mounted(let entries):
            report.append("mounted (\(entries) entries)")
            if kind == .foreign || kind == .lookalike { fail("a foreign file was mounted") }
            if kind == .empty && entries != 0 { fail("an empty file must mount as an empty filesystem, found \(entries) entries") }
            if kind == .damaged || kind == .empty {
                // What a clean unmount leaves checks clean.
                let after = try BoundedRun.offloadfs(["fsck", file], timeout: 30)
                report.append("fsck after unmount \(after.summary)")
                if after.ending != .exited(0) { fail("the image left by a clean unmount must check clean: \(after.transcript)") }
            }
        case .refused(let message):
            report.append("refused: \(message)")
            switch kind {
            case .foreign:
                if !message.contains("not an offloadfs image") { fail("a foreign file must be refused as 'not an offloadfs image'") }
            case .lookalike:
                break
            case .empty:
                fail("an empty file is a new image and must mount")
            case .damaged:
                if !message.contains("not an offloadfs image") && !message.contains("fsck --repair") {
                    fail("a damaged image must be refused with a hint at `offloadfs fsck --repair`: \(message)")
                }
            }
            if check.status == 0 { fail("fsck said the image is clean, but it did not mount") }
        }
        if kind == .foreign || kind == .lookalike, try FileSnapshot(file) != damaged {
            fail("mount changed the foreign file")
        }
        guard kind == .damaged else { return }

        // 3. Repair the damaged bytes as they were (the mount above may have changed them).
        try Data(damaged.bytes).write(to: URL(fileURLWithPath: file))
        let rewritten = try FileSnapshot(file)
        let repair = try BoundedRun.offloadfs(["fsck", "--repair", file], timeout: 30)
        report.append("repair \(repair.summary)")
        guard let repairStatus = repair.status, (0...2).contains(repairStatus) else {
            return fail("fsck --repair must exit 0, 1 or 2: \(repair.transcript)")
        }
        if repairStatus == 2 {
            if check.status != 2 { fail("fsck found an image to check, but --repair could not: \(repair.transcript)") }
            if try FileSnapshot(file) != rewritten {
                fail("fsck --repair gave up (status 2) but changed the file")
            }
            return
        }
        let recheck = try BoundedRun.offloadfs(["fsck", file], timeout: 30)
        report.append("recheck \(recheck.summary)")
        if recheck.ending != .exited(0) { fail("after fsck --repair the image must check clean: \(recheck.transcript)") }
        switch try mountAndRead(file, label: "repaired", fail: fail) {
        case .mounted(let entries): report.append("repaired image mounted (\(entries) entries)")
        case .refused(let message): fail("the repaired image must mount, refused: \(message)")
        }
    }

    /// Mounts `image` in the foreground; if it mounts, reads every file and lists the tree,
    /// checks the daemon survived, and unmounts.
    private func mountAndRead(_ image: String, label: String, fail: (String) -> Void) throws -> MountOutcome {
        caseNumber += 1
        let mountPoint = try makeMountPoint("mnt-\(caseNumber)-\(label)")
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: image,
                                     logPath: caseDirectory + "/daemon-\(caseNumber).log")
        let start: DaemonUnderTest.Start
        do {
            start = try daemon.start(arguments: Self.mountArguments)
        } catch {
            fail("\(error)")
            return .refused("(hung)")
        }
        switch start {
        case .exited(let result):
            switch result.ending {
            case .exited(let status) where status != 0:
                break
            default:
                fail("mount ended with \(result.summary) without mounting: \(result.transcript)")
            }
            let lines = result.errorLines
            if lines.count != 1 || !result.error.hasPrefix("offloadfs: ") || result.error.contains("Fatal error") {
                fail("a refused mount prints exactly one line 'offloadfs: ...': \(result.transcript)")
            }
            return .refused(lines.last.map(String.init) ?? "")
        case .mounted:
            let read = try BoundedRun.shell("find . -type f -exec cat {} + > /dev/null", in: mountPoint, timeout: 30)
            if !read.succeeded { fail("reading every file failed: \(read.transcript)") }
            let list = try BoundedRun.shell("ls -lR . > /dev/null && find . -mindepth 1 | wc -l", in: mountPoint, timeout: 30)
            if !list.succeeded { fail("ls -lR / find failed: \(list.transcript)") }
            if !daemon.isRunning { fail("the daemon died while its files were read: \(daemon.log.suffix(2000))") }
            if !MountTable.isMounted(mountPoint) { fail("the mount went away while its files were read") }
            for problem in daemon.stop() { fail(problem) }
            return .mounted(entries: Int(list.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)
        }
    }

    // MARK: The base image

    /// Names, types, modes, owners, sizes, link targets, sha256 of every file, and user xattrs.
    static let manifestScript = """
        set -e
        find . -mindepth 1 -printf '%p %y %m %U %G %n %s %l\\n' | sed 's/^\\(\\S* d [0-9]* [0-9]* [0-9]* [0-9]*\\) [0-9]*/\\1 -/' | sort
        find . -type f -exec sha256sum {} + | sort
        find . -mindepth 1 | sort | xargs -d '\\n' getfattr -h -d -m '^user\\.' 2>/dev/null | grep -v '^$' || true
        """

    private func baseImage() throws -> BaseImage {
        if Self.base == nil {
            Self.base = Result { try Self.buildBaseImage() }
        }
        return try Self.base!.get()
    }

    private static func buildBaseImage() throws -> BaseImage {
        let directory = try makeTemporaryDirectory()
        let mountPoint = directory + "/mnt", path = directory + "/base.img"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let daemon = DaemonUnderTest(mountPoint: mountPoint, image: path, logPath: directory + "/base.log")
        let fresh = mountCommandSupports("--fresh") ? ["--fresh"] : []
        guard case .mounted = try daemon.start(arguments: mountArguments + fresh) else {
            throw MountTestError("cannot mount a new image to damage: \(daemon.log)")
        }
        var problems: [String] = []
        defer { if daemon.isRunning { daemon.stop() } }
        let populate = try BoundedRun.shell("""
            set -e
            mkdir -p docs/notes src/deep/er empty-dir
            printf 'hello offloadfs\\n' > docs/readme.txt
            head -c 3000 /dev/urandom > docs/notes/small.bin
            head -c 40000 /dev/urandom > src/forty.bin
            head -c 1048576 /dev/urandom > src/deep/one-mib.bin
            head -c 3145728 /dev/urandom > src/deep/er/three-mib.bin
            : > empty-file
            truncate -s 10M sparse.bin
            dd if=/dev/urandom of=sparse.bin bs=4096 count=2 seek=1000 conv=notrunc status=none
            seq 1 20000 > src/numbers.txt
            i=0; while [ $i -lt 40 ]; do echo "note $i" > docs/notes/n$i.txt; i=$((i + 1)); done
            ln -s docs/readme.txt link-rel
            ln -s /etc/hostname link-abs
            ln src/forty.bin docs/forty-hardlink
            setfattr -n user.colour -v blue docs/readme.txt
            setfattr -n user.big -v "$(head -c 2000 /dev/zero | tr '\\0' x)" src/forty.bin
            setfattr -n user.dir -v d docs
            chmod 640 docs/notes/small.bin
            chown 1234:5678 src/numbers.txt
            mkfifo fifo
            sync
            """, in: mountPoint, timeout: 120)
        guard populate.succeeded else { throw MountTestError("populating the base image failed: \(populate.transcript)") }
        let manifest = try BoundedRun.shell(manifestScript, in: mountPoint, timeout: 60)
        guard manifest.succeeded else { throw MountTestError("listing the base image failed: \(manifest.transcript)") }
        // Every 4 KiB block of file data, as the image would hold it (the last one zero-padded).
        var dataBlocks = Set<[UInt8]>()
        let files = try BoundedRun.shell("find . -type f", in: mountPoint, timeout: 60)
        for file in files.output.split(separator: "\n") {
            guard let data = FileManager.default.contents(atPath: mountPoint + "/" + file) else { continue }
            let bytes = [UInt8](data)
            var offset = 0
            while offset < bytes.count {
                var chunk = Array(bytes[offset..<min(bytes.count, offset + blockSize)])
                chunk += repeatElement(0, count: blockSize - chunk.count)
                if chunk.contains(where: { $0 != 0 }) { dataBlocks.insert(chunk) }
                offset += blockSize
            }
        }
        problems += daemon.stop()
        guard problems.isEmpty else { throw MountTestError("unmounting the base image: \(problems)") }

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var metadataBlocks: [Int] = []
        var index = 2
        while index * blockSize < bytes.count {
            let chunk = Array(bytes[index * blockSize..<min(bytes.count, (index + 1) * blockSize)])
            let padded = chunk + repeatElement(0, count: blockSize - chunk.count)
            if padded.contains(where: { $0 != 0 }) && !dataBlocks.contains(padded) { metadataBlocks.append(index) }
            index += 1
        }
        print("[damage] base image: \(bytes.count) bytes, \(dataBlocks.count) distinct file data blocks, "
              + "metadata-like blocks \(metadataBlocks.count > 40 ? "\(metadataBlocks.prefix(40))..." : "\(metadataBlocks)"), "
              + "base seed \(baseSeed)\(fresh.isEmpty ? " (mount has no --fresh yet)" : "")")
        return BaseImage(directory: directory, path: path, bytes: bytes, manifest: manifest.output,
                         metadataBlocks: metadataBlocks)
    }

    // MARK: Helpers

    private func seeded(_ seed: UInt64) -> SeededGenerator {
        SeededGenerator(seed: Self.baseSeed &* 0x1_0000_0001 &+ seed)
    }

    /// A number in 0..<bound drawn from `seed`'s generator.
    private func draw(seed: UInt64, below bound: Int) -> Int {
        var generator = seeded(seed)
        return Int.random(in: 0..<max(1, bound), using: &generator)
    }

    /// Writes `bytes` to a fresh file in this test's directory and returns its path.
    private func place(_ bytes: [UInt8], name: String) throws -> String {
        caseNumber += 1
        let path = caseDirectory + "/\(caseNumber)-\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    private func makeMountPoint(_ name: String) throws -> String {
        let path = caseDirectory + "/" + name
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Flips `count` random bits inside `range`; returns the byte offsets.
    private func flipBits(_ bytes: inout [UInt8], count: Int, in range: Range<Int>,
                          using generator: inout SeededGenerator) -> [Int] {
        guard !range.isEmpty else { return [] }
        return (0..<count).map { _ in
            let offset = Int.random(in: range, using: &generator)
            bytes[offset] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &generator)
            return offset
        }
    }

    /// Bytes from the start of `block` up to its last non-zero byte.
    private func usedLength(_ bytes: [UInt8], block: Int) -> Int {
        let start = block * Self.blockSize
        let end = min(bytes.count, start + Self.blockSize)
        guard start < end, let last = bytes[start..<end].lastIndex(where: { $0 != 0 }) else { return 0 }
        return last - start + 1
    }

    /// A valid 1x1 transparent PNG (signature, IHDR, IDAT, IEND with their CRCs).
    static let tinyPNG: [UInt8] = [
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
        0x89, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
        0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
        0x42, 0x60, 0x82,
    ]
}

/// A file's bytes and modification time, to prove that nothing wrote it.
struct FileSnapshot: Equatable {
    var bytes: [UInt8]
    var modification: [Int]

    init(_ path: String) throws {
        bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var status = stat()
        guard stat(path, &status) == 0 else { throw MountTestError("stat \(path): \(String(cString: strerror(errno)))") }
        modification = [status.st_mtim.tv_sec, status.st_mtim.tv_nsec]
    }

}
