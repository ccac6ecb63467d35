import XCTest
import OffloadCore
import SplitMix
@testable import OffloadNamespace

/// Random sequences of mkdir, create, link, unlink, rmdir and rename (with every flag)
/// over a few names, checking after each step that what the namespace shows is still a
/// consistent tree: every directory reachable once, "." and ".." right, directory link
/// counts 2 + subdirectories, file link counts equal to their names, entry kinds equal
/// to inode kinds, and lookups agreeing with listings.
final class RandomOperationTests: XCTestCase {
    private let names = ["a", "b", "c", "d", "e"]

    func testRandomOperationsKeepTheTreeConsistent() throws {
        for seed: UInt64 in [1, 2, 3, 4] {
            let f = try Fixture()
            var rng = SplitMix64(seed: seed)
            for step in 0..<400 {
                let tree = try walk(f)
                let description = "seed \(seed) step \(step)"
                do {
                    try randomOperation(f, tree: tree, rng: &rng)
                } catch let error as FSError {
                    XCTAssertNotEqual(error, .staleInode, description)
                    if case .io = error { XCTFail("\(description): \(error)") }
                }
            }
            let final = try walk(f)
            XCTAssertGreaterThan(final.directories.count + final.files.count, 1, "seed \(seed) built nothing")
        }
    }

    /// The directories and the (directory, name) pairs of non-directories now present.
    struct Tree {
        var directories: [InodeNumber] = []
        var files: [(parent: InodeNumber, name: String, inode: InodeNumber)] = []
    }

    private func randomOperation(_ f: Fixture, tree: Tree, rng: inout SplitMix64) throws {
        let directory = tree.directories.randomElement(using: &rng)!
        let name = try FileName(names.randomElement(using: &rng)!)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0, 1:
            _ = try f.fs.mkdir(parent: directory, name: name, mode: 0o755, context: .user)
        case 2, 3:
            _ = try f.fs.mknod(parent: directory, name: name, mode: 0o100644, rdev: 0, context: .user)
        case 4:
            guard let file = tree.files.randomElement(using: &rng) else { return }
            _ = try f.fs.link(inode: file.inode, newParent: directory, newName: name)
        case 5:
            try f.fs.unlink(parent: directory, name: name)
        case 6:
            try f.fs.rmdir(parent: directory, name: name)
        default:
            let target = tree.directories.randomElement(using: &rng)!
            let newName = try FileName(names.randomElement(using: &rng)!)
            let flags: [RenameFlags] = [[], [], .noReplace, .exchange]
            try f.fs.rename(parent: directory, name: name, newParent: target, newName: newName,
                            flags: flags.randomElement(using: &rng)!)
        }
    }

    /// Walks the whole tree from the root, asserting every invariant on the way.
    @discardableResult
    private func walk(_ f: Fixture, file: StaticString = #filePath, line: UInt = #line) throws -> Tree {
        var tree = Tree()
        var namesPerInode: [InodeNumber: Int] = [:]
        var pending: [(directory: InodeNumber, parent: InodeNumber)] = [(.root, .root)]
        var seen = Set<InodeNumber>()
        while let (directory, parent) = pending.popLast() {
            XCTAssertTrue(seen.insert(directory).inserted, "directory \(directory) reached twice", file: file, line: line)
            tree.directories.append(directory)
            let entries = try f.list(directory, batch: 3)
            XCTAssertEqual(entries.first?.inode, directory, "\".\"", file: file, line: line)
            XCTAssertEqual(entries.dropFirst().first?.inode, parent, "\"..\"", file: file, line: line)
            let cookies = entries.map(\.nextOffset)
            XCTAssertEqual(cookies, cookies.sorted(), file: file, line: line)
            var subdirectories: UInt32 = 0
            for entry in entries.dropFirst(2) {
                let attributes = try f.fs.getattr(inode: entry.inode)
                XCTAssertEqual(attributes.kind, entry.kind, file: file, line: line)
                let name = String(decoding: entry.name, as: UTF8.self)
                XCTAssertEqual(try f.lookup(name, in: directory).inode, entry.inode, file: file, line: line)
                if entry.kind == .directory {
                    subdirectories += 1
                    pending.append((entry.inode, directory))
                } else {
                    namesPerInode[entry.inode, default: 0] += 1
                    tree.files.append((directory, name, entry.inode))
                }
            }
            XCTAssertEqual(try f.fs.getattr(inode: directory).linkCount, 2 + subdirectories,
                           "link count of directory \(directory)", file: file, line: line)
        }
        for (inode, count) in namesPerInode {
            XCTAssertEqual(try f.fs.getattr(inode: inode).linkCount, UInt32(count),
                           "link count of \(inode)", file: file, line: line)
        }
        return tree
    }
}
