import Foundation
@testable import OffloadCore

/// What a volume's committed tree says a file holds, for the format 2 tests: its bytes
/// (image extents read from the storage), and the block references its extents take.
struct VolumeFileContents {
    /// Block references of every file read so far (one per image extent per block).
    var references: [UInt64: UInt32] = [:]

    /// File `inode`'s `size` bytes; `nil` when an extent reaches past the size.
    mutating func bytes(of inode: UInt64, size: Int, in volume: TreeVolume) throws -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: size)
        for (offset, extent) in try volume.filesystem.extents(inode, overlapping: 0..<UInt64.max) {
            guard offset + extent.length <= UInt64(size) else { return nil }
            switch extent {
            case .image(let image, let length):
                try bytes.withUnsafeMutableBytes { raw in
                    _ = try volume.storage.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset + length)]), at: image)
                }
                for block in ExtentReferenceChanges.blocks(offset: image, length: length) { references[block, default: 0] += 1 }
            case .fill(let byte, let length):
                bytes.replaceSubrange(Int(offset)..<Int(offset + length), with: repeatElement(byte, count: Int(length)))
            case .inline(let inline):
                bytes.replaceSubrange(Int(offset)..<Int(offset) + inline.count, with: inline)
            }
        }
        return bytes
    }

    /// Where the block tree's data runs differ from the references counted (nil: nowhere).
    func dataRunMismatch(in volume: TreeVolume) throws -> String? {
        var counted: [UInt64: UInt32] = [:]
        for run in try volume.space.blockTree.allRuns() where run.use == .data {
            for block in run.blocks { counted[block] = run.count }
        }
        guard counted != references else { return nil }
        let differing = Set(counted.keys).union(references.keys).filter { counted[$0] != references[$0] }.sorted().prefix(5)
        return "data references differ from the extents' at blocks \(differing.map { "\($0): \(counted[$0] ?? 0) vs \(references[$0] ?? 0)" })"
    }
}
